"""Messages citizens send to an official number: stored once, the number never
in clear, answered automatically once (in English on request) through the
WhatsApp adapter, against the tests' fake Cloud API."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import pytest
from django.db import connection

from cakra.delivery.auto_reply import auto_reply_language
from cakra.delivery.models import InboundMessage
from cakra.simulators.magic import Magic, magic_number
from tests.delivery.whatsapp_fake import PHONE_NUMBER_ID, TOKEN, FakeCloudApi
from tests.factories import RegionFactory

URL = "/api/v1/webhooks/whatsapp/meta-test"
SECRET = "0123456789abcdef0123456789abcdef"
CITIZEN = "6281234567890"


@pytest.fixture
def cloud(settings):
    with FakeCloudApi() as fake:
        settings.CAKRA_PROVIDERS = {
            **settings.CAKRA_PROVIDERS,
            "whatsapp": {
                "CHANNEL": "whatsapp",
                "BACKEND": "cakra.delivery.channels.whatsapp.WhatsAppCloudAdapter",
                "PRIORITY": 10,
                "SENDER_IDENTITY": "whatsapp:test",
                "RATE_PER_SECOND": 80,
                "BURST": 80,
                "OPTIONS": {"BASE_URL": fake.base_url, "API_VERSION": "v21.0", "ACCESS_TOKEN": TOKEN, "TIMEOUT": 2},
            },
        }
        yield fake


@pytest.fixture(autouse=True)
def _setup(settings, db):
    settings.CAKRA_WHATSAPP_WEBHOOKS = {
        "meta-test": {"PROVIDER": "whatsapp", "APP_SECRET": SECRET, "VERIFY_TOKEN": "verify-token-0123456789"}
    }
    settings.CAKRA_PORTAL_BASE_URL = "https://etle.korlantas.polri.go.id"
    settings.CAKRA_WHATSAPP_AUTO_REPLY = {"MIN_INTERVAL_SECONDS": 1800}
    RegionFactory(
        code="METRO",
        name="Polda Metro Jaya",
        whatsapp_phone_number_id=PHONE_NUMBER_ID,
        whatsapp_display_name="ETLE Polda Metro Jaya",
    )


def _message(text="Apakah surat tilang ini asli?", *, sender=CITIZEN, message_id="wamid.in-1", age=0, kind="text"):
    item = {"from": sender, "id": message_id, "timestamp": str(int(time.time()) - age), "type": kind}
    if kind == "text":
        item["text"] = {"body": text}
    else:
        item[kind] = {"id": "media-1", "mime_type": "application/vnd.android.package-archive"}
    return item


def _post(client, *messages, phone_number_id=PHONE_NUMBER_ID):
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "628111500669", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Budi"}, "wa_id": CITIZEN}],
        "messages": list(messages),
    }
    entry = {"id": "1", "changes": [{"value": value, "field": "messages"}]}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return client.post(URL, data=body, content_type="application/json", headers={"X-Hub-Signature-256": signature})


@pytest.fixture
def deliver(client, celery_eager, django_capture_on_commit_callbacks):
    """Post as Meta does and run what the commit publishes (the answer task) at once."""

    def post(*messages, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return _post(client, *messages, **kwargs)

    return post


def test_a_message_is_recorded_and_answered_once_even_when_redelivered(deliver, cloud):
    first = deliver(_message())
    again = deliver(_message())

    assert (first.json()["messages_recorded"], again.json()["messages_duplicate"]) == (1, 1)
    row = InboundMessage.objects.get()
    assert (row.kind, row.text, row.region_code, row.language) == (
        "text",
        "Apakah surat tilang ini asli?",
        "METRO",
        "id",
    )
    assert row.reply_status == InboundMessage.ReplyStatus.SENT
    assert row.replied_at is not None
    [answer] = cloud.accepted
    assert row.reply_reference.startswith("wamid.")
    assert answer.path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
    assert answer.body["to"] == CITIZEN
    assert answer.body["type"] == "text"
    body = answer.body["text"]["body"]
    assert body.startswith("Ini adalah nomor WhatsApp resmi ETLE Polda Metro Jaya.")
    assert "https://etle.korlantas.polri.go.id/cek/" in body
    assert body.count("http") == 1  # one link, the portal's
    assert "OTP" in body
    assert "APK" in body
    assert "rekening bank pribadi" in body
    assert answer.body["text"]["preview_url"] is False


def test_english_is_answered_on_request(deliver, cloud):
    deliver(_message("Hello, can you answer in English please?"))

    assert InboundMessage.objects.get().language == "en"
    body = cloud.accepted[0].body["text"]["body"]
    assert body.startswith("This is the official WhatsApp number of ETLE Polda Metro Jaya.")
    assert "never ask for an OTP" in body


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("english", "en"),
        ("Bahasa Inggris", "en"),
        ("EN", "en"),
        ("en.", "en"),
        ("Apakah ini asli?", "id"),
        ("Englishman", "id"),  # a word of its own only
        ("", "id"),
    ],
)
def test_the_english_rule(text, language):
    assert auto_reply_language(text) == language


def test_a_sender_gets_one_answer_per_interval(deliver, cloud):
    deliver(_message("halo", message_id="wamid.a"), _message("ini asli?", message_id="wamid.b"))
    deliver(_message("halo lagi", message_id="wamid.c"))

    assert cloud.received() == 1
    statuses = dict(InboundMessage.objects.values_list("provider_message_id", "reply_status"))
    assert statuses == {"wamid.a": "sent", "wamid.b": "suppressed", "wamid.c": "suppressed"}


def test_a_forwarded_attachment_is_kept_and_answered(deliver, cloud):
    deliver(_message(kind="document"))

    row = InboundMessage.objects.get()
    assert (row.kind, row.text) == ("document", "")
    assert cloud.received() == 1


def test_a_message_to_a_number_no_region_has_is_kept_but_not_answered(deliver, cloud):
    deliver(_message(), phone_number_id="999999")

    assert InboundMessage.objects.get().reply_status == InboundMessage.ReplyStatus.NOT_OURS
    assert cloud.received() == 0


def test_a_message_older_than_the_window_is_not_answered(deliver, cloud):
    deliver(_message(age=25 * 3600))

    assert InboundMessage.objects.get().reply_status == InboundMessage.ReplyStatus.EXPIRED
    assert cloud.requests == []


def test_a_refused_answer_is_recorded_as_failed_with_our_detail(deliver, cloud):
    deliver(_message(sender=magic_number(Magic.PERMANENT).removeprefix("+")))

    row = InboundMessage.objects.get()
    assert row.reply_status == InboundMessage.ReplyStatus.FAILED
    assert row.reply_error == "whatsapp 131026 undeliverable"


def test_the_number_is_never_in_clear_in_the_row_or_the_logs(deliver, cloud, caplog):
    caplog.set_level(logging.DEBUG)

    deliver(_message("nomor saya rahasia-isi-pesan"))

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM delivery_inboundmessage")
        raw = " ".join(str(value) for value in cursor.fetchone())
    assert CITIZEN not in raw
    assert "81234567890" not in raw
    row = InboundMessage.objects.get()
    assert row.sender == f"+{CITIZEN}"  # opened with the key, for the answer only
    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert "whatsapp.inbound_recorded" in logged
    assert "whatsapp.auto_reply_sent" in logged
    for secret in (CITIZEN, "81234567890", "rahasia-isi-pesan", "Ini adalah nomor"):
        assert secret not in logged
