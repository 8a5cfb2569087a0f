"""The Twilio-style SMS gateway simulator: its wire format, its signed callbacks, its pages."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode

import pytest
from django.utils import timezone

from cakra.delivery.models import Delivery, DeliveryReceipt
from cakra.security.signing import twilio_signature
from cakra.simulators.magic import Magic, magic_number
from cakra.simulators.smsgateway import SmsGateway, segments
from tests.factories import make_notice

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "simulator-test-token-0123456789abcdef"
PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers  # status codes to answer in turn; 200 once exhausted
        self.posts: list[tuple[str, dict[str, str], bytes]] = []  # (signature, headers, body)
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1/receipts/sms/sms-http"

    def wait_for(self, count: int, timeout: float = 3.0) -> list[dict[str, str]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.posts) >= count, timeout=timeout)
            return [dict(parse_qsl(body.decode())) for _, _, body in self.posts]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.arrived:
            self.server.posts.append((self.headers.get("X-Twilio-Signature", ""), dict(self.headers), body))
            status = self.server.answers.pop(0) if self.server.answers else 200
            self.server.arrived.notify_all()
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002
        pass


@contextmanager
def _receiver(answers: list[int] | None = None) -> Iterator[_Receiver]:
    server = _Receiver(answers or [])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway():
    with SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN) as running:
        yield running


def _request(gateway, method, path, *, fields=None, auth=(ACCOUNT, TOKEN), host=None):
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=3)
    headers = {"Host": host or f"127.0.0.1:{gateway.port}"}
    body = None
    if fields is not None:
        body = urlencode(fields).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _send(gateway, to, *, callback="", body="Surat konfirmasi ETLE", sender="ETLE-PMJ"):
    fields = {"To": to, "From": sender, "Body": body}
    if callback:
        fields["StatusCallback"] = callback
    return _request(gateway, "POST", PATH, fields=fields)


# --- the Messages endpoint ---------------------------------------------------------------------
def test_an_accepted_message_is_answered_201_with_twilios_resource(gateway):
    status, _, body = _send(gateway, magic_number(Magic.DELIVERED))

    resource = json.loads(body)
    assert status == 201
    assert resource["status"] == "queued"
    assert resource["sid"].startswith("SM")
    assert len(resource["sid"]) == 34
    assert resource["account_sid"] == ACCOUNT
    assert resource["uri"] == f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{resource['sid']}.json"


@pytest.mark.parametrize("auth", [(ACCOUNT, "wrong-token"), ("AC" + "f" * 32, TOKEN), (ACCOUNT, ""), ("", "")], ids=str)
def test_wrong_credentials_get_twilios_401(gateway, auth):
    status, headers, body = _request(gateway, "POST", PATH, fields={"To": "+6281200000001"}, auth=auth)

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert json.loads(body) == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert gateway.received() == 0


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"To": magic_number(Magic.PERMANENT), "From": "ETLE-PMJ", "Body": "x"}, 400, 21610),
        ({"To": magic_number(Magic.TEMPORARY), "From": "ETLE-PMJ", "Body": "x"}, 503, 20503),
        ({"To": magic_number(Magic.THROTTLED), "From": "ETLE-PMJ", "Body": "x"}, 429, 20429),
        ({"To": "081200000001", "From": "ETLE-PMJ", "Body": "x"}, 400, 21211),
        ({"From": "ETLE-PMJ", "Body": "x"}, 400, 21604),
        ({"To": "+6281200000001", "Body": "x"}, 400, 21603),
        ({"To": "+6281200000001", "From": "<script>", "Body": "x"}, 400, 21212),
        ({"To": "+6281200000001", "From": "ETLE-PMJ"}, 400, 21602),
        ({"To": "+6281200000001", "From": "ETLE-PMJ", "Body": "x" * 1601}, 400, 21617),
        (
            {"To": "+6281200000001", "From": "ETLE-PMJ", "Body": "x", "StatusCallback": "https://example.com/cb"},
            400,
            21609,
        ),
    ],
)
def test_refusals_carry_twilios_status_and_code(gateway, fields, status, code):
    answered, headers, body = _request(gateway, "POST", PATH, fields=fields)

    assert (answered, json.loads(body)["code"]) == (status, code)
    if status == 429:
        assert headers["Retry-After"] == "1"
    assert gateway.received() == 0


def test_the_accounts_rate_limit_answers_429():
    with SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN, rate_per_second=0.001, burst=1) as gateway:
        statuses = [_send(gateway, magic_number(Magic.DELIVERED, n))[0] for n in range(2)]

    assert statuses == [201, 429]


def test_copies_of_one_text_to_one_number_are_counted(gateway):
    for _ in range(3):
        _send(gateway, "+6281200000001", body="sama")
    _send(gateway, "+6281200000002", body="sama")

    status, _, body = _request(gateway, "GET", "/_sim/received.json")

    received = json.loads(body)
    assert status == 200
    assert (received["messages"], received["distinct"], received["duplicates"]) == (4, 2, 2)
    assert received["duplicated"][0]["copies"] == 3


@pytest.mark.parametrize(
    ("text", "count"), [("a" * 160, 1), ("a" * 161, 2), ("{" * 80, 1), ("é" * 70, 1), ("€" * 81, 2)]
)
def test_segments_are_counted_as_a_handset_counts_them(text, count):
    assert segments(text) == count


# --- status callbacks ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("behaviour", "statuses"),
    [
        (Magic.DELIVERED, [("sent", None), ("delivered", None)]),
        (Magic.NOT_ON_WHATSAPP, [("sent", None), ("delivered", None)]),
        (Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE, [("sent", None), ("undelivered", "30003")]),
        (Magic.NO_RECEIPT, [("sent", None)]),
    ],
)
def test_each_status_is_posted_signed_as_twilio_signs_it(gateway, behaviour, statuses):
    number = magic_number(behaviour)
    with _receiver() as receiver:
        _, _, body = _send(gateway, number, callback=receiver.url)
        sid = json.loads(body)["sid"]
        posted = receiver.wait_for(len(statuses))
        assert gateway.callbacks.wait_idle(2)

    assert [(p["MessageStatus"], p.get("ErrorCode")) for p in posted] == statuses
    for (signature, headers, _), params in zip(receiver.posts, posted, strict=True):
        assert signature == twilio_signature(auth_token=TOKEN, url=receiver.url, params=params)
        assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        assert (params["MessageSid"], params["SmsSid"], params["To"], params["From"]) == (sid, sid, number, "ETLE-PMJ")
        assert params["AccountSid"] == ACCOUNT
    assert gateway.store.get(sid).status == statuses[-1][0]


def test_a_callback_answered_non_2xx_is_posted_again(gateway):
    with _receiver(answers=[503, 500]) as receiver:
        _send(gateway, magic_number(Magic.NO_RECEIPT), callback=receiver.url)
        posted = receiver.wait_for(3)
        # The third post has arrived; the gateway counts it once it has read the answer.
        assert gateway.callbacks.wait_idle(2)

    assert [p["MessageStatus"] for p in posted] == ["sent"] * 3
    assert gateway.callbacks.counts["posted"] == 1


def test_a_callback_is_given_up_after_a_few_tries():
    with SmsGateway(account_sid=ACCOUNT, auth_token=TOKEN) as gateway, _receiver(answers=[503] * 10) as receiver:
        gateway.callbacks._tries = 2
        _send(gateway, magic_number(Magic.NO_RECEIPT), callback=receiver.url)
        receiver.wait_for(2)
        assert gateway.callbacks.wait_idle(2)

    assert gateway.callbacks.counts["given_up"] == 1
    assert len(receiver.posts) == 2


@pytest.fixture
def sms_delivery(vehicle, pre_validated_key, region):
    key, _token = pre_validated_key
    notice = make_notice(
        vehicle=vehicle,
        api_key=key,
        capture_id="CAP-SMS-SIM-1",
        camera_id="CAM-9",
        captured_at=datetime.fromisoformat("2026-11-28T10:00:00+07:00"),
        location="Jl. Sudirman, Jakarta",
    )
    return notice.deliveries.get(channel="email")


def test_the_simulators_callbacks_pass_the_real_endpoint(gateway, client, settings, sms_delivery):
    """The simulator and the endpoint agree on the signature: a captured callback, replayed to Cakra, applies."""
    with _receiver() as receiver:
        _, _, body = _send(gateway, magic_number(Magic.DELIVERED), callback=receiver.url)
        receiver.wait_for(2)
    sid = json.loads(body)["sid"]
    Delivery.objects.filter(pk=sms_delivery.pk).update(
        status=Delivery.Status.SENT, provider="sms-http", provider_reference=sid, sent_at=timezone.now()
    )
    settings.CAKRA_SMS_CALLBACKS = {"sms-http": {"PROVIDER": "sms-http", "AUTH_TOKEN": TOKEN, "URL": receiver.url}}

    outcomes = [
        client.post(
            "/api/v1/receipts/sms/sms-http",
            data=raw,
            content_type=headers["Content-Type"],
            headers={"X-Twilio-Signature": signature},
        ).json()["outcome"]
        for signature, headers, raw in receiver.posts
    ]

    assert outcomes == ["ignored_older", "applied"]  # sent: already sent; delivered moves it
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == Delivery.Status.DELIVERED
    assert DeliveryReceipt.objects.filter(provider="sms-http").count() == 2


# --- pages ---------------------------------------------------------------------------------------------
def test_the_phone_page_escapes_everything_and_runs_no_script(gateway):
    number = magic_number(Magic.DELIVERED, 5)
    _send(gateway, number, body='<script>alert("x")</script> & more')

    status, headers, page = _request(gateway, "GET", f"/phone/{number.replace('+', '%2B')}")

    text = page.decode()
    assert status == 200
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in text
    assert "ETLE-PMJ" in text
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Frame-Options"] == "DENY"


def test_the_index_lists_phones_and_the_magic_numbers(gateway):
    _send(gateway, magic_number(Magic.DELIVERED, 5))

    status, _, page = _request(gateway, "GET", "/")

    assert status == 200
    assert magic_number(Magic.DELIVERED, 5) in page.decode()
    assert "21610" in page.decode()


def test_messages_json_lists_what_was_accepted(gateway):
    _send(gateway, magic_number(Magic.DELIVERED, 1))

    status, _, body = _request(gateway, "GET", "/messages.json?limit=5")

    [listed] = json.loads(body)
    assert status == 200
    assert listed["to"] == magic_number(Magic.DELIVERED, 1)
    assert _request(gateway, "GET", "/messages.json?limit=0")[0] == 400


def test_a_page_asked_for_under_another_host_name_is_refused(gateway):
    assert _request(gateway, "GET", "/", host="attacker.example:8027")[0] == 421
    assert _send(gateway, "+6281200000001")[0] == 201  # the same port, under its own name
