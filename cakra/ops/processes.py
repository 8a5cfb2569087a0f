"""Stopping the process groups that ``cakra run`` and ``cakra bench`` supervise."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable


def process_groups_stop(leaders: Iterable[subprocess.Popen[bytes]], *, grace_seconds: float) -> None:
    """Stop each leader (started with ``start_new_session=True``) and then
    whatever is left of its process group.

    SIGTERM goes to each leader only: gunicorn's arbiter and Celery's main
    process stop their own children in order. Sent to the whole group, it
    also hit Celery's pool processes directly, and the worker then never
    finished its warm shutdown (killed after the grace period instead of
    stopping in a few seconds). After ``grace_seconds`` in all, anything of a
    group still alive (the leader past its grace, or an orphan it left
    behind) is killed, so nothing outlives the command.
    """
    leaders = list(leaders)
    for leader in leaders:
        if leader.poll() is None:
            leader.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for leader in leaders:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
