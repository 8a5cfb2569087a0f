"""Before and after one send: which provider, may it send now, and what it taught us.

The sending service (:mod:`cakra.delivery.sending`) calls
:func:`deliveries_route` before it claims a batch of deliveries (and takes
the batch's rate-limit tokens from the provider it names), and
:func:`delivery_route_outcome` for each answer of the provider. Both run with
no database transaction open.
"""

from __future__ import annotations

from cakra.delivery.channels.health import provider_outcome_record
from cakra.delivery.channels.registry import Provider, provider_for_channel, providers_for_channel
from cakra.delivery.models import DeliveryAttempt
from cakra.delivery.ratelimit import sender_back_off


def _unserved(channel: str) -> Provider:
    """A stand-in for the provider a channel lacks: no name, so building its
    adapter fails (ImproperlyConfigured, recorded on the attempt)."""
    return Provider(
        name="",
        channel=channel,
        backend="",
        priority=0,
        sender_identity="",
        rate_per_second=1.0,
        burst=1,
        options={},
    )


def deliveries_route(*, channel: str, failed_on: str = "") -> Provider:
    """The provider to send a batch of ``channel`` deliveries through now.

    ``failed_on`` is the provider that failed these deliveries last (a batch
    of retries): another provider of the channel, when there is a healthy
    one, gets the retry. A channel no provider serves (a configuration error,
    warned about as cakra.W101) gets a nameless stand-in whose adapter cannot
    be built, so the attempt fails and is recorded, and the delivery reaches
    failed_permanent and fallback instead of waiting for a provider forever.
    """
    if not providers_for_channel(channel):
        return _unserved(channel)
    return provider_for_channel(channel, avoid=failed_on)


def delivery_route_outcome(*, provider: Provider, outcome: str, retry_after: float | None) -> None:
    """Count the attempt toward the provider's health; when the provider
    throttled us, hold its sender identity for every worker."""
    if not provider.name:  # the channel has no provider: nothing to learn
        return
    provider_outcome_record(provider=provider.name, outcome=outcome)
    if outcome == DeliveryAttempt.Outcome.THROTTLED:
        sender_back_off(provider, retry_after=retry_after)
