"""The process supervisor of `make run` and the queues its worker consumes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings

from cakra.delivery.models import Channel
from cakra.ops.management.commands.run import WORKER_QUEUES, Command, process_commands


def test_every_queue_a_task_is_sent_to_has_a_consumer():
    consumed = set(WORKER_QUEUES.split(","))
    enabled_channels = {channel for channel in settings.CAKRA_ENABLED_CHANNELS if channel in Channel.values}
    assert enabled_channels <= consumed  # deliveries go to queue=<channel>
    assert "evidence" in consumed  # evidence_derive_task
    assert "celery" in consumed  # beat's sweepers use the default queue


def test_run_starts_web_worker_scheduler_and_the_sink():
    commands = process_commands(port=8123, host="127.0.0.1")
    assert set(commands) == {"web", "worker", "scheduler", "sink", "whatsapp"}
    assert "127.0.0.1:8123" in commands["web"]
    assert WORKER_QUEUES in commands["worker"]


# A supervisor like Celery's main process: on SIGTERM it stops its own child
# (with SIGUSR1, its own protocol) and exits 0. The child writes down every
# signal it gets.
LEADER = """
import signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
def stop(*_):
    child.send_signal(signal.SIGUSR1)
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
signal.pause()
"""
CHILD = """
import pathlib, signal, sys, time
def note(number, _):
    with pathlib.Path(sys.argv[1]).open("a") as log:
        log.write(signal.Signals(number).name + "\\n")
    told.append(number)
told = []
signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGUSR1, note)
while signal.SIGUSR1 not in told:  # both handlers run, whichever came first
    time.sleep(0.05)
"""


def test_stopping_signals_each_leader_and_lets_it_stop_its_own_children(tmp_path):
    """Sent to the whole group, SIGTERM reached Celery's pool processes
    directly and the worker never finished its warm shutdown."""
    noted = tmp_path / "signal"
    leader = subprocess.Popen(  # noqa: S603 - fixed argument list
        [sys.executable, "-c", LEADER, CHILD, str(noted)], stdout=subprocess.PIPE, start_new_session=True
    )
    assert leader.stdout is not None
    assert leader.stdout.readline() == b"ready\n"
    time.sleep(0.5)  # the child installs its handlers

    Command()._stop_all({"worker": leader})
    leader.stdout.close()

    assert leader.returncode == 0  # stopped by its own handler, not killed
    assert noted.read_text() == "SIGUSR1\n"  # the child heard from its leader only
    with pytest.raises(ProcessLookupError):
        os.killpg(leader.pid, 0)  # nothing of the group is left
