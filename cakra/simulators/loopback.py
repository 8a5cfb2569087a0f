"""Where simulators listen and whom they talk to: this machine only.

A simulator stands in for a third party on a developer's machine or the
benchmark's. It holds what the system sent out (messages, addresses), so it
must be reachable from this machine only and must never post what it holds
to another host, whatever its configuration says.
"""

from __future__ import annotations

from urllib.parse import parse_qs

LOOPBACK = "127.0.0.1"
# Host names of URLs a simulator may post to (its provider webhooks).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Host names a simulator's pages answer to: a web page elsewhere that
# rebinds its own domain to 127.0.0.1 must not read what the simulator holds.
PAGE_HOST_NAMES = frozenset({LOOPBACK, "localhost"})
# What the simulators' pages may load: their own inline style, nothing else.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
# Sent with every answer of a simulator's web server (pages, JSON, errors).
PAGE_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def host_header_is_loopback(host_header: str) -> bool:
    """Whether a request's ``Host`` (with or without a port) is a loopback name."""
    name, _, port = host_header.rpartition(":")
    return (name if port.isascii() and port.isdigit() else host_header) in PAGE_HOST_NAMES


def list_limit(query: str, *, default: int, maximum: int) -> int | None:
    """``?limit=N`` of a list page: ``default`` when absent, None when not a whole number in 1..``maximum``."""
    values = parse_qs(query).get("limit")
    if not values:
        return default
    value = values[-1]
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= maximum:
        return None
    return int(value)
