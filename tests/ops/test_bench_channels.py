"""The bench's phone channels and the mixed plan's accounting (cakra.ops.bench.channels,
cakra.ops.bench.measurement): the owners' numbers, what the WhatsApp simulator
received read back through its plug-in, and the fallback steps counted on a few rows."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from cakra.delivery.channels import locmem
from cakra.delivery.channels.base import OutboundMessage, SenderIdentity, TemplateMessage
from cakra.delivery.channels.health import provider_health_reset_process
from cakra.delivery.channels.phone import mobile_e164
from cakra.delivery.channels.whatsapp import WhatsAppCloudAdapter
from cakra.delivery.message_templates import message_template_approved, message_templates_sync
from cakra.delivery.models import Delivery
from cakra.enforcement.models import Notice, Region
from cakra.ops.bench.channels import bench_channels
from cakra.ops.bench.channels.base import ChannelRun, RunPlace
from cakra.ops.bench.channels.email import EmailChannel
from cakra.ops.bench.channels.phone import fallbacks_expected, owner_behaviour, owner_mobile
from cakra.ops.bench.channels.sms import (
    SmsBareClient,
    SmsRun,
    received_by_delivery,
    received_by_recipient,
)
from cakra.ops.bench.channels.sms import simulator_received as sms_simulator_received
from cakra.ops.bench.channels.whatsapp import (
    CEILING_PARAMETERS,
    PHONE_NUMBER_ID,
    WhatsAppBareClient,
    WhatsAppChannel,
    WhatsAppRun,
    received_parse,
    simulator_received,
)
from cakra.ops.bench.measurement import fallbacks_audited, fallbacks_by_status, final_filter, messages_by_channel
from cakra.ops.bench.seeding import registry_seed
from cakra.ops.bench.supervision import simulators_env
from cakra.registry.models import ContactPoint
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsc import SmscBehaviour, SmscSimulator
from cakra.simulators.whatsapp import WhatsAppSimulator
from cakra.simulators.whatsapp.simulator import business_numbers_parse
from tests.delivery.helpers import send
from tests.factories import VehicleFactory, make_notice, make_owner

MIXED = ("whatsapp", "sms", "email")


# --- the owners' numbers ------------------------------------------------------------------
def test_the_mixed_plan_gives_a_tenth_of_the_owners_no_whatsapp_and_a_fiftieth_no_sms_either():
    behaviours = Counter(owner_behaviour(i, plan=MIXED) for i in range(10_000))
    assert behaviours == {
        Magic.DELIVERED: 9000,
        Magic.NOT_ON_WHATSAPP: 800,
        Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE: 200,
    }
    assert fallbacks_expected(10_000, plan=MIXED) == {"whatsapp>sms": 1000, "sms>email": 200}


def test_every_owner_has_a_number_of_its_own_and_a_valid_indonesian_mobile():
    numbers = [owner_mobile(i, plan=MIXED) for i in range(0, 200_000, 7)]
    assert len(set(numbers)) == len(numbers)
    for number in numbers[:500]:
        assert mobile_e164(number) == number


@pytest.mark.parametrize("plan", [("whatsapp",), ("sms",), ("email",), ("sms", "email")])
def test_a_plan_that_does_not_start_on_whatsapp_or_has_one_step_gives_ordinary_numbers_only(plan):
    assert {owner_behaviour(i, plan=plan) for i in range(200)} == {Magic.DELIVERED}
    assert not fallbacks_expected(200, plan=plan)


def test_magic_serials_run_out_loudly_rather_than_repeat():
    with pytest.raises(ValueError, match="magic numbers"):
        owner_mobile(1_000_049, plan=MIXED)


@dataclass
class _MobileChannel:
    """A second phone channel, as SMS is: the same number, the same contact kind."""

    name: str = "sms"
    contact_kind: str = ContactPoint.Kind.MOBILE.value
    port_names: tuple[str, ...] = ()
    stored_bytes_per_message: int = 0
    prepared: list[bool] = field(default_factory=list)

    def contact_value(self, index: int, *, plan: tuple[str, ...]) -> str:
        return owner_mobile(index, plan=plan)

    def region_fields(self) -> dict[str, object]:
        return {"sms_sender_id": "ETLE-BENCH"}

    def database_prepare(self) -> None:
        self.prepared.append(True)

    def run(self, *, place: RunPlace, ports: Mapping[str, int]) -> ChannelRun:
        raise AssertionError("seeding never starts a channel's run")


@pytest.mark.django_db
def test_seeding_stores_one_number_per_owner_for_both_phone_channels_and_the_plan_in_order():
    sms = _MobileChannel()
    registry_seed(notices=60, channels=[WhatsAppChannel(), sms, EmailChannel()], log=lambda _: None)

    kinds = Counter(ContactPoint.objects.values_list("kind", flat=True))
    assert kinds == {"mobile": 60, "email": 60}
    region = Region.objects.get(code="BENCH")
    assert region.channel_order == list(MIXED)
    assert (region.whatsapp_phone_number_id, region.sms_sender_id) == (PHONE_NUMBER_ID, "ETLE-BENCH")
    assert sms.prepared == [True]
    # WhatsApp's templates approved, so the first message can go.
    assert message_template_approved(name="cakra_notice", language="id").parameter_count == len(CEILING_PARAMETERS)


# --- the WhatsApp plug-in against its simulator --------------------------------------------------
def _simulator(settings) -> WhatsAppSimulator:
    options = settings.CAKRA_WHATSAPP_SIM
    return WhatsAppSimulator(
        access_token=str(options["ACCESS_TOKEN"]),
        app_secret=str(options["APP_SECRET"]),
        waba_id=str(options["WABA_ID"]),
        business_numbers=json.loads(
            WhatsAppRun(http_port=1, ceiling_port=2, web_port=3).env["CAKRA_WHATSAPP_SIM_BUSINESS_NUMBERS_JSON"]
        ),
        templates_file=Path(str(options["TEMPLATES_FILE"])),
    )


def _notice_message(delivery_id: str, index: int) -> OutboundMessage:
    return OutboundMessage(
        reference=delivery_id,
        recipient=owner_mobile(index, plan=MIXED),
        sender=SenderIdentity(address=PHONE_NUMBER_ID, display_name="ETLE Bench"),
        text="-",
        template=TemplateMessage(name="cakra_notice", language="id", parameters=CEILING_PARAMETERS),
    )


def test_received_counts_each_deliverys_copies_and_leaves_the_ceilings_messages_out(settings):
    once, twice = str(uuid.uuid4()), str(uuid.uuid4())
    with _simulator(settings) as simulator:
        client = WhatsAppBareClient(simulator.http_port)  # sends its warm-up message
        client.send(1)
        adapter = WhatsAppCloudAdapter(
            options={
                "BASE_URL": simulator.base_url,
                "API_VERSION": "v21.0",
                "ACCESS_TOKEN": str(settings.CAKRA_WHATSAPP_SIM["ACCESS_TOKEN"]),
            }
        )
        # As after a retry that had reached the provider: one delivery sent twice.
        for delivery_id, index in [(once, 0), (twice, 1), (twice, 1)]:
            [result] = adapter.send_many([_notice_message(delivery_id, index)])
            assert result.error is None
        adapter.close()
        client.adapter.close()

        received = simulator_received(simulator.http_port)
        assert simulator.store.accepted == 5

    assert received == {once: 1, twice: 2}


@pytest.mark.parametrize("payload", [[], {"a": "1"}, {"a": True}, {"a": 1.5}])
def test_a_malformed_count_is_refused(payload):
    with pytest.raises(TypeError):
        received_parse(payload)


def test_the_run_points_the_adapter_the_webhooks_and_the_rate_limits_at_the_bench():
    run = WhatsAppRun(http_port=41001, ceiling_port=41002, web_port=41003)
    assert run.env["CAKRA_WHATSAPP_BASE_URL"] == "http://127.0.0.1:41001"
    assert run.env["CAKRA_WHATSAPP_SIM_WEBHOOK_URL"] == "http://127.0.0.1:41003/api/v1/webhooks/whatsapp/whatsapp-sim"
    numbers = business_numbers_parse(json.loads(run.env["CAKRA_WHATSAPP_SIM_BUSINESS_NUMBERS_JSON"]))
    assert list(numbers) == [WhatsAppChannel().region_fields()["whatsapp_phone_number_id"]]
    # Meta's upgraded tier, in the simulator and in the provider's sender limit.
    assert run.env["CAKRA_WHATSAPP_SIM_RATE_PER_SECOND"] == "1000"
    assert json.loads(run.env["CAKRA_PROVIDERS_JSON"]) == {"whatsapp": {"RATE_PER_SECOND": 1000, "BURST": 1000}}
    # The ceiling's simulator: no webhooks, no limit, its own port.
    ceiling = run.processes["whatsapp-sim-ceiling"]
    assert "CAKRA_WHATSAPP_SIM_WEBHOOKS=0" in ceiling
    assert ceiling[-2:] == ["--http-port", "41002"]


@dataclass
class _Env:
    env: Mapping[str, str]
    processes: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def wait_ready(self) -> None:
        """Nothing runs."""


def test_provider_changes_of_several_simulators_are_merged_by_name():
    merged = simulators_env(
        [
            _Env({"A": "1", "CAKRA_PROVIDERS_JSON": json.dumps({"whatsapp": {"RATE_PER_SECOND": 1000}})}),
            _Env({"B": "2", "CAKRA_PROVIDERS_JSON": json.dumps({"smpp": {"BURST": 50}})}),
        ],
        base=json.dumps({"whatsapp": {"PRIORITY": 5}}),
    )
    assert (merged["A"], merged["B"]) == ("1", "2")
    assert json.loads(merged["CAKRA_PROVIDERS_JSON"]) == {
        "whatsapp": {"PRIORITY": 5, "RATE_PER_SECOND": 1000},
        "smpp": {"BURST": 50},
    }


def test_the_bench_has_a_plug_in_for_whatsapp(settings):
    settings.CAKRA_ENABLED_CHANNELS = ["whatsapp", "email"]
    assert [channel.name for channel in bench_channels()] == ["whatsapp", "email"]
    assert [channel.name for channel in bench_channels(["email"])] == ["email"]


# --- the SMS plug-in against the SMSC simulator ----------------------------------------------------
def test_sms_copies_are_counted_per_delivery_through_its_recipient_and_the_ceilings_left_out(settings):
    options = settings.CAKRA_PROVIDERS["smpp"]["OPTIONS"]
    behaviour = SmscBehaviour(system_id=options["SYSTEM_ID"], password=options["PASSWORD"], receipt_delay=0.0)
    once, twice = str(uuid.uuid4()), str(uuid.uuid4())
    # Numbers that get no receipt: nothing comes back for the adapter to record.
    first, second = (magic_number(Magic.NO_RECEIPT, 900_000 + n) for n in (1, 2))
    with SmscSimulator(behaviour=behaviour) as smsc:
        client = SmsBareClient(smsc.smpp_port)  # binds and sends its warm-up message
        client.send(1)
        for delivery_id, recipient in [(once, first), (twice, second), (twice, second)]:
            message = OutboundMessage(
                reference=delivery_id, recipient=recipient, sender=SenderIdentity(address="ETLE-BENCH"), text="Tilang"
            )
            [result] = client.adapter.send_many([message])
            assert result.error is None
        client.adapter.close()
        by_recipient = sms_simulator_received(smsc.http_port)

    deliveries = {first.removeprefix("+"): once, second.removeprefix("+"): twice}
    assert received_by_delivery(by_recipient, deliveries=deliveries) == {once: 1, twice: 2}
    assert sum(by_recipient.values()) == 5  # the ceiling's two, counted by the simulator, not by the bench


@pytest.mark.parametrize("payload", [[], {"6281200000000": 1}, {"a:b": "1"}, {"a:b": True}])
def test_a_malformed_sms_count_is_refused(payload):
    with pytest.raises(TypeError):
        received_by_recipient(payload)


def test_the_sms_run_sends_every_sms_over_smpp_with_the_listener_running():
    run = SmsRun(smpp_port=42001, http_port=42002, notices=10, plan=MIXED)
    providers = json.loads(run.env["CAKRA_PROVIDERS_JSON"])
    assert providers == {"smpp": {"RATE_PER_SECOND": 1000, "BURST": 1000}, "sms-http": None}
    assert (run.env["CAKRA_SMPP_PORT"], run.env["CAKRA_SMSC_SIM_PORT"]) == ("42001", "42001")
    assert run.processes["smpp-receipts"][-3:] == ["smpp-receipts", "--provider", "smpp"]


# --- the mixed plan's accounting on a few rows ---------------------------------------------------
def _entry(channel: str, backend: str, answers: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "CHANNEL": channel,
        "BACKEND": f"cakra.delivery.channels.locmem.{backend}",
        "PRIORITY": 10,
        "SENDER_IDENTITY": f"locmem:{channel}",
        "RATE_PER_SECOND": 1000,
        "BURST": 1000,
        "OPTIONS": {"ANSWERS": answers or {}},
    }


@pytest.fixture
def provider_state(settings):
    """Provider health synced on every call, and none left over from other tests in this process."""
    settings.CAKRA_PROVIDER_HEALTH = {**settings.CAKRA_PROVIDER_HEALTH, "SYNC_SECONDS": 0}
    provider_health_reset_process()
    yield
    provider_health_reset_process()


@pytest.mark.django_db
@pytest.mark.usefixtures("provider_state")
def test_each_fallback_step_is_counted_once_and_each_notice_settles_once(
    settings, region, django_capture_on_commit_callbacks
):
    not_on_whatsapp, sms_fails = owner_mobile(45, plan=MIXED), owner_mobile(49, plan=MIXED)
    settings.CAKRA_ENABLED_CHANNELS = list(MIXED)
    settings.CAKRA_PROVIDERS = {
        "wa": _entry("whatsapp", "LocmemWhatsAppAdapter", {not_on_whatsapp: "permanent", sms_fails: "permanent"}),
        "sms": _entry("sms", "LocmemSmsAdapter", {sms_fails: "permanent"}),
        "mail": _entry("email", "LocmemEmailAdapter"),
    }
    region.channel_order = list(MIXED)
    region.save()
    message_templates_sync(approved=True)
    locmem.outbox_clear()
    since = timezone.now() - timedelta(seconds=1)
    notices = [
        make_notice(
            vehicle=VehicleFactory.create(owner=make_owner(mobile=mobile)), region=region, capture_id=f"CAP-MIX-{n}"
        )
        for n, mobile in enumerate((owner_mobile(0, plan=MIXED), not_on_whatsapp, sms_fails))
    ]
    for step in (1, 2, 3):
        for delivery in Delivery.objects.filter(step=step, status=Delivery.Status.PENDING):
            with django_capture_on_commit_callbacks(execute=False):
                send(delivery)
    locmem.outbox_clear()

    issued = Notice.objects.filter(pk__in=[notice.pk for notice in notices])
    assert fallbacks_audited(region_code=region.code, since=since) == {"whatsapp>sms": 2, "sms>email": 1}
    assert fallbacks_by_status(issued, plan=MIXED) == {"whatsapp>sms": 2, "sms>email": 1}
    assert messages_by_channel(issued) == {"whatsapp": 1, "sms": 1, "email": 1}
    # Locmem confirms nothing: "sent" settles; an early step's failure does not.
    unconfirmed = dict.fromkeys(MIXED, False)
    assert Delivery.objects.filter(final_filter(confirms=unconfirmed, last_step=3)).count() == 3
    # A failure at the plan's last step settles its notice too.
    Delivery.objects.filter(notice=notices[2], step=3).update(status=Delivery.Status.FAILED_PERMANENT)
    assert Delivery.objects.filter(final_filter(confirms=unconfirmed, last_step=3)).count() == 3
    assert Delivery.objects.filter(final_filter(confirms=dict.fromkeys(MIXED, True), last_step=3)).count() == 1
