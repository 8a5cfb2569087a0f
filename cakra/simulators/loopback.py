"""Where simulators listen and whom they talk to: this machine only.

A simulator stands in for a third party on a developer's machine or the
benchmark's. It holds what the system sent out (messages, addresses), so it
must be reachable from this machine only and must never post what it holds
to another host, whatever its configuration says.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"
# Host names of URLs a simulator may post to (its provider webhooks).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
