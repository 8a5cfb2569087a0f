"""The signature on receipt webhooks: what a provider computes to sign a body.

``X-Cakra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
It sits low in the stack so that both sides share one definition: the
receipt endpoint (:mod:`cakra.api.receipts`, which also decides whether a
header is acceptable) and the simulators, which sign what they post as a
real provider would, without importing the web layer they post to.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Cakra-Signature"
SIGNATURE_SCHEME = "v1"


def receipt_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def receipt_signature_header(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Cakra-Signature`` value a provider sends with ``body``."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},{SIGNATURE_SCHEME}={receipt_signature(secret=secret, timestamp=moment, body=body)}"
