"""The contract every provider adapter of every channel must honour.

One suite, run against each adapter and its simulator (Django's email
backends and GOV.UK Notify's clients do the same), through the path
production uses: :meth:`ChannelAdapter.send_many`, and the whole sending
service (:func:`cakra.delivery.sending.deliveries_send`: claim, render, send,
note, record, fallback) with the adapter configured as the channel's only
provider. A new adapter joins by adding one :class:`Contract` to
``CONTRACTS``: how to start its simulator, which recipients make it accept,
refuse, throttle or defer, how to point the adapter at an address, and a few
broken configurations. A provider configured in ``CAKRA_PROVIDERS`` whose
backend has no contract fails :func:`test_every_configured_backend_is_under_contract`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from cakra.delivery.channels import locmem
from cakra.delivery.channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentProviderError,
    RetryableProviderError,
    SenderIdentity,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.delivery.channels.locmem import LocmemEmailAdapter
from cakra.delivery.channels.smpp import SmppSmsAdapter
from cakra.delivery.channels.sms_http import HttpSmsAdapter
from cakra.delivery.channels.whatsapp import WhatsAppCloudAdapter
from cakra.delivery.message_templates import message_templates_sync
from cakra.delivery.models import Channel, Delivery, DeliveryAttempt
from cakra.delivery.routing import provider_choose
from cakra.delivery.selectors import deliveries_get_for_send
from cakra.delivery.sending import deliveries_attempt, deliveries_claim, deliveries_send
from cakra.delivery.sweeper import deliveries_sweep_stuck
from cakra.registry.models import ContactPoint
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import SmscBehaviour, SmscSimulator
from cakra.simulators.smsgateway import SmsGateway
from cakra.simulators.smtp import MailSink
from tests.delivery.helpers import send_one
from tests.delivery.whatsapp_fake import PHONE_NUMBER_ID, TOKEN, FakeCloudApi
from tests.factories import make_notice


@dataclass(frozen=True)
class Simulator:
    """A running simulator: where it listens and how many messages it kept."""

    host: str
    port: int
    received: Callable[[], int]


@dataclass(frozen=True)
class Contract:
    adapter: type[ChannelAdapter]
    simulator: Callable[[Any], AbstractContextManager[Simulator]]  # given pytest's tmp_path
    options: Callable[[str, int, float], dict[str, Any]]  # host, port, timeout -> OPTIONS
    sender: SenderIdentity
    accepted: str
    refused: str  # the simulator refuses this recipient for good
    throttled: str  # ... answers "slow down" for it
    deferred: str  # ... refuses it for now
    broken_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> changes to valid OPTIONS
    networked: bool = True  # reached over the network: can be refused or hang


@contextmanager
def _mail_sink(tmp_path) -> Iterator[Simulator]:
    with MailSink(
        maildir=tmp_path / "contract-mail",
        dkim_private_key=str(settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]),
        dkim_selector=str(settings.CAKRA_EMAIL["DKIM_SELECTOR"]),
    ) as sink:
        yield Simulator(host="127.0.0.1", port=sink.smtp_port, received=lambda: len(sink.messages()))


@contextmanager
def _outbox(tmp_path) -> Iterator[Simulator]:
    locmem.outbox_clear()
    yield Simulator(host="", port=0, received=lambda: len(locmem.outbox))
    locmem.outbox_clear()


@contextmanager
def _cloud_api(_tmp_path) -> Iterator[Simulator]:
    # The tests' own faithful fake of Meta's messages endpoint; the magic
    # numbers answer 131026 (permanent), 130429 (throttled), 131000 (temporary).
    with FakeCloudApi() as fake:
        yield Simulator(host="127.0.0.1", port=fake.port, received=fake.received)


_SMSC_SYSTEM_ID, _SMSC_PASSWORD = "cakra", "pw-12345"


@contextmanager
def _smsc(_tmp_path) -> Iterator[Simulator]:
    # Receipts far in the future: the adapter-level tests run without a
    # database, and receipts arriving on the session would be recorded.
    behaviour = SmscBehaviour(system_id=_SMSC_SYSTEM_ID, password=_SMSC_PASSWORD, receipt_delay=3600)
    with SmscSimulator(behaviour=behaviour, http_port=None) as smsc:
        yield Simulator(host="127.0.0.1", port=smsc.smpp_port, received=smsc.store.count)


_SMS_GATEWAY_ACCOUNT = "AC" + "0123456789abcdef" * 2
_SMS_GATEWAY_TOKEN = "contract-auth-token-0123456789abcdef"


@contextmanager
def _sms_gateway(tmp_path) -> Iterator[Simulator]:
    with SmsGateway(account_sid=_SMS_GATEWAY_ACCOUNT, auth_token=_SMS_GATEWAY_TOKEN) as gateway:
        yield Simulator(host="127.0.0.1", port=gateway.port, received=gateway.received)


_LOCMEM_ANSWERS = {
    "bounce.pemilik@example.co.id": "permanent",
    "throttle.pemilik@example.co.id": "throttled",
    "tempfail.pemilik@example.co.id": "retryable",
}
SENDER = SenderIdentity(address="etle@korlantas.polri.go.id", display_name="ETLE Polda Metro Jaya")

CONTRACTS = [
    Contract(
        adapter=SmtpEmailAdapter,
        simulator=_mail_sink,
        options=lambda host, port, timeout: {"HOST": host, "PORT": port, "SECURITY": "none", "TIMEOUT": timeout},
        sender=SENDER,
        accepted="pemilik@example.co.id",
        refused="bounce.pemilik@example.co.id",
        throttled="throttle.pemilik@example.co.id",
        deferred="tempfail.pemilik@example.co.id",
        broken_options={
            "no host": {"HOST": None},
            "port not a number": {"PORT": "smtp"},
            "unknown transport security": {"SECURITY": "tls-maybe"},
            "negative timeout": {"TIMEOUT": -1},
            "dkim key not a key": {"DKIM_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"},
            "password without user": {"PASSWORD": "s3cret-value"},
        },
    ),
    Contract(
        adapter=LocmemEmailAdapter,
        simulator=_outbox,
        options=lambda _host, _port, _timeout: {"ANSWERS": _LOCMEM_ANSWERS},
        sender=SENDER,
        accepted="pemilik@example.co.id",
        refused="bounce.pemilik@example.co.id",
        throttled="throttle.pemilik@example.co.id",
        deferred="tempfail.pemilik@example.co.id",
        broken_options={"answers not a mapping": {"ANSWERS": ["permanent"]}, "unknown answer": {"ANSWERS": {"a": "x"}}},
        networked=False,
    ),
    Contract(
        adapter=WhatsAppCloudAdapter,
        simulator=_cloud_api,
        options=lambda host, port, timeout: {
            "BASE_URL": f"http://{host}:{port}",
            "API_VERSION": "v21.0",
            "ACCESS_TOKEN": TOKEN,
            "TIMEOUT": timeout,
        },
        sender=SenderIdentity(address=PHONE_NUMBER_ID, display_name="ETLE Polda Metro Jaya"),
        accepted=magic_number(Magic.DELIVERED),
        refused=magic_number(Magic.PERMANENT),
        throttled=magic_number(Magic.THROTTLED),
        deferred=magic_number(Magic.TEMPORARY),
        broken_options={
            "base url not a url": {"BASE_URL": "graph.facebook.com"},
            "plain http to another host": {"BASE_URL": "http://graph.facebook.com"},
            "api version not a version": {"API_VERSION": "latest"},
            "token that could inject a header": {"ACCESS_TOKEN": "s3cret-value\r\nX-Evil: 1"},
            "negative timeout": {"TIMEOUT": -1},
        },
    ),
    Contract(
        adapter=SmppSmsAdapter,
        simulator=_smsc,
        options=lambda host, port, timeout: {
            "HOST": host,
            "PORT": port,
            "SYSTEM_ID": _SMSC_SYSTEM_ID,
            "PASSWORD": _SMSC_PASSWORD,
            "TIMEOUT": timeout,
        },
        sender=SenderIdentity(address="ETLE-PMJ"),
        accepted=magic_number(Magic.DELIVERED),
        refused=magic_number(Magic.PERMANENT),
        throttled=magic_number(Magic.THROTTLED),
        deferred=magic_number(Magic.TEMPORARY),
        broken_options={
            "no host": {"HOST": None},
            "port not a number": {"PORT": "smpp"},
            "password longer than SMPP allows": {"PASSWORD": "s3cret-value"},
            "system id empty": {"SYSTEM_ID": ""},
            "negative timeout": {"TIMEOUT": -1},
            "window of nothing": {"WINDOW": 0},
        },
    ),
    Contract(
        adapter=HttpSmsAdapter,
        simulator=_sms_gateway,
        options=lambda host, port, timeout: {
            "BASE_URL": f"http://{host}:{port}",
            "ACCOUNT_SID": _SMS_GATEWAY_ACCOUNT,
            "AUTH_TOKEN": _SMS_GATEWAY_TOKEN,
            "TIMEOUT": timeout,
        },
        sender=SenderIdentity(address="ETLE-PMJ"),
        accepted=magic_number(Magic.DELIVERED, 42),
        refused=magic_number(Magic.PERMANENT, 42),
        throttled=magic_number(Magic.THROTTLED, 42),
        deferred=magic_number(Magic.TEMPORARY, 42),
        broken_options={
            "base url not a url": {"BASE_URL": "127.0.0.1:8027"},
            "base url with credentials": {"BASE_URL": "http://user:s3cret-value@127.0.0.1:8027"},
            "account sid in a path": {"ACCOUNT_SID": "AC/../../x"},
            "empty auth token": {"AUTH_TOKEN": ""},
            "callback url not http": {"STATUS_CALLBACK_URL": "ftp://example.go.id/cb"},
            "negative timeout": {"TIMEOUT": -1},
        },
    ),
]
REFERENCE = "5f0c6f7e-2222-4b4b-8c8c-000000000042"


def _ids(contract: Contract) -> str:
    return contract.adapter.__name__


def _message(contract: Contract, recipient: str) -> OutboundMessage:
    return OutboundMessage(
        reference=REFERENCE,
        recipient=recipient,
        sender=contract.sender,
        subject="Surat Konfirmasi ETLE",
        text="Teks surat konfirmasi.\n",
        html="<p>Teks surat konfirmasi.</p>",
    )


@pytest.fixture(params=CONTRACTS, ids=_ids)
def contract(request):
    return request.param


@pytest.fixture
def simulator(contract, tmp_path):
    with contract.simulator(tmp_path) as running:
        yield running


@pytest.fixture
def adapter(contract, simulator):
    options = contract.options(simulator.host, simulator.port, 2.0)
    return contract.adapter(options=options, name=f"contract-{contract.adapter.provider}")


@pytest.fixture
def networked(contract):
    if not contract.networked:
        pytest.skip(f"{contract.adapter.__name__} is not reached over a network")


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (a hung provider)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def delivery(settings, contract, vehicle, pre_validated_key, region):
    """A notice's delivery on the contract's channel, planned as production
    plans it (the region's sender identity, the approved template)."""
    settings.CAKRA_ENABLED_CHANNELS = [contract.adapter.channel]
    if contract.adapter.channel == Channel.WHATSAPP:
        message_templates_sync(approved=True)
        region.whatsapp_phone_number_id = PHONE_NUMBER_ID
        region.save(update_fields=["whatsapp_phone_number_id"])
    key, _token = pre_validated_key
    notice = make_notice(vehicle=vehicle, api_key=key, capture_id="CAP-CONTRACT-1", camera_id="CAM-7")
    return notice.deliveries.get(channel=contract.adapter.channel)


@pytest.fixture
def as_the_only_provider(settings, contract, simulator):
    """The contract's adapter configured as the channel's one provider, as production would."""
    settings.CAKRA_PROVIDERS = {
        "contract": {
            "CHANNEL": contract.adapter.channel,
            "BACKEND": f"{contract.adapter.__module__}.{contract.adapter.__qualname__}",
            "PRIORITY": 10,
            "SENDER_IDENTITY": "contract:sender",
            "RATE_PER_SECOND": 1000,
            "BURST": 1000,
            "OPTIONS": contract.options(simulator.host, simulator.port, 2.0),
        }
    }
    return "contract"


# --- Shape -------------------------------------------------------------------------


def test_the_adapter_declares_its_channel_and_a_provider_kind_that_fit_the_records(contract):
    column = DeliveryAttempt._meta.get_field("provider").max_length or 0

    assert contract.adapter.channel in Channel.values
    assert 0 < len(contract.adapter.provider) <= column


def test_the_base_class_wrapper_cannot_be_bypassed(contract):
    # Timing, structured logs, the accepted notes and the error taxonomy live
    # in ChannelAdapter.send_many; an adapter implements _send only.
    assert contract.adapter.send_many is ChannelAdapter.send_many
    assert contract.adapter._send is not ChannelAdapter._send


def test_every_configured_backend_is_under_contract(settings):
    contracted = {f"{c.adapter.__module__}.{c.adapter.__qualname__}" for c in CONTRACTS}

    assert {entry["BACKEND"] for entry in settings.CAKRA_PROVIDERS.values()} <= contracted
    column = DeliveryAttempt._meta.get_field("provider").max_length or 0
    assert all(0 < len(name) <= column for name in settings.CAKRA_PROVIDERS)


# --- Options ------------------------------------------------------------------------


def test_valid_options_pass_their_check(contract):
    assert contract.adapter.check_options(contract.options("127.0.0.1", 2525, 5.0)) == []


def test_each_broken_configuration_is_refused_without_quoting_values(contract):
    valid = contract.options("127.0.0.1", 2525, 5.0)
    for label, changes in contract.broken_options.items():
        broken = {**valid, **changes}

        problems = contract.adapter.check_options(broken)

        assert problems, label
        assert not any("s3cret-value" in problem for problem in problems), label
        with pytest.raises(ImproperlyConfigured):
            contract.adapter(options=broken, name="broken")


def test_missing_required_options_are_named(contract):
    for key in contract.adapter.required_options:
        options = {k: v for k, v in contract.options("127.0.0.1", 2525, 5.0).items() if k != key}

        assert any(key in problem for problem in contract.adapter.check_options(options))


# --- Sending against the simulator ---------------------------------------------------


def test_an_accepted_message_returns_a_provider_reference(contract, adapter, simulator):
    reference = send_one(adapter, _message(contract, contract.accepted))

    assert isinstance(reference, str)
    assert 0 < len(reference) <= (Delivery._meta.get_field("provider_reference").max_length or 0)
    assert simulator.received() == 1


def test_a_refused_recipient_is_a_permanent_error(contract, adapter, simulator):
    with pytest.raises(PermanentProviderError) as raised:
        send_one(adapter, _message(contract, contract.refused))

    assert contract.refused not in raised.value.detail
    assert simulator.received() == 0


def test_a_rate_answer_is_throttled_with_a_retry_after(contract, adapter, simulator):
    with pytest.raises(ThrottledProviderError) as raised:
        send_one(adapter, _message(contract, contract.throttled))

    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 0
    assert contract.throttled not in raised.value.detail


def test_a_temporary_refusal_is_retryable(contract, adapter, simulator):
    with pytest.raises(RetryableProviderError) as raised:
        send_one(adapter, _message(contract, contract.deferred))

    assert type(raised.value) is RetryableProviderError
    assert contract.deferred not in raised.value.detail


def test_a_provider_that_refuses_connections_is_retryable(contract, networked, closed_port):
    adapter = contract.adapter(options=contract.options("127.0.0.1", closed_port, 2.0), name="down")

    with pytest.raises(UnavailableProviderError) as raised:  # retryable, and a batch stops there
        send_one(adapter, _message(contract, contract.accepted))

    assert raised.value.outcome == "retryable"


def test_a_provider_that_never_answers_times_out_retryably(contract, networked, silent_port):
    adapter = contract.adapter(options=contract.options("127.0.0.1", silent_port, 0.3), name="hung")

    with pytest.raises(RetryableProviderError):
        send_one(adapter, _message(contract, contract.accepted))


def test_logs_carry_the_delivery_and_provider_but_never_the_recipient(contract, adapter, simulator, caplog):
    caplog.set_level(logging.DEBUG)

    send_one(adapter, _message(contract, contract.accepted))
    with pytest.raises(PermanentProviderError):
        send_one(adapter, _message(contract, contract.refused))

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert "provider.send_batch" in logged
    assert "provider.send_failed" in logged
    assert REFERENCE in logged
    assert adapter.name in logged
    assert "duration_ms" in logged
    assert contract.accepted not in logged
    assert contract.refused not in logged


def test_each_accepted_message_is_reported_before_the_next_is_started(contract, adapter, simulator):
    noted: list[tuple[str, str, int]] = []
    messages = [
        OutboundMessage(
            reference=f"ref-{n}", recipient=contract.accepted, sender=contract.sender, subject="S", text="T"
        )
        for n in range(3)
    ]

    results = adapter.send_many(
        messages,
        on_accepted=lambda message, reference: noted.append((message.reference, reference, simulator.received())),
    )

    assert [result.outcome for result in results] == ["sent"] * 3
    # Each note came with the message's own reference, when exactly that many had arrived.
    assert noted == [(f"ref-{n}", results[n].reference, n + 1) for n in range(3)]


def test_a_failing_note_stops_the_batch(contract, adapter, simulator):
    def note(message, reference):
        raise RuntimeError("the database went away")

    messages = [
        OutboundMessage(
            reference=f"ref-{n}", recipient=contract.accepted, sender=contract.sender, subject="S", text="T"
        )
        for n in range(3)
    ]

    with pytest.raises(RuntimeError):
        adapter.send_many(messages, on_accepted=note)

    assert simulator.received() == 1


# --- The whole sending service, with this adapter as the channel's provider ---------


@pytest.mark.parametrize(
    ("recipient", "status", "outcome"),
    [
        ("accepted", Delivery.Status.SENT, DeliveryAttempt.Outcome.SENT),
        ("refused", Delivery.Status.FAILED_PERMANENT, DeliveryAttempt.Outcome.PERMANENT),
        ("throttled", Delivery.Status.FAILED_TEMPORARY, DeliveryAttempt.Outcome.THROTTLED),
        ("deferred", Delivery.Status.FAILED_TEMPORARY, DeliveryAttempt.Outcome.RETRYABLE),
    ],
)
def test_the_sending_service_records_each_answer(
    contract, simulator, as_the_only_provider, delivery, recipient, status, outcome
):
    contact = ContactPoint.objects.get(pk=delivery.contact_point_id)
    contact.value = getattr(contract, recipient)
    contact.save(update_fields=["value"])

    report = deliveries_send(delivery_ids=[str(delivery.id)])

    delivery.refresh_from_db()
    assert (delivery.status, delivery.provider) == (status, as_the_only_provider)
    assert list(delivery.attempts.values_list("outcome", flat=True)) == [outcome]
    assert simulator.received() == (1 if recipient == "accepted" else 0)
    if status == Delivery.Status.SENT:
        assert delivery.provider_reference
        assert delivery.accepted_reference == delivery.provider_reference  # noted as it was accepted
    assert bool(report.retries) is (status == Delivery.Status.FAILED_TEMPORARY)
    if outcome == DeliveryAttempt.Outcome.THROTTLED:
        assert (report.retries[0].retry_after or 0) > 0


def test_a_message_accepted_before_a_crash_is_recorded_not_sent_again(
    contract, simulator, as_the_only_provider, delivery
):
    # A worker claims and sends, and dies before recording the chunk: what it
    # leaves behind is the note written as the provider accepted the message.
    claimed = deliveries_claim(delivery_ids=[delivery.pk])
    deliveries_attempt(
        deliveries_get_for_send(delivery_ids=claimed), provider=provider_choose(contract.adapter.channel)
    )
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENDING
    noted = delivery.accepted_reference
    assert noted
    # After the lease the sweeper gives the delivery back, and it is sent "again".
    later = timezone.now() + timedelta(seconds=settings.CAKRA_SWEEPER["SENDING_LEASE_SECONDS"] + 1)
    assert deliveries_sweep_stuck(now=later).sending_expired == 1

    report = deliveries_send(delivery_ids=[str(delivery.id)])

    delivery.refresh_from_db()
    assert report.outcomes["recovered"] == 1
    assert simulator.received() == 1  # not sent a second time
    assert (delivery.status, delivery.provider_reference) == (Delivery.Status.SENT, noted)
    assert list(delivery.attempts.values_list("number", "outcome")) == [(2, "recovered")]
