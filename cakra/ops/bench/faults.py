"""Faults injected into a running pipeline (``cakra bench --faults``), on a schedule drawn from a seed.

Three kinds, as an operator meets them:

- **kills**: a Celery pool process killed with SIGKILL, every few seconds. A
  process killed between claiming a chunk and recording its outcomes leaves
  those deliveries in ``sending``, for the sweeper to take back after its
  lease; whatever the relay had already accepted of that chunk is then sent
  again unless the sending code recorded it.
- **broker restart**: ``rabbitmqctl stop_app``, then ``start_app`` a few
  seconds later; every connection to the broker drops, publishing fails
  meanwhile.
- **database connections terminated**: every backend connected to the
  bench's own database (``pg_terminate_backend``), the driver's included;
  the database must carry the bench's marker (cakra.ops.bench.ownership).

The schedule (which fault, when, which pool process by position) is a pure
function of the seed and the plan, so two runs with one seed inject the same
faults at the same offsets from the first intake request; what each fault
hits depends on the run. Faults stop once every notice is final (a kill
of an idle worker would prove nothing): the run reports the faults it made
and those it did not get to (``--faults-interval`` shortens the schedule).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cakra.ops.bench.ownership import bench_database_connections_terminate
from cakra.ops.bench.supervision import process_children

# Kills are spread between these fractions of the mean interval apart.
KILL_SPREAD = (0.5, 1.5)
# Target positions are drawn from this range and taken modulo the number of
# pool processes alive at the kill.
TARGET_RANGE = 1 << 16
RABBITMQCTL_TIMEOUT_SECONDS = 120


class FaultKind(StrEnum):
    KILL = "kill"
    BROKER_STOP = "broker_stop"
    BROKER_START = "broker_start"
    DATABASE_TERMINATE = "database_terminate"


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    seed: int = 0
    kills: int = 25
    kill_interval_seconds: float = 2.0  # mean time between two kills
    first_kill_seconds: float = 3.0  # after the first intake request
    broker: bool = True
    broker_down_seconds: float = 10.0
    database: bool = True
    # The sweeper's pending and sending leases for the system under test, so
    # that what the faults strand is taken back within the run.
    lease_seconds: float = 30.0

    def env(self) -> dict[str, str]:
        """Settings for the worker and scheduler processes (cakra.config.settings, CAKRA_SWEEPER)."""
        lease = str(self.lease_seconds)
        return {
            "CAKRA_SWEEP_PENDING_LEASE_SECONDS": lease,
            "CAKRA_SWEEP_SENDING_LEASE_SECONDS": lease,
            "CAKRA_SWEEP_RETRY_MARGIN_SECONDS": lease,
        }


@dataclass(frozen=True, slots=True)
class FaultEvent:
    at: float  # seconds after the first intake request
    kind: FaultKind
    target: int = 0  # kills: position among the live pool processes (by pid), modulo their number


def fault_schedule(plan: FaultPlan) -> list[FaultEvent]:
    """The run's faults in time order, from ``plan.seed`` alone.

    Kills come first from the seed's sequence, then the broker's and the
    database's moments, drawn whether or not they are injected: turning the
    broker restart off leaves the kills and the database fault where they
    were. The broker is stopped between a fifth and a third of the way
    through the kill window and the database connections terminated
    between two and three fifths: early, so that both fall while the
    pipeline still has work and kills go on around them.
    """
    rng = random.Random(plan.seed)  # noqa: S311 - a reproducible schedule, not security
    low, high = KILL_SPREAD
    events: list[FaultEvent] = []
    at = plan.first_kill_seconds
    for n in range(plan.kills):
        if n:
            at += rng.uniform(low * plan.kill_interval_seconds, high * plan.kill_interval_seconds)
        events.append(FaultEvent(at=at, kind=FaultKind.KILL, target=rng.randrange(TARGET_RANGE)))
    start = plan.first_kill_seconds
    span = max(at - start, plan.kill_interval_seconds)
    broker_at = rng.uniform(start + span / 5, start + span / 3)
    database_at = rng.uniform(start + 2 * span / 5, start + 3 * span / 5)
    if plan.broker:
        events.append(FaultEvent(at=broker_at, kind=FaultKind.BROKER_STOP))
        events.append(FaultEvent(at=broker_at + plan.broker_down_seconds, kind=FaultKind.BROKER_START))
    if plan.database:
        events.append(FaultEvent(at=database_at, kind=FaultKind.DATABASE_TERMINATE))
    return sorted(events, key=lambda event: event.at)


def rabbitmq_app(action: str) -> None:
    """``rabbitmqctl stop_app`` or ``start_app`` on this machine's broker."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        msg = "rabbitmqctl is not on PATH"
        raise RuntimeError(msg)
    subprocess.run(  # noqa: S603 - a fixed command
        [rabbitmqctl, "-q", action], check=True, capture_output=True, timeout=RABBITMQCTL_TIMEOUT_SECONDS
    )


@dataclass
class FaultReport:
    kills: int = 0
    kills_missed: int = 0  # no pool process alive at that moment
    broker_restarts: int = 0
    database_connections_terminated: int = 0
    # Faults of the schedule still to come when the run ended (every notice final, or the deadline), by kind.
    not_applied: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class FaultInjector:
    """Applies a schedule from its own thread, timed from :meth:`start`.

    :meth:`finish` stops it and, whatever happened, starts the broker again
    if this injector stopped it: the broker is shared with everything else
    on the machine.
    """

    def __init__(
        self,
        *,
        schedule: list[FaultEvent],
        worker_pid: int,
        database_settings: Mapping[str, Any],
        log: Callable[[str], None],
    ) -> None:
        self.schedule = schedule
        self.worker_pid = worker_pid
        self.database_settings = dict(database_settings)
        self.log = log
        self.report = FaultReport()
        self._stop = threading.Event()
        self._broker_stopped = False
        self._thread = threading.Thread(target=self._run, name="bench-faults", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def finish(self) -> FaultReport:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._broker_stopped:
            try:
                self._broker("start_app")
            except Exception:
                self.log("  faults: THE BROKER IS STILL STOPPED: run `rabbitmqctl start_app`")
                raise
        return self.report

    def _run(self) -> None:
        for position, event in enumerate(self.schedule):
            if self._stop.wait(max(0.0, self._started + event.at - time.monotonic())):
                self.report.not_applied = dict(Counter(str(later.kind) for later in self.schedule[position:]))
                return
            try:
                self._apply(event)
            except Exception as exc:  # noqa: BLE001 - reported in the result; the run goes on
                self.report.errors.append(f"{event.kind} at {event.at:.1f}s: {type(exc).__name__}: {exc}")

    def _apply(self, event: FaultEvent) -> None:
        if event.kind == FaultKind.KILL:
            killed = self._kill(event.target)
            what = f"pool process {killed} killed" if killed else "no pool process alive to kill"
            self.log(f"  faults: {event.at:6.1f}s  {what}")
        elif event.kind == FaultKind.BROKER_STOP:
            self.log(f"  faults: {event.at:6.1f}s  broker stopped")
            self._broker("stop_app")
        elif event.kind == FaultKind.BROKER_START:
            if self._broker_stopped:
                self._broker("start_app")
                self.log(f"  faults: {event.at:6.1f}s  broker started")
        else:
            terminated = bench_database_connections_terminate(settings_dict=self.database_settings)
            self.report.database_connections_terminated += terminated
            self.log(f"  faults: {event.at:6.1f}s  {terminated} database connections terminated")

    def _kill(self, target: int) -> int | None:
        """SIGKILL to the pool process at ``target`` (modulo their number); its pid, or None if none was alive."""
        pool = sorted(process_children().get(self.worker_pid, []))
        if not pool:
            self.report.kills_missed += 1
            return None
        pid = pool[target % len(pool)]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it exited between the scan and the kill
            self.report.kills_missed += 1
            return None
        self.report.kills += 1
        return pid

    def _broker(self, action: str) -> None:
        # Marked stopped before the call: a stop_app that fails halfway must still be undone.
        if action == "stop_app":
            self._broker_stopped = True
        rabbitmq_app(action)
        if action == "start_app":
            self._broker_stopped = False
            self.report.broker_restarts += 1
