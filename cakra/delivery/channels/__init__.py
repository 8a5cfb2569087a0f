"""Channel adapters: one interface (``base.ChannelAdapter``), one backend per provider.

Which providers serve a channel is configuration, like Django's database
connections: ``settings.CAKRA_PROVIDERS`` maps provider names to a channel, a
backend class, a priority, a sender identity with its rate limit, and the
backend's options (:mod:`.registry`). Several providers per channel fail over
by priority and health (:mod:`.health`); sender identities are rate-limited
across all workers (:mod:`cakra.delivery.ratelimit`); which provider sends
now is :mod:`cakra.delivery.routing`'s choice.

This package is imported by the settings module (for
:mod:`.provider_settings`), so nothing here may import models at import time.
"""

from __future__ import annotations

from cakra.delivery.channels.registry import (
    Provider,
    adapter_for_provider,
    providers_configured,
    providers_for_channel,
)

__all__ = [
    "Provider",
    "adapter_for_provider",
    "providers_configured",
    "providers_for_channel",
]
