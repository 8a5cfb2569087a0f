"""Publishing delivery work: the one module that talks to the broker.

Every channel goes through here. A send message carries delivery ids only
(the database holds the rest) and goes to the channel's queue; retries and
rate-limit waits go back with a countdown drawn from the backoff policy
below. Work is published **by task name**, so nothing imports the tasks
module to enqueue (the tasks import the services, never the reverse), and
new triggers are published only after the transaction that made them
commits (:func:`deliveries_enqueue_on_commit`).

A lost message loses nothing: the sweeper finds deliveries whose trigger
never arrived and publishes them again through this module.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import ChannelError

logger = structlog.get_logger(__name__)

# Registered task names (cakra.delivery.tasks declares its tasks with these).
SEND_TASK = "cakra.delivery.tasks.delivery_send_batch_task"
SWEEP_STUCK_TASK = "cakra.delivery.tasks.delivery_sweep_stuck_task"
SWEEP_UNCONFIRMED_TASK = "cakra.delivery.tasks.delivery_sweep_unconfirmed_task"
INBOUND_REPLY_TASK = "cakra.delivery.tasks.inbound_reply_send_task"

# Deliveries per send message when settings do not say (CAKRA_SEND_BATCH):
# enough to spread a commit, an audit append and a provider session over many
# messages, few enough that a chunk is sent in well under a second.
DEFAULT_SEND_BATCH = 100

# Attempts per delivery: the first and eight retries.
MAX_ATTEMPTS = 9
RETRY_BACKOFF_BASE_SECONDS = 5
RETRY_BACKOFF_MIN_SECONDS = 1.0
RETRY_BACKOFF_MAX_SECONDS = 600
DEFER_JITTER_MAX_SECONDS = 5.0

# A send message to publish: (queue, delivery ids, countdown in seconds).
SendBatch = tuple[str, list[str], float]


def send_batch_size() -> int:
    return max(1, int(getattr(settings, "CAKRA_SEND_BATCH", DEFAULT_SEND_BATCH)))


def retry_countdown(*, retries: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter and a cap; never sooner than the provider asked.

    The ceiling doubles with each retry (5 s, 10 s, 20 s, … up to
    RETRY_BACKOFF_MAX_SECONDS) and the countdown is drawn uniformly below it
    ("full jitter"): deliveries that failed together, say in a relay outage,
    come back spread over the interval instead of in one wave that knocks the
    relay over again. The 1 s floor keeps a retry from running at once. The
    provider's retry-after is a floor too, itself capped, so no countdown ever
    exceeds the cap (the sweeper's lease for failed_temporary relies on that).
    """
    ceiling = min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_BASE_SECONDS * 2**retries)
    drawn = (rng or random).uniform(RETRY_BACKOFF_MIN_SECONDS, ceiling)
    return max(drawn, min(retry_after or 0.0, RETRY_BACKOFF_MAX_SECONDS))


def defer_countdown(*, wait: float, rng: random.Random | None = None) -> float:
    """When to come back for a rate-limited send: after ``wait``, plus up to
    half of it (at most DEFER_JITTER_MAX_SECONDS) so that the deliveries
    deferred together do not all return in the same instant."""
    return wait + (rng or random).uniform(0, min(wait / 2, DEFER_JITTER_MAX_SECONDS))


def publishing_inline() -> bool:
    """Whether tasks run in the publisher's process (CELERY_TASK_ALWAYS_EAGER):
    there is then no broker to hold a countdown."""
    return bool(current_app.conf.task_always_eager)


def deliveries_batched(triggers: Iterable[tuple[str, str]]) -> list[SendBatch]:
    """(delivery id, channel) pairs as send messages to publish at once: one
    per channel and ``CAKRA_SEND_BATCH`` deliveries, on the channel's queue."""
    by_channel: dict[str, list[str]] = {}
    for delivery_id, channel in triggers:
        by_channel.setdefault(channel, []).append(delivery_id)
    size = send_batch_size()
    return [
        (channel, ids[start : start + size], 0.0)
        for channel, ids in by_channel.items()
        for start in range(0, len(ids), size)
    ]


def deliveries_publish(batches: Sequence[SendBatch]) -> None:
    """Publish send messages (ids only) on one broker connection. A broker
    failure is raised; nothing is lost by it: the deliveries wait in pending
    or failed_temporary, where the sweeper finds them after its lease."""
    if not batches:
        return
    app = current_app
    with app.producer_or_acquire() as producer:
        for queue, ids, countdown in batches:
            signature = app.signature(SEND_TASK, args=(ids,), queue=queue)
            if not countdown:  # now: no ETA header for the worker to hold the message on
                signature.apply_async(producer=producer)
                continue
            signature.apply_async(countdown=countdown, producer=producer)
            logger.info("delivery.send_later", queue=queue, deliveries=len(ids), countdown=round(countdown, 3))


def deliveries_enqueue_on_commit(*, triggers: Sequence[tuple[str, str]]) -> None:
    """Publish (delivery id, channel) triggers after the surrounding
    transaction commits, in batches per channel."""
    if triggers:
        pending = list(triggers)
        transaction.on_commit(lambda: deliveries_publish(deliveries_batched(pending)))


def inbound_replies_publish(*, inbound_ids: Sequence[str], queue: str) -> None:
    """Publish one answer task per inbound message (its id only) on the channel's queue."""
    if not inbound_ids:
        return
    app = current_app
    with app.producer_or_acquire() as producer:
        for inbound_id in inbound_ids:
            app.signature(INBOUND_REPLY_TASK, args=(inbound_id,), queue=queue).apply_async(producer=producer)


def inbound_replies_enqueue_on_commit(*, inbound_ids: Sequence[str], queue: str) -> None:
    """Publish the automatic answers to newly recorded inbound messages once
    the transaction that recorded them commits. A lost publish costs one
    answer, never a duplicate: the row stays pending."""
    if inbound_ids:
        pending = list(inbound_ids)
        transaction.on_commit(lambda: inbound_replies_publish(inbound_ids=pending, queue=queue))


def channel_backlogs(channels: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting (not yet taken by a worker) in each channel's queue.

    None when the broker cannot tell (unreachable): the caller then proceeds
    as if there were no backlog, since a duplicate trigger is harmless and a
    lost one is not. A queue that does not exist holds nothing.
    """
    names = sorted(set(channels))
    backlogs: dict[str, int | None] = dict.fromkeys(names)
    if not names:
        return backlogs
    try:
        with current_app.connection_for_read() as broker:
            broker.ensure_connection(max_retries=1)
            for name in names:
                # A channel of its own per queue: on AMQP a passive declare of
                # a missing queue closes the channel it was sent on.
                channel: Any = broker.channel()
                try:
                    backlogs[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:  # NOT_FOUND: nobody declared the queue, nothing waits in it
                    backlogs[name] = 0
                finally:
                    _close_quietly(channel.close)
    except Exception as exc:  # noqa: BLE001 - the broker is unreachable: the backlog is unknown
        logger.warning("delivery.backlog_unknown", error=type(exc).__name__)
    return backlogs


def _close_quietly(close: Callable[[], object]) -> None:
    # After a NOT_FOUND the broker has closed the channel already.
    with contextlib.suppress(Exception):
        close()
