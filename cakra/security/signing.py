"""The signature on receipt webhooks: what a provider computes to sign a body.

``X-Cakra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
It sits low in the stack so that both sides share one definition: the
receipt endpoint (:mod:`cakra.api.receipts`, which also decides whether a
header is acceptable) and the simulators, which sign what they post as a
real provider would, without importing the web layer they post to. The Twilio-style signature of
the SMS gateway's status callbacks is here for the same reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Cakra-Signature"
SIGNATURE_SCHEME = "v1"


def receipt_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def receipt_signature_header(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Cakra-Signature`` value a provider sends with ``body``."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},{SIGNATURE_SCHEME}={receipt_signature(secret=secret, timestamp=moment, body=body)}"


# --- Twilio-style status callbacks (cakra.api.sms_callbacks, the SMS gateway simulator) ---
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"


def twilio_signature(*, auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` of a form-encoded POST: base64 HMAC-SHA1, under the
    account's auth token, of the full URL as called (scheme, host, port, path
    and query) followed by each POST parameter's name and value, sorted by name."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
