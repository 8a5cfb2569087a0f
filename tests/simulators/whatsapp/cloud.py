"""Helpers of the WhatsApp simulator's tests: a webhook receiver, a client, messages."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cakra.simulators.whatsapp import Template, WhatsAppSimulator

TOKEN = "test-access-token-0123456789"
APP_SECRET = "test-app-secret-0123456789abcdef"
VERIFY_TOKEN = "test-verify-token"
WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_NUMBER = "6281100001500"
VERIFIED_NAME = "ETLE Korlantas Polri"
BUSINESS_NUMBERS = {PHONE_NUMBER_ID: {"display_phone_number": DISPLAY_NUMBER, "verified_name": VERIFIED_NAME}}
TEMPLATES = [
    {
        "name": "etle_notice",
        "language": "id",
        "category": "UTILITY",
        "body": "Pemberitahuan pelanggaran {{1}} untuk kendaraan {{2}}. Periksa keasliannya di {{3}}.",
    },
    {"name": "etle_notice", "language": "en", "category": "UTILITY", "body": "Notice {{1}} for {{2}}: see {{3}}."},
]


class Receiver:
    """Cakra's webhook as the test scripts it: records each request with its
    signature verdict; answers POSTs with ``statuses`` in turn, then 200."""

    def __init__(self, statuses=()):
        self.posts: list[dict[str, Any]] = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                ok = query.get("hub.mode") == ["subscribe"] and query.get("hub.verify_token") == [VERIFY_TOKEN]
                body = query["hub.challenge"][0].encode() if ok else b"forbidden"
                self.send_response(200 if ok else 403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(self.headers.get("X-Hub-Signature-256", ""), expected)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.posts.append({"status": status, "signed": signed, "raw": raw, "body": json.loads(raw)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/webhooks/whatsapp/whatsapp-sim"

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [post for post in self.posts if post["status"] == 200]

    def statuses_received(self) -> list[dict[str, Any]]:
        return [
            status
            for post in self.accepted()
            for entry in post["body"]["entry"]
            for change in entry["changes"]
            for status in change["value"].get("statuses", [])
        ]

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.01)
        raise AssertionError("the receiver did not get what was expected in time")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def simulator_for(receiver: Receiver | None = None, **overrides) -> WhatsAppSimulator:
    options: dict[str, Any] = {
        "access_token": TOKEN,
        "app_secret": APP_SECRET,
        "waba_id": WABA_ID,
        "business_numbers": BUSINESS_NUMBERS,
        "templates": [Template(**template) for template in TEMPLATES],
        "webhook_url": receiver.url if receiver is not None else "",
        "webhook_batch_delay": 0.01,
        "webhook_retry_base": 0.05,
    }
    options.update(overrides)
    return WhatsAppSimulator(**options)


def call(sim, path, payload=None, *, token=TOKEN, method=None, raw=None, headers=None):
    """(status, JSON answer) of one request to the simulator."""
    data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    url = f"{sim.base_url}{path}"
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))  # noqa: S310
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode()


def template_message(to, *parameters, name="etle_notice", language="id", reference=None, **extra):
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": language},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in parameters]}],
        },
    }
    if reference is not None:
        body["biz_opaque_callback_data"] = reference
    body.update(extra)
    return body


def send(sim, body, **kwargs):
    return call(sim, f"/v21.0/{PHONE_NUMBER_ID}/messages", body, **kwargs)
