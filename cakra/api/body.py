"""Reading JSON request bodies: declared JSON, strict standard JSON, and a body cap per route.

Every route that reads a body first checks that it is declared
``application/json`` (``json_content_type_check``; 415 otherwise), so a form
post or a text body is refused as what it says it is, not parsed as JSON
because its bytes happen to be JSON (ASVS V13.1.5, V13.2.5).

Django refuses any body above ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (the single
intake route's cap) when ninja first touches ``request.body``. The batch
route carries up to a thousand captures with their images, so it reads its
own body, with its own cap (``CAKRA_MAX_BATCH_BYTES``), and only after the
API key was accepted: an anonymous client never makes the server buffer
more than the ordinary cap.
"""

from __future__ import annotations

from typing import Any

import jiter
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils.http import parse_header_parameters
from ninja.errors import HttpError

from cakra.security.identifiers import ascii_int_parse

JSON_MEDIA_TYPE = "application/json"
# RFC 8259: JSON exchanged between systems is UTF-8, and it is parsed as such.
JSON_CHARSET = "utf-8"


class UnsupportedMediaTypeError(Exception):
    """The body is not declared as JSON (answered 415)."""


def json_content_type_check(request: HttpRequest) -> None:
    """Raise UnsupportedMediaTypeError unless a request that carries a body
    declares ``Content-Type: application/json`` (a ``charset`` parameter, if
    any, must be UTF-8). Called before the body is parsed. A request without
    a body has no type to declare: it gets the answer for a missing body."""
    announced = ascii_int_parse(request.META.get("CONTENT_LENGTH") or "") or 0
    if announced == 0 and "HTTP_TRANSFER_ENCODING" not in request.META:
        return
    media_type, parameters = parse_header_parameters(str(request.META.get("CONTENT_TYPE") or ""))
    charset = parameters.get("charset", JSON_CHARSET).lower()
    if media_type != JSON_MEDIA_TYPE or charset != JSON_CHARSET:
        msg = "the body is not declared as application/json"
        raise UnsupportedMediaTypeError(msg)


def strict_json_loads(raw: bytes | str) -> Any:
    """Standard JSON only: UTF-8, no NaN/Infinity, no duplicate keys (two
    parsers may keep different copies of a repeated key: the ambiguity is
    refused). Raises ValueError.

    Parsed by jiter, the parser pydantic-core is built on, from the bytes:
    several times faster than decoding a large batch body to text and
    parsing that with the standard library, and no decoded copy of the body
    is ever made (docs/performance.md, "Measured choices").
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    # cache_mode="keys": the keys repeat across a batch's items; the values
    # (photos, ids) do not, and caching them would only cost memory.
    return jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")


# Bytes asked of the request stream at a time by json_body_read.
READ_STEP = 1 << 20


def json_body_read(request: HttpRequest, *, max_bytes: int) -> Any:
    """The request's JSON body, at most ``max_bytes`` long.

    Raises UnsupportedMediaTypeError (answered 415) before reading a body not
    declared as JSON, RequestDataTooBig (answered 413) for a longer body and ninja's
    HttpError 400 (answered as ``malformed_json``) for anything that is not
    strict JSON, the same answers the other routes give. The raw bytes are
    not kept on the request: once parsed, only the parsed value is held.

    A body of declared length is read in one call; one without (chunked
    transfer encoding) a megabyte at a time, counted against the cap as it
    arrives.
    """
    json_content_type_check(request)
    # int() would also read " 12", "1_2", "-3" and "١٢"; a length is ASCII digits.
    declared = ascii_int_parse(request.META.get("CONTENT_LENGTH") or "") or 0
    if declared > max_bytes:
        msg = "the request body exceeds the batch cap"
        raise RequestDataTooBig(msg)
    # A body of declared length in one read: the server assembles it once.
    # Reading it a megabyte at a time and joining the pieces cost ~25% more
    # CPU per body (each piece copied out of the server's buffer, then all
    # of them once more; measured with 40 MB bodies under gunicorn). Django's
    # stream never reads past the declared length; a client that sends less
    # gets a body that does not parse.
    body = request.read(declared) if declared > 0 else _read_undeclared(request, max_bytes=max_bytes)
    try:
        return strict_json_loads(body)
    except ValueError as exc:
        raise HttpError(400, "Cannot parse request body") from exc


def _read_undeclared(request: HttpRequest, *, max_bytes: int) -> bytes:
    """A body of unknown length, a megabyte at a time, refused past ``max_bytes``."""
    parts: list[bytes] = []
    received = 0
    while chunk := request.read(READ_STEP):
        received += len(chunk)
        if received > max_bytes:
            msg = "the request body exceeds the batch cap"
            raise RequestDataTooBig(msg)
        parts.append(chunk)
    return b"".join(parts)
