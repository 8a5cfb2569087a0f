"""Building ``CAKRA_PROVIDERS`` from the environment (imported by the settings module).

The defaults (the SMTP relay named by the ``CAKRA_SMTP_*`` variables, the sink
in development) are written in ``cakra/config/settings.py``. Deployments add
providers, or change or remove default ones, with one JSON variable,
``CAKRA_PROVIDERS_JSON``, merged over the defaults by provider name::

    CAKRA_PROVIDERS_JSON='{
      "smtp-backup": {"CHANNEL": "email",
                      "BACKEND": "cakra.delivery.channels.email.SmtpEmailAdapter",
                      "PRIORITY": 20, "SENDER_IDENTITY": "smtp:relay-backup",
                      "RATE_PER_SECOND": 50, "BURST": 100,
                      "OPTIONS": {"HOST": "relay2.example.go.id", "PORT": 587,
                                  "USERNAME": "cakra", "PASSWORD_ENV": "CAKRA_SMTP_BACKUP_PASSWORD"}},
      "smtp": {"PRIORITY": 30}
    }'

- An entry with an existing name is merged key by key (``OPTIONS`` too), so
  ``{"smtp": {"PRIORITY": 30}}`` only demotes the default relay.
- ``null`` removes a default provider: ``{"smtp": null}``.
- **Secrets never sit in the JSON.** An option written ``<NAME>_ENV`` names
  the environment variable holding ``<NAME>``'s value:
  ``"PASSWORD_ENV": "CAKRA_SMTP_BACKUP_PASSWORD"`` sets ``OPTIONS["PASSWORD"]``
  from that variable. A missing variable stops start-up with its *name* in
  the message (never a value).

Only the shape is handled here; what the values mean is checked by the
system check (:mod:`cakra.delivery.checks`) once Django is set up.

This module is imported while settings load, before Django's apps are ready:
it must not import models, the cache or anything that reads settings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

ENV_SUFFIX = "_ENV"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key == "OPTIONS" and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _resolve_env_references(name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if not key.endswith(ENV_SUFFIX):
            resolved[key] = value
            continue
        if not isinstance(value, str) or value not in environ:
            raise ImproperlyConfigured(
                f"CAKRA_PROVIDERS[{name!r}]['OPTIONS'][{key!r}] names the environment variable "
                f"{value!r}, which is not set"
            )
        resolved[key.removesuffix(ENV_SUFFIX)] = environ[value]
    return resolved


def providers_from_environment(
    *, defaults: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """``defaults`` with ``CAKRA_PROVIDERS_JSON`` merged over them, and ``*_ENV``
    option references replaced by the variables they name."""
    providers: dict[str, dict[str, Any]] = {name: copy.deepcopy(dict(entry)) for name, entry in defaults.items()}
    raw = environ.get("CAKRA_PROVIDERS_JSON", "").strip()
    if raw:
        try:
            overrides = json.loads(raw)
        except json.JSONDecodeError as exc:
            # The position only: the text may hold a pasted secret.
            raise ImproperlyConfigured(f"CAKRA_PROVIDERS_JSON is not valid JSON (at character {exc.pos})") from None
        if not isinstance(overrides, dict):
            raise ImproperlyConfigured("CAKRA_PROVIDERS_JSON must be a JSON object of provider name -> settings")
        for name, entry in overrides.items():
            if entry is None:
                providers.pop(name, None)
            elif isinstance(entry, dict):
                providers[name] = _merge(providers.get(name, {}), entry)
            else:
                raise ImproperlyConfigured(f"CAKRA_PROVIDERS_JSON[{name!r}] must be an object or null")
    for name, entry in providers.items():
        options = entry.get("OPTIONS")
        if isinstance(options, Mapping):
            entry["OPTIONS"] = _resolve_env_references(name, options, environ)
    return providers
