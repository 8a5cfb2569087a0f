"""Before and after one send: which provider, may it send now, and what it taught us.

The sending service (:mod:`cakra.delivery.sending`) calls
:func:`delivery_route` before it claims a delivery and
:func:`delivery_route_outcome` once the provider has answered. Both run with
no database transaction open.
"""

from __future__ import annotations

from cakra.delivery.channels.health import provider_outcome_record
from cakra.delivery.channels.registry import Provider, provider_for_channel, providers_for_channel
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.delivery.ratelimit import sender_back_off, sender_token_acquire


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


def delivery_route(*, delivery_id: str) -> Provider | None:
    """The provider to send ``delivery_id`` through, with one token of its
    sender identity already taken; None when there is no such delivery.

    Raises :class:`cakra.delivery.ratelimit.RateLimitedError` when the token
    is too far away: the delivery has not been claimed, so it keeps its
    status and its attempt count.

    One indexed read (the channel, and which provider failed it last): the
    provider has to be known before the claim, because the token must be
    taken before the delivery is marked ``sending``.
    """
    row = Delivery.objects.filter(pk=delivery_id).values_list("channel", "status", "provider").first()
    if row is None:
        return None
    channel, status, last_provider = row
    if not providers_for_channel(channel):
        # A channel no provider serves (a configuration error, warned about
        # as cakra.W101): go on to the claim, so the attempt fails and is
        # recorded, and the delivery reaches failed_permanent and fallback
        # instead of waiting for a provider forever.
        return _unserved(channel)
    # A delivery waiting for its retry failed on `last_provider`: another
    # provider of the channel, when there is a healthy one, gets the retry.
    avoid = last_provider if status == Delivery.Status.FAILED_TEMPORARY else ""
    provider = provider_for_channel(channel, avoid=avoid)
    sender_token_acquire(provider)
    return provider


def delivery_route_outcome(*, provider: Provider, outcome: str, retry_after: float | None) -> None:
    """Count the attempt toward the provider's health; when the provider
    throttled us, hold its sender identity for every worker."""
    if not provider.name:  # the channel has no provider: nothing to learn
        return
    provider_outcome_record(provider=provider.name, outcome=outcome)
    if outcome == DeliveryAttempt.Outcome.THROTTLED:
        sender_back_off(provider, retry_after=retry_after)
