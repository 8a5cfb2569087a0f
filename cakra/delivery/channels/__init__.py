"""Channel adapters: one interface (``base.ChannelAdapter``), one backend per provider.

Which backend serves a channel is configuration, like Django's email backends:
each channel has a settings dictionary (``CAKRA_EMAIL`` today) whose optional
``BACKEND`` names the adapter class and whose other keys are that adapter's
options. When a channel gains several providers (failover, weights) the
per-channel dictionary becomes a ``DATABASES``-shaped mapping of named
providers and only :func:`adapter_for_channel` changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from cakra.delivery.channels.base import ChannelAdapter

# channel -> (settings name, backend used when the dictionary names none)
CHANNEL_SETTINGS: dict[str, tuple[str, str]] = {
    "email": ("CAKRA_EMAIL", "cakra.delivery.channels.email.SmtpEmailAdapter"),
}


def adapter_for_channel(channel: str) -> ChannelAdapter:
    """The configured adapter for ``channel``; ImproperlyConfigured when there is none."""
    try:
        setting_name, default_backend = CHANNEL_SETTINGS[channel]
    except KeyError:
        raise ImproperlyConfigured(f"no adapter is configured for channel {channel!r}") from None
    options: Mapping[str, Any] = getattr(settings, setting_name)
    backend = import_string(options.get("BACKEND", default_backend))
    if not (isinstance(backend, type) and issubclass(backend, ChannelAdapter)) or backend.channel != channel:
        raise ImproperlyConfigured(f"{setting_name}['BACKEND'] is not a {channel} ChannelAdapter")
    return backend(options=options)
