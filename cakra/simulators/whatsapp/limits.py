"""The Cloud API's two send limits: messages per second per business number
(a token bucket, error 130429) and how often one recipient may be written to
(the pair rate, error 131056). Both measure time on :mod:`cakra.clock`, so a
test moves time instead of sleeping.
"""

from __future__ import annotations

import threading

from cakra import clock

# Pair-rate entries older than this many windows are forgotten (the table
# would otherwise hold every recipient of a benchmark run).
_PAIR_PRUNE_EVERY = 10_000


class ThroughputLimit:
    """``rate`` messages per second per business number, in bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # phone_number_id -> (tokens, at)

    def take(self, phone_number_id: str) -> bool:
        """Spend one message of ``phone_number_id``'s allowance; False when it is used up."""
        if self._rate <= 0:
            return True
        now = clock.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(phone_number_id, (self._rate, now))
            tokens = min(self._rate, tokens + (now - at) * self._rate)
            if tokens < 1:
                self._buckets[phone_number_id] = (tokens, now)
                return False
            self._buckets[phone_number_id] = (tokens - 1, now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()


class PairRateLimit:
    """At most one message per ``interval`` seconds from one business number to one recipient (0: off)."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

    def take(self, phone_number_id: str, wa_id: str) -> bool:
        if self._interval <= 0:
            return True
        now = clock.monotonic()
        with self._lock:
            last = self._last.get((phone_number_id, wa_id))
            if last is not None and now - last < self._interval:
                return False
            self._last[(phone_number_id, wa_id)] = now
            if len(self._last) % _PAIR_PRUNE_EVERY == 0:
                self._last = {key: at for key, at in self._last.items() if now - at < self._interval}
            return True

    def reset(self) -> None:
        with self._lock:
            self._last.clear()
