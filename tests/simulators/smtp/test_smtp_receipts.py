"""The SMTP sink as a provider that reports deliveries: signed batches of
events, keyed by Message-ID, retried until the endpoint takes them.

The endpoint here is a loopback HTTP server that checks signatures the way
Cakra's does (``receipt_signature_valid``) and answers as the test scripts it,
so faults (5xx, refused connections, unknown references) can be injected;
the real endpoint end to end is in tests/delivery/test_receipts.py.
"""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cakra.api.receipts import receipt_signature_valid
from cakra.simulators.smtp import MailSink, ReceiptReporter, message_reference

SECRET = "sink-receipt-test-secret-0123456789abcdef"
DOMAIN = "korlantas.polri.go.id"


class Endpoint:
    """Records every POST; answers with ``statuses`` in turn (then 200), and
    reports the event ids in ``unknown_once`` as unknown the first time."""

    def __init__(self, port=0, statuses=(), unknown_once=()):
        self.posts: list[dict[str, Any]] = []
        self.statuses = list(statuses)
        self.unknown_once = set(unknown_once)
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                signed = receipt_signature_valid(
                    header=self.headers.get("X-Cakra-Signature", ""),
                    secret=SECRET,
                    body=body,
                    now=time.time(),
                    tolerance=300,
                )
                with endpoint.lock:
                    status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                    events = json.loads(body)
                    endpoint.posts.append({"status": status, "signed": signed, "events": events})
                    results = []
                    for event in events:
                        unknown = event["event_id"] in endpoint.unknown_once
                        endpoint.unknown_once.discard(event["event_id"])
                        results.append(
                            {"event_id": event["event_id"], "outcome": "unknown_reference" if unknown else "applied"}
                        )
                answer = json.dumps({"results": results}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/receipts/email/smtp-sink"

    def accepted_events(self):
        with self.lock:
            return [event for post in self.posts if post["status"] == 200 for event in post["events"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    running = Endpoint()
    yield running
    running.close()


def _sink(tmp_path, dkim_pem, url):
    return MailSink(
        maildir=tmp_path / "mail", dkim_private_key=dkim_pem, dkim_selector="s1", receipt_url=url, receipt_secret=SECRET
    )


def _send(sink, *, to, message_id):
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = f"ETLE <etle@{DOMAIN}>"
    message["To"] = to
    message["Subject"] = "Surat Konfirmasi ETLE"
    message["Message-ID"] = message_id
    message.set_content("Isi surat.\n")
    with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=5) as client:
        client.sendmail(f"etle@{DOMAIN}", [to], message.as_bytes())


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_each_stored_message_is_reported_delivered_in_signed_batches(tmp_path, dkim_pem, endpoint):
    with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
        for n in range(3):
            _send(sink, to=f"pemilik{n}@example.co.id", message_id=f"<m{n}@{DOMAIN}>")
        assert sink.receipts.wait_idle(timeout=10)

    events = endpoint.accepted_events()
    assert sorted(e["message_id"] for e in events) == [f"<m{n}@{DOMAIN}>" for n in range(3)]
    assert {e["event"] for e in events} == {"delivered"}
    assert len({e["event_id"] for e in events}) == 3
    assert all(post["signed"] for post in endpoint.posts)
    assert len(endpoint.posts) < 3  # batched: messages stored together are posted together
    for event in events:
        assert event["timestamp"].endswith("+00:00")
        assert "pemilik" not in json.dumps(event)  # the provider reports ids, not addresses


def test_async_bounces_and_opens_are_reported_after_acceptance(tmp_path, dkim_pem, endpoint):
    with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
        _send(sink, to="softbounce.budi@example.co.id", message_id=f"<soft@{DOMAIN}>")
        _send(sink, to="opened.sari@example.co.id", message_id=f"<open@{DOMAIN}>")
        assert sink.receipts.wait_idle(timeout=10)
        assert sink.count() == 2  # both were accepted and stored

    reported = [(e["message_id"], e["event"]) for e in endpoint.accepted_events()]
    assert [r for r in reported if r[0] == f"<soft@{DOMAIN}>"] == [(f"<soft@{DOMAIN}>", "bounced")]
    assert [r for r in reported if r[0] == f"<open@{DOMAIN}>"] == [
        (f"<open@{DOMAIN}>", "delivered"),
        (f"<open@{DOMAIN}>", "opened"),
    ]


def test_a_silent_recipient_is_stored_and_never_reported(tmp_path, dkim_pem, endpoint):
    with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
        _send(sink, to="silent-c1@example.co.id", message_id=f"<quiet@{DOMAIN}>")
        _send(sink, to="pemilik@example.co.id", message_id=f"<loud@{DOMAIN}>")
        assert sink.receipts.wait_idle(timeout=10)
        assert sink.count() == 2

    assert [e["message_id"] for e in endpoint.accepted_events()] == [f"<loud@{DOMAIN}>"]


def test_refused_recipients_are_still_refused_and_never_reported(tmp_path, dkim_pem, endpoint):
    with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            _send(sink, to="bounce@example.co.id", message_id=f"<hard@{DOMAIN}>")
        assert sink.receipts.wait_idle(timeout=2)

    assert endpoint.posts == []


def test_server_errors_are_retried_until_accepted_and_nothing_is_dropped(tmp_path, dkim_pem):
    endpoint = Endpoint(statuses=[503, 500])
    try:
        with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
            _send(sink, to="pemilik@example.co.id", message_id=f"<retry@{DOMAIN}>")
            assert sink.receipts.wait_idle(timeout=15)
            assert sink.receipts.counts["retries"] == 2
    finally:
        endpoint.close()

    assert [post["status"] for post in endpoint.posts] == [503, 500, 200]
    assert {post["events"][0]["event_id"] for post in endpoint.posts} == {endpoint.posts[0]["events"][0]["event_id"]}


def test_events_wait_while_the_endpoint_is_down(tmp_path, dkim_pem):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/receipts/email/smtp-sink"
    with _sink(tmp_path, dkim_pem, url) as sink:
        _send(sink, to="pemilik@example.co.id", message_id=f"<down@{DOMAIN}>")
        assert _wait(lambda: sink.receipts.counts["retries"] >= 1)
        endpoint = Endpoint(port=port)  # the web server comes back
        try:
            assert sink.receipts.wait_idle(timeout=15)
        finally:
            endpoint.close()

    assert [e["message_id"] for e in endpoint.accepted_events()] == [f"<down@{DOMAIN}>"]


def test_an_event_the_endpoint_does_not_know_yet_is_reported_again(endpoint):
    # The sink may report faster than the worker records the send.
    endpoint.unknown_once.add("evt-early")
    reporter = ReceiptReporter(url=endpoint.url, secret=SECRET, batch_seconds=0.05)
    reporter.start()
    try:
        reporter.report(message_id=f"<early@{DOMAIN}>", event="delivered", event_id="evt-early")
        assert reporter.wait_idle(timeout=10)
    finally:
        reporter.stop()

    ids = [event["event_id"] for post in endpoint.posts for event in post["events"]]
    assert ids == ["evt-early", "evt-early"]
    assert reporter.counts["applied"] == 1


def test_a_request_the_endpoint_refuses_is_dropped_not_retried(endpoint):
    endpoint.statuses = [401]
    reporter = ReceiptReporter(url=endpoint.url, secret=SECRET, batch_seconds=0.05)
    reporter.start()
    try:
        reporter.report(message_id=f"<x@{DOMAIN}>", event="delivered", event_id="evt-x")
        assert reporter.wait_idle(timeout=5)
    finally:
        reporter.stop()

    assert [post["status"] for post in endpoint.posts] == [401]
    assert reporter.counts["rejected"] == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/api/v1/receipts/email/smtp-sink",
        "https://127.0.0.1/api/v1/receipts/email/smtp-sink",
        "file:///etc/passwd",
        "http://10.0.0.1:8000/x",
    ],
)
def test_the_sink_reports_only_to_loopback(url):
    with pytest.raises(ValueError, match="loopback"):
        ReceiptReporter(url=url, secret=SECRET)


def test_a_receipt_url_without_a_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        ReceiptReporter(url="http://127.0.0.1:8000/api/v1/receipts/email/smtp-sink", secret="")


def test_the_message_reference_is_the_message_id_as_written():
    raw = b"From: a@b\r\nMessage-ID:\r\n <abc-123@korlantas.polri.go.id>\r\nSubject: x\r\n\r\nbody\r\n"

    assert message_reference(raw) == "<abc-123@korlantas.polri.go.id>"
    assert message_reference(b"Subject: none\r\n\r\n") == ""
    # Any case, folded with a tab, LF line ends; the first field wins.
    assert message_reference(b"X-Message-ID: <no@x>\nmessage-ID:\t<a@x\n\t>\nMessage-ID: <b@x>\n\nx") == "<a@x >"
    assert message_reference(b"MESSAGE-ID : <c@x>\r\n\r\n") == "<c@x>"
    # Never from the body, nor from a message without headers.
    assert message_reference(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") == ""
    assert message_reference(b"\r\nMessage-ID: <body@x>\r\n") == ""


def test_a_message_id_the_endpoint_would_refuse_is_not_reported(tmp_path, dkim_pem, endpoint):
    with _sink(tmp_path, dkim_pem, endpoint.url) as sink:
        with smtplib.SMTP("127.0.0.1", sink.smtp_port, timeout=5) as client:
            odd = b"Subject: x\r\nMessage-ID: <dengan spasi@example>\r\n\r\nIsi.\r\n"
            client.sendmail(f"etle@{DOMAIN}", ["pemilik@example.co.id"], odd)
        _send(sink, to="pemilik@example.co.id", message_id=f"<ok@{DOMAIN}>")
        assert sink.receipts.wait_idle(timeout=10)
        assert sink.count() == 2  # both stored

    # One odd Message-ID must not get the whole batch refused (422) and dropped.
    assert [e["message_id"] for e in endpoint.accepted_events()] == [f"<ok@{DOMAIN}>"]


def test_reporting_is_off_without_a_url_and_from_settings_follows_the_settings(tmp_path, dkim_pem, settings):
    with MailSink(maildir=tmp_path / "m", dkim_private_key=dkim_pem, dkim_selector="s1") as plain:
        assert plain.receipts is None
    settings.CAKRA_SINK = {
        **settings.CAKRA_SINK,
        "MAILDIR": tmp_path / "m2",
        "RECEIPT_URL": "http://127.0.0.1:8000/api/v1/receipts/email/smtp-sink",
        "RECEIPT_SECRET": SECRET,
    }

    configured = MailSink.from_settings(smtp_port=0, http_port=0)

    assert configured.receipts is not None
    assert configured.receipts.url == settings.CAKRA_SINK["RECEIPT_URL"]
