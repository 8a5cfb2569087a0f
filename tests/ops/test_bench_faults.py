"""The fault schedule of ``cakra bench --faults`` and the kills it makes (cakra.ops.bench.faults)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from cakra.ops.bench.faults import FaultEvent, FaultInjector, FaultKind, FaultPlan, fault_schedule
from cakra.ops.bench.supervision import process_children


def _kinds(schedule: list[FaultEvent]) -> list[FaultKind]:
    return [event.kind for event in schedule]


def test_one_seed_gives_one_schedule_and_another_seed_another():
    assert fault_schedule(FaultPlan(seed=7)) == fault_schedule(FaultPlan(seed=7))
    assert fault_schedule(FaultPlan(seed=7)) != fault_schedule(FaultPlan(seed=8))


def test_the_schedule_holds_the_planned_faults_while_the_kills_go_on():
    plan = FaultPlan(seed=3, kills=25, kill_interval_seconds=3.0, first_kill_seconds=5.0, broker_down_seconds=10.0)
    schedule = fault_schedule(plan)

    assert [event.at for event in schedule] == sorted(event.at for event in schedule)
    kills = [event for event in schedule if event.kind == FaultKind.KILL]
    assert len(kills) == 25
    assert kills[0].at == 5.0
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(kills)]
    assert all(1.5 <= gap <= 4.5 for gap in gaps)  # "every few seconds": half to one and a half intervals
    assert len({event.target for event in kills}) > 1  # not the same pool position every time
    (stop,) = [event for event in schedule if event.kind == FaultKind.BROKER_STOP]
    (start,) = [event for event in schedule if event.kind == FaultKind.BROKER_START]
    (terminate,) = [event for event in schedule if event.kind == FaultKind.DATABASE_TERMINATE]
    assert start.at == pytest.approx(stop.at + 10.0)
    assert kills[0].at < stop.at < terminate.at < kills[-1].at


def test_leaving_the_broker_alone_moves_no_other_fault():
    with_broker = fault_schedule(FaultPlan(seed=11))
    without = fault_schedule(FaultPlan(seed=11, broker=False))

    assert FaultKind.BROKER_STOP not in _kinds(without)
    assert FaultKind.BROKER_START not in _kinds(without)
    assert without == [
        event for event in with_broker if event.kind not in {FaultKind.BROKER_STOP, FaultKind.BROKER_START}
    ]
    assert _kinds(fault_schedule(FaultPlan(seed=11, broker=False, database=False))) == [FaultKind.KILL] * 25


# Stands in for Celery's main process: three children (its pool), and it
# stays up when they die.
LEADER = """
import subprocess, sys, time
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def leader():
    process = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE)  # noqa: S603
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    children = sorted(process_children().get(process.pid, []))
    yield process, children
    for pid in process_children().get(process.pid, []):
        os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()
    process.stdout.close()


def _running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are neither gone nor dead awaiting their parent (zombies)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def test_kills_hit_pool_processes_of_the_worker_by_position_and_spare_the_worker(leader):
    process, children = leader
    assert len(children) == 3
    schedule = [
        FaultEvent(at=0.0, kind=FaultKind.KILL, target=4),  # 4 % 3: the second by pid
        FaultEvent(at=0.2, kind=FaultKind.KILL, target=0),  # of the two left, the first
    ]
    injector = FaultInjector(schedule=schedule, worker_pid=process.pid, database_settings={}, log=lambda _: None)

    injector.start()
    deadline = time.monotonic() + 10
    while injector.report.kills < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    report = injector.finish()

    assert report.kills == 2
    assert report.kills_missed == 0
    assert report.errors == []
    # SIGKILL takes effect a moment after kill() returns.
    while len(_running(children)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(children) == [children[2]]
    assert process.poll() is None  # the worker itself is never killed


def test_faults_stop_when_the_run_is_over(leader):
    process, children = leader
    later = [FaultEvent(at=30.0, kind=FaultKind.KILL, target=0)]
    injector = FaultInjector(schedule=later, worker_pid=process.pid, database_settings={}, log=lambda _: None)

    injector.start()
    started = time.monotonic()
    report = injector.finish()

    assert time.monotonic() - started < 5
    assert report.kills == 0
    assert report.not_applied == {"kill": 1}
    assert _running(children) == children


def test_faults_are_refused_without_a_database_the_bench_creates(settings, tmp_path):
    """Terminating connections is only for a database the bench made (and marks) for the run."""
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    with pytest.raises(CommandError, match="--faults needs PostgreSQL and --create-database"):
        call_command("bench", "--notices", "1", "--faults")
    assert not (tmp_path / "evidence").exists()  # refused before anything was claimed or made
