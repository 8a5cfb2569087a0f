"""Start-up checks of the provider configuration (``cakra check``, and every
management command that runs checks: ``migrate``, ``run``).

Ids (also in docs and the registry's own error messages):

- ``cakra.E101`` ``CAKRA_PROVIDERS`` is missing, empty or not a dictionary;
- ``cakra.E102`` a provider name is not 1-32 of ``a-z 0-9 . _ -`` (the
  attempt column records it);
- ``cakra.E103`` a provider's settings are not a dictionary, miss a required
  key or carry an unknown one (a misspelt ``PRIORTY`` would otherwise be
  silently ignored);
- ``cakra.E104`` ``CHANNEL`` is not a known channel;
- ``cakra.E105`` ``BACKEND`` cannot be imported;
- ``cakra.E106`` ``BACKEND`` is not a ChannelAdapter of that channel;
- ``cakra.E107`` ``PRIORITY`` is not an integer;
- ``cakra.E108`` ``SENDER_IDENTITY`` is empty or holds other characters;
- ``cakra.E109`` ``RATE_PER_SECOND`` / ``BURST`` not positive;
- ``cakra.E110`` the backend refuses its ``OPTIONS`` (each adapter class
  checks its own: ``ChannelAdapter.check_options``);
- ``cakra.E111`` providers sharing a sender identity declare different limits;
- ``cakra.E112`` ``CAKRA_PROVIDER_HEALTH`` or ``CAKRA_SENDER_RATE_LIMITS`` is invalid;
- ``cakra.E113`` two entries of ``CAKRA_RECEIPT_WEBHOOKS`` share a secret: a
  receipt's signature covers its timestamp and body but not the path, so a
  request captured on one source's path would also verify on the other's;
- ``cakra.W101`` a channel in ``CAKRA_ENABLED_CHANNELS`` has no provider:
  its deliveries would wait until one is configured.

Messages name settings and keys, never values (an option may be a secret).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning  # noqa: A004 - Django's name for it

from cakra.delivery.channels.health import health_policy_problems
from cakra.delivery.channels.registry import provider_settings_problems
from cakra.delivery.ratelimit import rate_limit_policy_problems

HINT = "See cakra/delivery/channels/registry.py for the shape of CAKRA_PROVIDERS."


def providers_check(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    providers = getattr(settings, "CAKRA_PROVIDERS", None)
    messages: list[CheckMessage] = [
        Error(
            problem.message,
            hint=HINT,
            obj=f"CAKRA_PROVIDERS[{problem.provider!r}]" if problem.provider else "CAKRA_PROVIDERS",
            id=problem.code,
        )
        for problem in provider_settings_problems(providers)
    ]
    for setting, problems in (
        ("CAKRA_PROVIDER_HEALTH", health_policy_problems(getattr(settings, "CAKRA_PROVIDER_HEALTH", {}))),
        ("CAKRA_SENDER_RATE_LIMITS", rate_limit_policy_problems(getattr(settings, "CAKRA_SENDER_RATE_LIMITS", {}))),
    ):
        messages += [Error(problem, obj=setting, id="cakra.E112") for problem in problems]
    if isinstance(providers, dict):
        served = {entry.get("CHANNEL") for entry in providers.values() if isinstance(entry, dict)}
        messages += [
            Warning(
                f"channel {channel!r} is enabled but no provider serves it",
                hint="Add a provider for it to CAKRA_PROVIDERS, or remove it from CAKRA_ENABLED_CHANNELS.",
                obj="CAKRA_ENABLED_CHANNELS",
                id="cakra.W101",
            )
            for channel in getattr(settings, "CAKRA_ENABLED_CHANNELS", [])
            if channel not in served
        ]
    return messages


def receipt_webhooks_check(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """``cakra.E113``: every receipt source needs a secret of its own.

    Secrets are grouped by their SHA-256, so no secret is compared byte by
    byte or ever put into a message; the message names the sources only.
    """
    sources_by_digest: defaultdict[bytes, list[str]] = defaultdict(list)
    for name, entry in getattr(settings, "CAKRA_RECEIPT_WEBHOOKS", {}).items():
        secret = entry.get("SECRET") if isinstance(entry, dict) else None
        if isinstance(secret, str) and secret:  # an empty secret is refused on every request anyway
            sources_by_digest[hashlib.sha256(secret.encode()).digest()].append(str(name))
    return [
        Error(
            "receipt sources " + ", ".join(repr(name) for name in sorted(names)) + " share one secret",
            hint=(
                "Give every receipt source its own secret (CAKRA_RECEIPT_SECRET_<NAME>): a receipt signed for one "
                "source would also verify on the other's path."
            ),
            obj="CAKRA_RECEIPT_WEBHOOKS",
            id="cakra.E113",
        )
        for names in sources_by_digest.values()
        if len(names) > 1
    ]
