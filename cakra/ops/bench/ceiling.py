"""The loopback ceiling: what a bare client gets from a simulator, measured the same way for every channel.

The pipeline's rate means little on its own on a shared, noisy machine, so
each run also measures the most the same machine could do for that channel:
the channel's own adapter sending to the same simulator from as many
processes as the worker has, with no database and no queue. The channel
supplies the client (``channels/<name>.py``); this module times it.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import django
from django.db import connections

# How long a process of the bare client waits for the others before it starts anyway.
BARRIER_SECONDS = 120


class BareClient(Protocol):
    """A channel's adapter set up in one process, with its session to the simulator open."""

    def send(self, n: int) -> None:
        """Send the ``n``-th message of the measurement (a distinct message each ``n``)."""


_client: BareClient | None = None


def _process_start(make_client: Callable[[], BareClient], ready: Any) -> None:
    """Once per process, before the clock starts: Django, the client (its
    session open), then a wait for the other processes, so that all of them
    send at once."""
    django.setup()
    global _client  # noqa: PLW0603 - one client per pool process
    logging.getLogger().setLevel(logging.WARNING)  # one line per message would swamp the run's output
    _client = make_client()
    ready.wait(timeout=BARRIER_SECONDS)


def _send_share(args: tuple[int, int]) -> tuple[int, float, float]:
    """One process's share of the messages: (sent, start, end) by the wall clock."""
    first, count = args
    assert _client is not None  # noqa: S101 - set by _process_start in this process
    started = time.time()
    for n in range(first, first + count):
        _client.send(n)
    return count, started, time.time()


def bare_client_rate(*, messages: int, processes: int, make_client: Callable[[], BareClient]) -> float:
    """Messages per second of ``processes`` bare clients sending ``messages`` between them.

    Timed from the first process's first message to the last one's last:
    process start-up, Django set-up and the first connection are excluded,
    as the pipeline's worker has them behind it too.
    """
    per = max(1, messages // processes)
    jobs = [(i * per, per) for i in range(processes)]
    # Forked children must not share this process's database connections.
    connections.close_all()
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes)
    with ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=_process_start, initargs=(make_client, ready)
    ) as pool:
        # The pool starts its processes (and runs the initializer) as jobs
        # arrive; each job reads its own clock after that.
        results = list(pool.map(_send_share, jobs))
    sent = sum(count for count, _, _ in results)
    return sent / (max(end for _, _, end in results) - min(start for _, start, _ in results))
