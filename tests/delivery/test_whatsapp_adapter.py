"""The WhatsApp Cloud API adapter against a fake of Meta's messages endpoint:
the request it makes, how each error answer maps onto the taxonomy, one kept
connection per batch, and nothing sent for a number that is not a mobile."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from cakra.delivery.channels.base import (
    OutboundMessage,
    PermanentProviderError,
    RetryableProviderError,
    SenderIdentity,
    TemplateMessage,
    ThrottledProviderError,
    UnavailableProviderError,
)
from cakra.delivery.channels.whatsapp import WhatsAppCloudAdapter
from cakra.simulators.magic import Magic, magic_number
from tests.delivery.helpers import send_one
from tests.delivery.whatsapp_fake import PHONE_NUMBER_ID, TOKEN, FakeCloudApi, error_body

SENDER = SenderIdentity(address=PHONE_NUMBER_ID, display_name="ETLE Polda Metro Jaya")
RECIPIENT = "+6281234567890"
REFERENCE = "5f0c6f7e-3333-4c4c-8d8d-000000000007"
TEMPLATE = TemplateMessage(
    name="etle_notice_v1", language="id", parameters=("ETLE/2026/000123", "B 1234 XYZ", "28-11-2026"), version=1
)


def _options(base_url: str, **changes):
    return {"BASE_URL": base_url, "API_VERSION": "v21.0", "ACCESS_TOKEN": TOKEN, "TIMEOUT": 2.0, **changes}


def _message(recipient=RECIPIENT, *, template=TEMPLATE, reference=REFERENCE, text="Surat konfirmasi ETLE."):
    return OutboundMessage(reference=reference, recipient=recipient, sender=SENDER, text=text, template=template)


@pytest.fixture
def cloud():
    with FakeCloudApi() as fake:
        yield fake


@pytest.fixture
def adapter(cloud):
    adapter = WhatsAppCloudAdapter(options=_options(cloud.base_url), name="whatsapp")
    yield adapter
    adapter.close()


# --- the request ---------------------------------------------------------------------------
def test_a_template_message_is_posted_in_metas_shape_with_the_bearer_token(cloud, adapter):
    reference = send_one(adapter, _message())

    [request] = cloud.requests
    assert request.path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "6281234567890",
        "type": "template",
        "template": {
            "name": "etle_notice_v1",
            "language": {"code": "id"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "ETLE/2026/000123"},
                        {"type": "text", "text": "B 1234 XYZ"},
                        {"type": "text", "text": "28-11-2026"},
                    ],
                }
            ],
        },
        "biz_opaque_callback_data": REFERENCE,
    }
    assert reference.startswith("wamid.")


def test_a_free_form_answer_is_a_text_message_without_link_preview(cloud, adapter):
    send_one(adapter, _message(template=None, text="Ini nomor resmi."))

    body = cloud.requests[0].body
    assert body["type"] == "text"
    assert body["text"] == {"body": "Ini nomor resmi.", "preview_url": False}
    assert "template" not in body


def test_a_template_without_parameters_has_no_components(cloud, adapter):
    send_one(adapter, _message(template=TemplateMessage(name="hello", language="en", parameters=())))

    assert cloud.requests[0].body["template"] == {"name": "hello", "language": {"code": "en"}}


def test_a_number_written_nationally_is_sent_in_international_digits(cloud, adapter):
    send_one(adapter, _message("0812-3456-7890"))

    assert cloud.requests[0].body["to"] == "6281234567890"


@pytest.mark.parametrize("recipient", ["+62215551234", "+6591234567", "not a number", ""])
def test_an_invalid_recipient_fails_permanently_before_any_request(cloud, adapter, recipient):
    with pytest.raises(PermanentProviderError) as raised:
        send_one(adapter, _message(recipient))

    assert raised.value.detail == "recipient is not a valid Indonesian mobile number"
    assert cloud.connections == 0
    assert cloud.requests == []


def test_a_sender_that_is_not_a_phone_number_id_fails_permanently_without_a_request(cloud, adapter):
    message = OutboundMessage(
        reference=REFERENCE, recipient=RECIPIENT, sender=SenderIdentity(address="../me/accounts"), text="x"
    )
    with pytest.raises(PermanentProviderError):
        send_one(adapter, message)

    assert cloud.requests == []


# --- the answers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "expected", "detail"),
    [
        (400, 131026, PermanentProviderError, "whatsapp 131026 undeliverable"),
        (400, 132000, PermanentProviderError, "whatsapp 132000 template or parameter refused"),
        (400, 132001, PermanentProviderError, "whatsapp 132001 template or parameter refused"),
        (400, 132012, PermanentProviderError, "whatsapp 132012 template or parameter refused"),
        (400, 131047, PermanentProviderError, "whatsapp 131047 outside the customer window"),
        (400, 131051, PermanentProviderError, "whatsapp 131051 unsupported message type"),
        (400, 100, PermanentProviderError, "whatsapp 100 invalid parameter"),
        (400, 131048, ThrottledProviderError, "whatsapp 131048 spam rate limit"),
        (400, 131056, ThrottledProviderError, "whatsapp 131056 pair rate limit"),
        (400, 130429, ThrottledProviderError, "whatsapp 130429 throughput limit"),
        (401, 190, UnavailableProviderError, "whatsapp 190 access token refused"),
        (500, 131000, RetryableProviderError, "whatsapp 131000 service unavailable"),
        (503, 1, RetryableProviderError, "whatsapp 1 (http 503)"),
    ],
)
def test_each_cloud_api_error_maps_onto_the_taxonomy(cloud, adapter, status, code, expected, detail):
    cloud.queue(status, error_body(code, "Message failed for +6281234567890", "parameter 'Budi Santoso' invalid"))

    with pytest.raises(expected) as raised:
        send_one(adapter, _message())

    assert type(raised.value) is expected
    assert raised.value.detail == detail  # ours, never Meta's free text
    assert "6281234567890" not in raised.value.detail


def test_throttling_waits_honour_retry_after_and_keep_the_pair_rate_short(cloud, adapter):
    cloud.queue(400, error_body(130429), {"Retry-After": "17"})
    cloud.queue(400, error_body(130429))
    cloud.queue(400, error_body(131056))
    waits: list[float | None] = []
    for _ in range(3):
        with pytest.raises(ThrottledProviderError) as raised:
            send_one(adapter, _message())
        waits.append(raised.value.retry_after)

    told, throughput, pair = waits
    assert told == 17.0
    assert throughput is not None
    assert 0 < throughput <= 10
    assert pair is not None
    assert 0 < pair <= 5


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, b"<html>Bad gateway</html>", RetryableProviderError),
        (500, b"", RetryableProviderError),
        (429, b"slow down", ThrottledProviderError),
        (401, b"", UnavailableProviderError),
        (200, b'{"messages": []}', RetryableProviderError),
        (200, b"not json", RetryableProviderError),
    ],
)
def test_answers_without_metas_envelope_map_by_http_status(cloud, adapter, status, body, expected):
    cloud.queue(status, body)

    with pytest.raises(expected) as raised:
        send_one(adapter, _message())

    assert type(raised.value) is expected


def test_a_wrong_token_makes_the_provider_unavailable_and_stops_the_batch(cloud):
    adapter = WhatsAppCloudAdapter(options=_options(cloud.base_url, ACCESS_TOKEN="expired-token"), name="whatsapp")

    results = adapter.send_many([_message(reference=f"ref-{n}") for n in range(3)])

    assert [result.outcome for result in results] == ["retryable"]  # the rest left for later
    assert isinstance(results[0].error, UnavailableProviderError)


def test_magic_numbers_answer_as_documented(cloud, adapter):
    with pytest.raises(PermanentProviderError):
        send_one(adapter, _message(magic_number(Magic.PERMANENT)))
    with pytest.raises(ThrottledProviderError):
        send_one(adapter, _message(magic_number(Magic.THROTTLED)))
    with pytest.raises(RetryableProviderError):
        send_one(adapter, _message(magic_number(Magic.TEMPORARY)))
    assert send_one(adapter, _message(magic_number(Magic.NOT_ON_WHATSAPP))).startswith("wamid.")


# --- the connection --------------------------------------------------------------------------
def test_a_batch_travels_over_one_kept_connection(cloud, adapter):
    results = adapter.send_many([_message(reference=f"ref-{n}") for n in range(5)])

    assert [result.outcome for result in results] == ["sent"] * 5
    assert len({result.reference for result in results}) == 5
    assert cloud.connections == 1
    assert adapter.connections_opened == 1
    # The next batch too, while the connection is fresh.
    adapter.send_many([_message(reference="ref-next")])
    assert cloud.connections == 1


def test_an_error_answer_keeps_the_connection_for_the_next_message(cloud, adapter):
    cloud.queue(400, error_body(131026))

    results = adapter.send_many([_message(reference="a"), _message(reference="b")])

    assert [result.outcome for result in results] == ["permanent", "sent"]
    assert cloud.connections == 1


def test_a_connection_the_server_dropped_is_replaced_without_sending_twice(cloud, adapter):
    cloud.drop_silently = True  # closes after each answer without saying so

    results = adapter.send_many([_message(reference=f"ref-{n}") for n in range(3)])

    assert [result.outcome for result in results] == ["sent"] * 3
    assert cloud.received() == 3  # each message reached the API once
    assert [r.body["biz_opaque_callback_data"] for r in cloud.requests] == ["ref-0", "ref-1", "ref-2"]
    assert adapter.connections_opened == 3


def test_a_refused_connection_is_unavailable(closed_port):
    adapter = WhatsAppCloudAdapter(options=_options(f"http://127.0.0.1:{closed_port}"), name="whatsapp")

    results = adapter.send_many([_message(reference="a"), _message(reference="b")])

    assert len(results) == 1  # the batch stops: every further message would fail the same way
    assert isinstance(results[0].error, UnavailableProviderError)
    assert results[0].outcome == "retryable"


def test_a_silent_server_times_out_retryably(silent_port):
    adapter = WhatsAppCloudAdapter(options=_options(f"http://127.0.0.1:{silent_port}", TIMEOUT=0.2), name="wa")

    with pytest.raises(RetryableProviderError):
        send_one(adapter, _message())


@pytest.fixture
def silent_port():
    import socket  # noqa: PLC0415

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_close_ends_the_kept_connection(cloud, adapter):
    send_one(adapter, _message())
    adapter.close()
    send_one(adapter, _message())

    assert cloud.connections == 2


# --- options and logs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"BASE_URL": "http://graph.facebook.com"}, "https"),
        ({"BASE_URL": "ftp://127.0.0.1"}, "BASE_URL"),
        ({"BASE_URL": "https://graph.facebook.com?x=1"}, "BASE_URL"),
        ({"BASE_URL": ""}, "BASE_URL"),
        ({"API_VERSION": "21"}, "API_VERSION"),
        ({"ACCESS_TOKEN": "s3cret-value with\r\nInjected: header"}, "ACCESS_TOKEN"),
        ({"ACCESS_TOKEN": ""}, "ACCESS_TOKEN"),
        ({"TIMEOUT": 0}, "TIMEOUT"),
    ],
)
def test_broken_options_are_refused_by_name_only(changes, named):
    options = _options("https://graph.facebook.com", **changes)

    problems = WhatsAppCloudAdapter.check_options(options)

    assert any(named in problem for problem in problems)
    assert not any("s3cret" in problem for problem in problems)
    with pytest.raises(ImproperlyConfigured):
        WhatsAppCloudAdapter(options=options, name="broken")


@pytest.mark.parametrize("base_url", ["https://graph.facebook.com", "http://127.0.0.1:8025", "http://localhost:8025"])
def test_https_or_a_loopback_simulator_is_accepted(base_url):
    assert WhatsAppCloudAdapter.check_options(_options(base_url)) == []


def test_logs_carry_ids_never_the_number_the_text_or_the_token(cloud, adapter, caplog):
    caplog.set_level(logging.DEBUG)
    cloud.queue(400, error_body(131026, "undeliverable to +6281234567890"))

    adapter.send_many([_message(), _message(reference="second")])

    logged = caplog.text + "".join(str(record.msg) for record in caplog.records)
    assert REFERENCE in logged
    for secret in ("6281234567890", "81234567890", "ETLE/2026/000123", TOKEN, "Surat konfirmasi"):
        assert secret not in logged
