"""Production is production or nothing: what refuses to start.

A deployment that is almost right is the dangerous one: a mistyped
``CAKRA_ENV`` that quietly runs as development with generated secrets, a
guessable ``SECRET_KEY`` that only earns a deploy-check warning, ``DEBUG``
left on, message links pointing at a loopback or plain-http address. So:

- ``CAKRA_ENV`` must be one of :data:`ENVIRONMENTS` (:func:`environment_name`);
- with ``CAKRA_ENV=production`` the settings module refuses to load on any
  of :func:`production_settings_problems` (checked on the values as read);
- the web and worker processes of production run Django's deployment checks
  at start-up and refuse to serve on any warning or error
  (:func:`deploy_checks_enforce`, called from ``cakra.config.wsgi`` and
  ``cakra.config.celery``).

Messages name the setting, never its value (values here are secrets).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from django.core import checks
from django.core.checks.security.base import SECRET_KEY_INSECURE_PREFIX, SECRET_KEY_MIN_LENGTH
from django.core.exceptions import ImproperlyConfigured

ENVIRONMENTS = ("dev", "test", "production")
# Django's own floor for SECRET_KEY is 50 characters of at least 5 distinct
# ones; a key is also refused below 256 bits estimated as length times the
# bits of its alphabet (what token_urlsafe(50) or 64 hex digits give).
SECRET_KEY_MIN_BITS = 256
RECEIPT_SECRET_MIN_LENGTH = 32
HTTPS_PORT = 443


def environment_name(value: str | None) -> str:
    """The deployment's name; an unknown one (``prod``, ``Production``) refuses to start."""
    name = "dev" if value is None else value
    if name not in ENVIRONMENTS:
        msg = f"CAKRA_ENV must be one of {', '.join(ENVIRONMENTS)} (exactly); refusing to start with another value"
        raise ImproperlyConfigured(msg)
    return name


def secret_key_problem(key: str) -> str | None:
    if key.startswith(SECRET_KEY_INSECURE_PREFIX):
        return f"SECRET_KEY starts with {SECRET_KEY_INSECURE_PREFIX!r} (a generated development key)"
    distinct = len(set(key))
    if len(key) < SECRET_KEY_MIN_LENGTH or distinct < 2 or len(key) * math.log2(distinct) < SECRET_KEY_MIN_BITS:  # noqa: PLR2004
        return (
            f"SECRET_KEY must be at least {SECRET_KEY_MIN_LENGTH} random characters (about {SECRET_KEY_MIN_BITS} bits)"
        )
    return None


def base_url_problem(*, base_url: str, official_domain: str) -> str | None:
    """The portal's base URL goes into every message: https on the official domain, nothing else."""
    domain = official_domain.strip().lower().rstrip(".")
    if "." not in domain:
        return "CAKRA_OFFICIAL_DOMAIN must be the portal's domain name"
    if not base_url:
        return "CAKRA_PORTAL_BASE_URL is required in production (https://<CAKRA_OFFICIAL_DOMAIN or a subdomain>)"
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return "CAKRA_PORTAL_BASE_URL is not a valid URL"
    host = (parts.hostname or "").rstrip(".")
    if (
        parts.scheme != "https"
        or not (host == domain or host.endswith("." + domain))
        or parts.username is not None
        or parts.password is not None
        or port not in {None, HTTPS_PORT}
        or parts.path not in {"", "/"}
        or parts.query
        or parts.fragment
    ):
        return "CAKRA_PORTAL_BASE_URL must be https://<CAKRA_OFFICIAL_DOMAIN or a subdomain of it>, with no path"
    return None


def dev_secret_values(data_dir: Path) -> set[str]:
    """Values of a development secrets file, if one lies in the data dir (copied over, or left behind)."""
    path = data_dir / "dev-secrets.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {str(value) for value in stored.values()} if isinstance(stored, dict) else set()


def production_settings_problems(
    *,
    debug: bool,
    secrets: Mapping[str, str],
    dev_secrets: Iterable[str],
    receipt_secrets: Mapping[str, str],
    base_url: str,
    official_domain: str,
) -> list[str]:
    problems: list[str] = []
    if debug:
        problems.append("CAKRA_DEBUG is on")
    key_problem = secret_key_problem(secrets.get("SECRET_KEY", ""))
    if key_problem:
        problems.append(key_problem)
    known = set(dev_secrets)
    problems.extend(f"{name} is a development secret" for name, value in secrets.items() if value in known)
    problems.extend(
        f"the receipt secret of {source} must be at least {RECEIPT_SECRET_MIN_LENGTH} characters"
        for source, secret in receipt_secrets.items()
        if len(secret) < RECEIPT_SECRET_MIN_LENGTH
    )
    url_problem = base_url_problem(base_url=base_url, official_domain=official_domain)
    if url_problem:
        problems.append(url_problem)
    return problems


def production_settings_enforce(
    *,
    debug: bool,
    secrets: Mapping[str, str],
    dev_secrets: Iterable[str],
    receipt_secrets: Mapping[str, str],
    base_url: str,
    official_domain: str,
) -> None:
    """Raise ImproperlyConfigured naming every problem at once (one restart fixes them all)."""
    problems = production_settings_problems(
        debug=debug,
        secrets=secrets,
        dev_secrets=dev_secrets,
        receipt_secrets=receipt_secrets,
        base_url=base_url,
        official_domain=official_domain,
    )
    if problems:
        msg = "CAKRA_ENV=production refuses to start: " + "; ".join(problems)
        raise ImproperlyConfigured(msg)


def deploy_checks_enforce() -> None:
    """Run Django's checks with the deployment ones; refuse on any warning or error not silenced.

    Called once per production process before it serves or consumes
    anything: ``cakra check --deploy`` is the same list, for the operator.
    """
    serious = [
        message
        for message in checks.run_checks(include_deployment_checks=True)
        if message.level >= checks.WARNING and not message.is_silenced()
    ]
    if serious:
        msg = "CAKRA_ENV=production refuses to start on these checks: " + "; ".join(
            f"{message.id}: {message.msg}" for message in serious
        )
        raise ImproperlyConfigured(msg)
