"""The contract every provider adapter of every channel must honour.

One suite, run against each adapter and its simulator (Django's email
backends and GOV.UK Notify's clients do the same). A new adapter joins by
adding one :class:`Contract` to ``CONTRACTS``: how to start its simulator,
which recipients make the simulator accept, refuse, throttle or defer, how to
point the adapter at an address, and a few broken configurations. A provider
configured in ``CAKRA_PROVIDERS`` whose backend has no contract fails
:func:`test_every_configured_backend_is_under_contract`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

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
from cakra.delivery.models import Channel, Delivery, DeliveryAttempt
from cakra.simulators.smtp import MailSink


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


@contextmanager
def _mail_sink(tmp_path) -> Iterator[Simulator]:
    from django.conf import settings

    with MailSink(
        maildir=tmp_path / "contract-mail",
        dkim_private_key=str(settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]),
        dkim_selector=str(settings.CAKRA_EMAIL["DKIM_SELECTOR"]),
    ) as sink:
        yield Simulator(host="127.0.0.1", port=sink.smtp_port, received=lambda: len(sink.messages()))


CONTRACTS = [
    Contract(
        adapter=SmtpEmailAdapter,
        simulator=_mail_sink,
        options=lambda host, port, timeout: {"HOST": host, "PORT": port, "SECURITY": "none", "TIMEOUT": timeout},
        sender=SenderIdentity(address="etle@korlantas.polri.go.id", display_name="ETLE Polda Metro Jaya"),
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
def silent_port():
    """A port that accepts connections and never answers (a hung provider)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


# --- Shape -------------------------------------------------------------------------


def test_the_adapter_declares_its_channel_and_a_provider_kind_that_fit_the_records(contract):
    column = DeliveryAttempt._meta.get_field("provider").max_length or 0

    assert contract.adapter.channel in Channel.values
    assert 0 < len(contract.adapter.provider) <= column


def test_the_base_class_wrapper_cannot_be_bypassed(contract):
    # Timing, structured logs and the error taxonomy live in ChannelAdapter.send;
    # an adapter implements _send only.
    assert contract.adapter.send is ChannelAdapter.send
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
    reference = adapter.send(_message(contract, contract.accepted))

    assert isinstance(reference, str)
    assert 0 < len(reference) <= (Delivery._meta.get_field("provider_reference").max_length or 0)
    assert simulator.received() == 1


def test_a_refused_recipient_is_a_permanent_error(contract, adapter, simulator):
    with pytest.raises(PermanentProviderError) as raised:
        adapter.send(_message(contract, contract.refused))

    assert contract.refused not in raised.value.detail
    assert simulator.received() == 0


def test_a_rate_answer_is_throttled_with_a_retry_after(contract, adapter, simulator):
    with pytest.raises(ThrottledProviderError) as raised:
        adapter.send(_message(contract, contract.throttled))

    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 0
    assert contract.throttled not in raised.value.detail


def test_a_temporary_refusal_is_retryable(contract, adapter, simulator):
    with pytest.raises(RetryableProviderError) as raised:
        adapter.send(_message(contract, contract.deferred))

    assert type(raised.value) is RetryableProviderError
    assert contract.deferred not in raised.value.detail


def test_a_provider_that_refuses_connections_is_retryable(contract, closed_port):
    adapter = contract.adapter(options=contract.options("127.0.0.1", closed_port, 2.0), name="down")

    with pytest.raises(UnavailableProviderError) as raised:  # retryable, and a batch stops there
        adapter.send(_message(contract, contract.accepted))

    assert raised.value.outcome == "retryable"


def test_a_provider_that_never_answers_times_out_retryably(contract, silent_port):
    adapter = contract.adapter(options=contract.options("127.0.0.1", silent_port, 0.3), name="hung")

    with pytest.raises(RetryableProviderError):
        adapter.send(_message(contract, contract.accepted))


def test_logs_carry_the_delivery_and_provider_but_never_the_recipient(contract, adapter, simulator, caplog):
    caplog.set_level(logging.DEBUG)

    adapter.send(_message(contract, contract.accepted))
    with pytest.raises(PermanentProviderError):
        adapter.send(_message(contract, contract.refused))

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert "provider_send_ok" in logged
    assert "provider_send_failed" in logged
    assert REFERENCE in logged
    assert adapter.name in logged
    assert "duration_ms" in logged
    assert contract.accepted not in logged
    assert contract.refused not in logged
