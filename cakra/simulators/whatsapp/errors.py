"""The Cloud API's error answers: Graph API envelopes with Meta's codes and HTTP statuses.

Meta's table pairs each ``code`` with the HTTP status it is returned with;
most are 400 (the throughput and pair-rate limits included), a missing
template is 404, an internal error 500 and a bad token 401. Clients are told
to act on ``code``, never on the status or the message text, so the
simulator keeps all three as Meta documents them.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GraphError:
    code: int
    http_status: int
    title: str
    type: str = "OAuthException"
    subcode: int | None = None


ACCESS_TOKEN_INVALID = GraphError(190, 401, "Invalid OAuth access token - Cannot parse access token")
INVALID_PARAMETER = GraphError(100, 400, "Invalid parameter")
UNKNOWN_PATH = GraphError(2500, 400, "Unknown path components")
UNKNOWN_OBJECT = GraphError(
    100,
    400,
    "Unsupported request - method type or object does not exist",
    type="GraphMethodException",
    subcode=33,
)
TEMPLATE_EXISTS = GraphError(100, 400, "Invalid parameter", subcode=2388024)
RATE_LIMIT_HIT = GraphError(130429, 400, "Rate limit hit")
SOMETHING_WENT_WRONG = GraphError(131000, 500, "Something went wrong")
MESSAGE_UNDELIVERABLE = GraphError(131026, 400, "Message undeliverable")
REENGAGEMENT_MESSAGE = GraphError(131047, 400, "Re-engagement message")
PAIR_RATE_LIMIT_HIT = GraphError(131056, 400, "(Business Account, Consumer Account) pair rate limit hit")
TEMPLATE_PARAMETER_COUNT = GraphError(132000, 400, "Number of parameters does not match the expected number of params")
TEMPLATE_MISSING = GraphError(132001, 404, "Template name does not exist in the translation")
TEMPLATE_PARAMETER_FORMAT = GraphError(132018, 400, "There was an issue with the parameters in your template.")


def fbtrace_id() -> str:
    """An opaque request id like Meta's (logged by clients when they ask for support)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(17)).decode().rstrip("=")


def error_envelope(error: GraphError, details: str) -> dict[str, Any]:
    """The body Meta answers ``error`` with: ``{"error": {...}}``."""
    token = error.code == ACCESS_TOKEN_INVALID.code  # Graph's own auth error: no "(#code)", no error_data
    body: dict[str, Any] = {
        "message": error.title if token else f"(#{error.code}) {error.title}",
        "type": error.type,
        "code": error.code,
    }
    if not token:
        body["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if error.subcode is not None:
        body["error_subcode"] = error.subcode
    body["fbtrace_id"] = fbtrace_id()
    return {"error": body}


def webhook_error(error: GraphError, details: str) -> dict[str, Any]:
    """One entry of a ``failed`` status's ``errors[]`` (asynchronous errors)."""
    return {
        "code": error.code,
        "title": error.title,
        "message": error.title,
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }
