"""Deploy check of the client-address policy (``cakra check --deploy``).

Every rate limit keys on the client address (:mod:`cakra.security.proxies`),
so a proxy setting that cannot be right breaks all of them at once: unset
behind a load balancer, every citizen shares the balancer's bucket; too broad
or public, anyone can forge X-Forwarded-For. Ids:

- ``cakra.E201`` ``CAKRA_TRUSTED_PROXY_NETWORKS`` is unset in production;
- ``cakra.E202`` a trusted network covers all or nearly all of the address
  space (an IPv4 prefix shorter than /8, an IPv6 prefix shorter than /32
  outside the unique-local fc00::/7, where ``fd00::/8`` is the usual way to
  say "our private network");
- ``cakra.E203`` a trusted network is public (globally routed): our proxies
  reach the web process over a private network or loopback.

Outside production the last two are warnings (``cakra.W202``, ``cakra.W203``)
and an unset value means "none" (the embedded default faces its clients
directly).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register  # noqa: A004 - Django's name for it

from cakra.security.proxies import SETTING

MIN_PREFIX = {4: 8, 6: 32}
UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
HINT = (
    "Set CAKRA_TRUSTED_PROXY_NETWORKS to the private networks your load balancers and reverse proxies "
    "connect from (e.g. 10.0.0.0/8,fd00::/8), or to 'none' when clients connect to the web process directly. "
    "See docs/operations.md."
)


def _unique_local(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return isinstance(network, ipaddress.IPv6Network) and network.subnet_of(UNIQUE_LOCAL)


@register(Tags.security, deploy=True)
def trusted_proxies_check(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    production = bool(settings.PRODUCTION)
    networks = settings.CAKRA_TRUSTED_PROXY_NETWORKS
    if networks is None:
        if not production:
            return []
        return [Error(f"{SETTING} is not set", hint=HINT, obj=SETTING, id="cakra.E201")]
    level, letter = (Error, "E") if production else (Warning, "W")
    messages: list[CheckMessage] = []
    for text in networks:
        network = ipaddress.ip_network(text)
        if network.prefixlen < MIN_PREFIX[network.version] and not _unique_local(network):
            shortest = MIN_PREFIX[network.version]
            messages.append(
                level(
                    f"{SETTING} trusts {network}, (nearly) the whole address space (prefix shorter than /{shortest})",
                    hint=HINT,
                    obj=SETTING,
                    id=f"cakra.{letter}202",
                )
            )
        elif network.is_global:
            messages.append(
                level(f"{SETTING} trusts {network}, a public network", hint=HINT, obj=SETTING, id=f"cakra.{letter}203")
            )
    return messages
