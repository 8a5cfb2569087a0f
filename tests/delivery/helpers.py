"""Helpers of the delivery tests: the production send path, one delivery at a time."""

from __future__ import annotations

from cakra.delivery.channels.base import ChannelAdapter, OutboundMessage
from cakra.delivery.dispatch import MAX_ATTEMPTS
from cakra.delivery.models import Delivery
from cakra.delivery.sending import SendReport, deliveries_send


def send(delivery: Delivery) -> SendReport:
    """Send ``delivery`` as a worker does (a batch of one) and reload it."""
    report = deliveries_send(delivery_ids=[str(delivery.id)])
    delivery.refresh_from_db()
    return report


def next_attempt_is_the_last(delivery: Delivery) -> None:
    """As if every earlier try had failed: the next one records any failure as final."""
    Delivery.objects.filter(pk=delivery.pk).update(attempt_count=MAX_ATTEMPTS - 1)


def send_one(adapter: ChannelAdapter, message: OutboundMessage) -> str:
    """One message through the adapter's production path (``send_many``): its
    reference, or the error of the taxonomy it ended with, raised."""
    [result] = adapter.send_many([message])
    if result.error is not None:
        raise result.error
    return result.reference
