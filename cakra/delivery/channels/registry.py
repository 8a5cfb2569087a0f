"""Providers, configured like ``DATABASES``, and which one sends a message now.

``settings.CAKRA_PROVIDERS`` maps a provider name to its settings::

    CAKRA_PROVIDERS = {
        "smtp": {
            "CHANNEL": "email",                      # a Channel value
            "BACKEND": "cakra.delivery.channels.email.SmtpEmailAdapter",
            "PRIORITY": 10,                          # lower goes first
            "SENDER_IDENTITY": "smtp:relay-main",    # whose rate limit this send spends
            "RATE_PER_SECOND": 200,                  # the identity's sustained rate
            "BURST": 400,                            # how many may go at once after a pause
            "OPTIONS": {"HOST": ..., "PORT": ...},   # the backend's own settings
        },
    }

The name is what deliveries and attempts record as their ``provider`` (and
what receipt webhooks are matched on), so it is short and stable: lowercase
letters, digits, ``.``, ``_`` and ``-``, at most 32 characters (the column).

**Sender identity** is the thing a provider rate-limits: one WhatsApp
number, one SMS sender ID, one SMTP relay account. Providers that share an
identity (two routes to one number) share its limit, so they must declare the
same rate. See :mod:`cakra.delivery.ratelimit`.

**Choosing** which provider sends now is :func:`cakra.delivery.routing.provider_choose`'s
job (by priority and health); this module only parses the setting and builds adapters.

Configuration is validated twice with the same code: by the system check at
start-up (:mod:`cakra.delivery.checks`, ids ``cakra.E101``…) and when this
module first reads the setting in a process, so a worker started without the
check still refuses a broken configuration rather than guessing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from cakra.delivery.channels.base import ChannelAdapter

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")  # DeliveryAttempt.provider is 32 characters
SENDER_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._@+-]{0,99}")  # also a cache key: no spaces
REQUIRED_KEYS = ("CHANNEL", "BACKEND", "PRIORITY", "SENDER_IDENTITY", "RATE_PER_SECOND")
KNOWN_KEYS = (*REQUIRED_KEYS, "BURST", "OPTIONS")


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    name: str
    channel: str
    backend: str
    priority: int
    sender_identity: str
    rate_per_second: float
    burst: int
    options: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ProviderProblem:
    """One thing wrong with the configuration; ``code`` is the check id."""

    code: str
    provider: str
    message: str


def _known_channels() -> frozenset[str]:
    # The settings module imports this package, before the app registry exists.
    from cakra.delivery.models import Channel  # noqa: PLC0415

    return frozenset(Channel.values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _backend_problems(entry: Mapping[str, Any]) -> tuple[type[ChannelAdapter] | None, list[tuple[str, str]]]:
    """The backend class, when it is a ChannelAdapter of the entry's channel."""
    try:
        backend = import_string(str(entry["BACKEND"]))
    except ImportError:
        return None, [("cakra.E105", f"BACKEND {entry['BACKEND']!r} cannot be imported")]
    if not (isinstance(backend, type) and issubclass(backend, ChannelAdapter)):
        return None, [("cakra.E106", f"BACKEND {entry['BACKEND']!r} is not a ChannelAdapter")]
    declared = getattr(backend, "channel", None)
    if declared != entry["CHANNEL"] and entry["CHANNEL"] in _known_channels():  # (an unknown one is E104)
        return None, [("cakra.E106", f"BACKEND is a {declared or 'channel-less'} adapter, not {entry['CHANNEL']!r}")]
    return backend, []


def _value_problems(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if entry["CHANNEL"] not in _known_channels():
        known = ", ".join(sorted(_known_channels()))
        problems.append(("cakra.E104", f"CHANNEL {entry['CHANNEL']!r} is not one of {known}"))
    if isinstance(entry["PRIORITY"], bool) or not isinstance(entry["PRIORITY"], int):
        problems.append(("cakra.E107", "PRIORITY must be an integer (lower goes first)"))
    identity = entry["SENDER_IDENTITY"]
    if not isinstance(identity, str) or not SENDER_IDENTITY.fullmatch(identity):
        problems.append(("cakra.E108", "SENDER_IDENTITY must be 1-100 letters, digits or : . _ @ + -"))
    rate, burst = entry["RATE_PER_SECOND"], entry.get("BURST", 1)
    if not _is_number(rate) or rate <= 0:
        problems.append(("cakra.E109", "RATE_PER_SECOND must be a positive number"))
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        problems.append(("cakra.E109", "BURST must be a whole number of at least 1"))
    return problems


def _entry_problems(name: str, entry: Mapping[str, Any], *, check_options: bool) -> list[ProviderProblem]:
    found = [("cakra.E103", f"unknown key {key!r}") for key in entry if key not in KNOWN_KEYS]
    found += [("cakra.E103", f"{key} is required") for key in REQUIRED_KEYS if key not in entry]
    if not found:
        found = _value_problems(entry)
        backend, backend_problems = _backend_problems(entry)
        found += backend_problems
        options = entry.get("OPTIONS", {})
        if not isinstance(options, Mapping):
            found.append(("cakra.E110", "OPTIONS must be a dictionary"))
        elif check_options and backend is not None:
            found += [("cakra.E110", message) for message in backend.check_options(options)]
    return [ProviderProblem(code, name, message) for code, message in found]


def provider_settings_problems(providers: object, *, check_options: bool = True) -> list[ProviderProblem]:
    """Everything wrong with a ``CAKRA_PROVIDERS`` value (empty when valid).

    ``check_options`` also asks each backend to check its ``OPTIONS`` (the
    system check does; the router leaves that to the adapter's constructor,
    so a provider with bad options fails its own sends, recorded, while the
    channel's other providers carry on).
    """
    if not isinstance(providers, Mapping) or not providers:
        return [ProviderProblem("cakra.E101", "", "CAKRA_PROVIDERS must be a non-empty dictionary of providers")]
    problems: list[ProviderProblem] = []
    rates: dict[str, tuple[object, object, str]] = {}
    for name, entry in providers.items():
        if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
            problems.append(
                ProviderProblem(
                    "cakra.E102", str(name), "the name must be 1-32 lowercase letters, digits, '.', '_' or '-'"
                )
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(ProviderProblem("cakra.E103", name, "the settings must be a dictionary"))
            continue
        entry_problems = _entry_problems(name, entry, check_options=check_options)
        problems += entry_problems
        if entry_problems:
            continue
        identity = entry["SENDER_IDENTITY"]
        declared = (entry["RATE_PER_SECOND"], entry.get("BURST", 1), name)
        if identity in rates and rates[identity][:2] != declared[:2]:
            problems.append(
                ProviderProblem(
                    "cakra.E111",
                    name,
                    f"shares SENDER_IDENTITY {identity!r} with {rates[identity][2]!r} "
                    "but declares another RATE_PER_SECOND or BURST (one identity, one limit)",
                )
            )
        rates.setdefault(identity, declared)
    return problems


def _provider_build(name: str, entry: Mapping[str, Any]) -> Provider:
    rate = float(entry["RATE_PER_SECOND"])
    return Provider(
        name=name,
        channel=entry["CHANNEL"],
        backend=entry["BACKEND"],
        priority=entry["PRIORITY"],
        sender_identity=entry["SENDER_IDENTITY"],
        rate_per_second=rate,
        burst=int(entry.get("BURST", 1)),
        options=entry.get("OPTIONS", {}),
    )


class _Registry:
    """The parsed setting and the adapters built from it, per process.

    Rebuilt when ``settings.CAKRA_PROVIDERS`` is another object than the one
    parsed (tests override it; a process never changes it otherwise), which
    costs one identity comparison per call.
    """

    def __init__(self, source: object) -> None:
        problems = provider_settings_problems(source, check_options=False)
        if problems:
            first = problems[0]
            raise ImproperlyConfigured(
                f"CAKRA_PROVIDERS[{first.provider!r}]: {first.message} ({first.code}; run `cakra check`)"
            )
        assert isinstance(source, Mapping)  # noqa: S101 - just validated
        self.source = source
        self.providers = {name: _provider_build(name, entry) for name, entry in source.items()}
        by_channel: dict[str, list[Provider]] = {}
        for provider in self.providers.values():
            by_channel.setdefault(provider.channel, []).append(provider)
        self.by_channel = {
            channel: tuple(sorted(members, key=lambda p: (p.priority, p.name)))
            for channel, members in by_channel.items()
        }
        self.adapters: dict[str, ChannelAdapter] = {}
        self.lock = threading.Lock()


_current: _Registry | None = None
_current_lock = threading.Lock()


def _registry() -> _Registry:
    global _current
    source = getattr(settings, "CAKRA_PROVIDERS", None)
    current = _current
    if current is not None and current.source is source:
        return current
    with _current_lock:
        if _current is None or _current.source is not source:
            previous, _current = _current, _Registry(source)
            if previous is not None:  # adapters of the old setting may hold open connections
                for adapter in previous.adapters.values():
                    adapter.close()
        return _current


def providers_configured() -> Mapping[str, Provider]:
    return _registry().providers


def providers_for_channel(channel: str) -> tuple[Provider, ...]:
    """The channel's providers by priority (lowest ``PRIORITY`` first), health aside."""
    return _registry().by_channel.get(channel, ())


def adapter_for_provider(name: str) -> ChannelAdapter:
    """The adapter instance of provider ``name``, built once per process.

    An adapter keeps nothing of one send for the next but its provider
    session (the SMTP adapter keeps one per process and thread), so one
    instance serves the whole process. Building checks the options: a broken
    provider raises ImproperlyConfigured here, on its own sends only.
    """
    registry = _registry()
    adapter = registry.adapters.get(name)
    if adapter is not None:
        return adapter
    try:
        provider = registry.providers[name]
    except KeyError:
        raise ImproperlyConfigured(f"no provider named {name!r} in CAKRA_PROVIDERS") from None
    with registry.lock:
        adapter = registry.adapters.get(name)
        if adapter is None:
            backend = import_string(provider.backend)
            adapter = backend(options=provider.options, name=provider.name)
            registry.adapters[name] = adapter
    return adapter
