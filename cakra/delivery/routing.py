"""Which provider sends a channel's messages now, and what each answer teaches us.

The sending service (:mod:`cakra.delivery.sending`) calls
:func:`provider_choose` before it claims a batch of deliveries (and takes
the batch's rate-limit tokens from the provider it names), and
:func:`provider_answer_record` for each answer of the provider. Both run
with no database transaction open.
"""

from __future__ import annotations

from cakra.delivery.channels.health import provider_outcome_record, providers_degraded
from cakra.delivery.channels.registry import Provider, providers_for_channel
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


def provider_choose(channel: str, *, avoid: str = "") -> Provider:
    """The provider that serves ``channel`` now.

    The first by ``PRIORITY`` among the healthy ones (:mod:`.channels.health`);
    degraded ones only when every provider is degraded. ``avoid`` (the
    provider that failed these deliveries last, for a batch of retries) goes
    after its healthy peers, so a retry tries another route when there is
    one. A channel with a single provider skips the health read.

    A channel no provider serves (a configuration error, warned about as
    cakra.W101) gets a nameless stand-in whose adapter cannot be built, so
    the attempt fails and is recorded, and the delivery reaches
    failed_permanent and fallback instead of waiting for a provider forever.
    """
    candidates = providers_for_channel(channel)
    if not candidates:
        return _unserved(channel)
    if len(candidates) == 1:
        return candidates[0]
    degraded = providers_degraded(provider.name for provider in candidates)
    return min(candidates, key=lambda p: (p.name in degraded, p.name == avoid, p.priority, p.name))


def provider_answer_record(*, provider: Provider, outcome: str, retry_after: float | None) -> None:
    """Count the attempt toward the provider's health; when the provider
    throttled us, hold its sender identity for every worker."""
    if not provider.name:  # the channel has no provider: nothing to learn
        return
    provider_outcome_record(provider=provider.name, outcome=outcome)
    if outcome == DeliveryAttempt.Outcome.THROTTLED:
        sender_back_off(provider, retry_after=retry_after)
