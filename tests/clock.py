"""A clock that tests move by hand, in place of the system clock of :mod:`cakra.clock`.

The ``clock`` fixture (tests/conftest.py) freezes it for one test; a test
that must first let other processes run on real time freezes it later with
:func:`frozen_clock`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cakra import clock


class ManualClock:
    """Stands still until moved. :meth:`advance` moves it forward, and a
    ``clock.sleep`` of the code under test moves it by the time asked
    instead of waiting. It starts at the real time, so that it agrees with
    the timestamps rows were given on the system clock before it froze."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._time = time.time()
        self._monotonic = time.monotonic()

    def time(self) -> float:
        with self._lock:
            return self._time

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass at once."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._time += seconds
            self._monotonic += seconds

    def advance_to_window_start(self, seconds: int) -> None:
        """Move to the start of the next fixed window of ``seconds`` (the next
        whole multiple of ``seconds`` since the epoch), exactly."""
        with self._lock:
            start = math.ceil(self._time / seconds) * seconds
            self._monotonic += start - self._time
            self._time = start


@contextmanager
def frozen_clock() -> Iterator[ManualClock]:
    """Every reader of :mod:`cakra.clock` in this process sees a
    :class:`ManualClock` until the block ends."""
    manual = ManualClock()
    previous = clock.source_set(manual)
    try:
        yield manual
    finally:
        clock.source_set(previous)
