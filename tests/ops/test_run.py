"""The process supervisor of `make run` and the queues its worker consumes."""

from __future__ import annotations

from django.conf import settings

from cakra.delivery.models import Channel
from cakra.ops.management.commands.run import WORKER_QUEUES, process_commands


def test_every_queue_a_task_is_sent_to_has_a_consumer():
    consumed = set(WORKER_QUEUES.split(","))
    enabled_channels = {channel for channel in settings.CAKRA_ENABLED_CHANNELS if channel in Channel.values}
    assert enabled_channels <= consumed  # deliveries go to queue=<channel>
    assert "evidence" in consumed  # evidence_derive_task
    assert "celery" in consumed  # beat's sweepers use the default queue


def test_run_starts_web_worker_scheduler_and_the_sink():
    commands = process_commands(port=8123, host="127.0.0.1")
    assert set(commands) == {"web", "worker", "scheduler", "sink"}
    assert "127.0.0.1:8123" in commands["web"]
    assert WORKER_QUEUES in commands["worker"]
