"""The clock that time windows are measured by.

Rate limits, API-key quotas and their leases, provider health windows and
the sweeper's leases ask here what time it is, and a worker waiting for a
token sleeps here, instead of calling the ``time`` module directly. The
source is the system clock; it is replaceable (:func:`source_set`) so that a
test can move time forward past a window instead of sleeping through it,
which costs the run nothing and cannot be outrun by a slow machine.

Only windows go through it. Timestamps written on rows (Django's
``timezone.now``), the time budget of a provider session and durations
measured for logs stay on the system clock: nothing waits on them.
"""

from __future__ import annotations

import time as system_time
from datetime import UTC, datetime
from typing import Protocol


class ClockSource(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (``time.time``)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (``time.monotonic``)."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (``time.sleep``)."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return system_time.time()

    def monotonic(self) -> float:
        return system_time.monotonic()

    def sleep(self, seconds: float) -> None:
        system_time.sleep(seconds)


_source: ClockSource = SystemClock()


def time() -> float:
    """Seconds since the epoch."""
    return _source.time()


def now() -> datetime:
    """The current moment, timezone-aware (UTC), as ``timezone.now()`` gives it."""
    return datetime.fromtimestamp(_source.time(), tz=UTC)


def monotonic() -> float:
    """Seconds on a clock that never goes back: for deadlines and intervals."""
    return _source.monotonic()


def sleep(seconds: float) -> None:
    """Wait ``seconds`` for a window to pass."""
    _source.sleep(seconds)


def source_set(source: ClockSource) -> ClockSource:
    """Read the time from ``source``, in every thread of this process; returns
    the source it replaces, to be put back."""
    global _source
    previous, _source = _source, source
    return previous
