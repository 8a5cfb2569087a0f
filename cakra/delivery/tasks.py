"""Delivery tasks: thin. Ids in, one service call, its answer out.

One queue per channel (:mod:`cakra.delivery.dispatch` publishes to
``queue=<channel>`` by these tasks' names); payloads are delivery ids only,
the database holds everything else. Nothing imports this module to enqueue.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from cakra.delivery.dispatch import (
    INBOUND_REPLY_TASK,
    SEND_TASK,
    SWEEP_STUCK_TASK,
    SWEEP_UNCONFIRMED_TASK,
    retry_countdown,
)
from cakra.delivery.inbound import inbound_reply_send
from cakra.delivery.sending import deliveries_send_and_schedule
from cakra.delivery.sweeper import deliveries_sweep_stuck, deliveries_sweep_unconfirmed


@shared_task(name=SEND_TASK, bind=True, acks_late=True, ignore_result=True)
def delivery_send_batch_task(self: Task[[list[str]], None], delivery_ids: list[str]) -> None:
    """Send a batch of deliveries of one channel.

    With acks_late this message is acknowledged when the task returns, after
    the retries it made are published: a worker dying in between leaves
    both, and the claim lets only one of them send each delivery. What a
    later send must do again goes back to the queue this message came from
    (the channel's queue, unless operators route differently).
    """
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    deliveries_send_and_schedule(delivery_ids=delivery_ids, queue=queue)


# --- Sweeper (Celery beat; see cakra.delivery.sweeper) ------------------------
# On the default queue, beside the other scheduled work. Each run is bounded
# and idempotent, and two runs at once do not handle the same row twice, so
# an overlapping or redelivered sweep is harmless; the beat entries let a
# sweep that could not start within its interval expire instead of piling up.


@shared_task(name=SWEEP_STUCK_TASK, acks_late=True, ignore_result=True)
def delivery_sweep_stuck_task() -> dict[str, Any]:
    """Re-enqueue deliveries whose trigger was lost (pending, sending, failed_temporary)."""
    return deliveries_sweep_stuck().as_dict()


@shared_task(name=SWEEP_UNCONFIRMED_TASK, acks_late=True, ignore_result=True)
def delivery_sweep_unconfirmed_task() -> int:
    """Time out sent deliveries not confirmed by their region's cut-off and fall back."""
    return deliveries_sweep_unconfirmed()


# --- Automatic answers to inbound WhatsApp messages (cakra.delivery.inbound) ---
INBOUND_REPLY_MAX_RETRIES = 3


@shared_task(name=INBOUND_REPLY_TASK, bind=True, acks_late=True, ignore_result=True)
def inbound_reply_send_task(self: Task[[str], None], inbound_id: str) -> None:
    """Send the automatic answer to one inbound message; retried a few times
    when the provider fails for now (the 24-hour window is checked each time)."""
    retries = int(self.request.retries or 0)
    outcome = inbound_reply_send(inbound_id=inbound_id, final=retries >= INBOUND_REPLY_MAX_RETRIES)
    if outcome.retry:
        raise self.retry(
            countdown=retry_countdown(retries=retries, retry_after=outcome.retry_after),
            max_retries=INBOUND_REPLY_MAX_RETRIES,
        )
