"""Reading JSON request bodies: strict standard JSON, and a body cap per route.

Django refuses any body above ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (the single
intake route's cap) when ninja first touches ``request.body``. The batch
route carries up to a thousand captures with their images, so it reads its
own body, with its own cap (``CAKRA_MAX_BATCH_BYTES``), and only after the
API key was accepted: an anonymous client never makes the server buffer
more than the ordinary cap.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from ninja.errors import HttpError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a repeated key; refuse the ambiguity.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def strict_json_loads(raw: bytes | str) -> Any:
    """Standard JSON only: no NaN/Infinity, no duplicate keys. Raises ValueError (or RecursionError)."""
    return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)


# Bytes asked of the request stream at a time by json_body_read.
READ_STEP = 1 << 20


def json_body_read(request: HttpRequest, *, max_bytes: int) -> Any:
    """The request's JSON body, at most ``max_bytes`` long.

    Raises RequestDataTooBig (answered 413) for a longer declared body and
    ninja's HttpError 400 (answered as ``malformed_json``) for anything that
    is not strict JSON, the same answers the other routes give. The raw bytes
    are not kept on the request: once parsed, only the parsed value is held.

    The body is read and decoded a megabyte at a time, as json.loads would
    decode it whole (encoding detected from its start, surrogates passed
    through), and only the decoded text is ever held whole: reading it in
    one piece made the server buffer grow to the body's size and then copy
    it, and the decoding copy it once more, three fresh allocations of up to
    a hundred megabytes per request, each page of which the kernel must
    supply (about a third of the intake's system time).
    """
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        msg = "the request body exceeds the batch cap"
        raise RequestDataTooBig(msg)
    try:
        # Django's request stream never reads past the declared length.
        start = request.read(READ_STEP)
        while len(start) < 4:  # noqa: PLR2004 - what detect_encoding looks at (UTF-16/32 need 4)
            more = request.read(READ_STEP)
            if not more:
                break
            start += more
        decoder = codecs.getincrementaldecoder(json.detect_encoding(start))("surrogatepass")
        parts = [decoder.decode(start)]
        del start
        while chunk := request.read(READ_STEP):
            parts.append(decoder.decode(chunk))
        parts.append(decoder.decode(b"", final=True))
        text = "".join(parts)
        del parts
        return strict_json_loads(text)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "Cannot parse request body") from exc
