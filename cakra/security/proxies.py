"""Which client sent a request: the address every rate limit keys on.

The policy, in full:

* ``CAKRA_TRUSTED_PROXY_NETWORKS`` lists the networks our own reverse proxies
  and load balancers connect from (CIDRs, e.g. ``10.0.0.0/8,fd00::/8``), or
  ``none`` when the web process faces clients directly.
* The walk starts at ``REMOTE_ADDR``, the peer of the TCP connection, which
  nobody can forge. Only when that peer is a trusted proxy is
  ``X-Forwarded-For`` read at all, **from the right**: each proxy appends the
  address it received the request from, so the rightmost entries were written
  by our proxies and everything left of the first untrusted entry was written
  by the client and is worth nothing. The walk takes entries while the hop it
  came from is trusted and stops at the first untrusted one: that is the
  client.
* A malformed entry (not a bare IP address: junk, an empty field, a port, a
  zone id) stops the walk, and the last hop the walk validated is used. Our
  proxies write plain addresses, so junk can only come from the client's side.
* IPv6 clients are keyed per /64, the smallest block an end site is normally
  given: keying single addresses would hand each client 2^64 buckets.
  IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, as dual-stack sockets
  report IPv4 peers) are treated as the IPv4 address they carry.

django-ipware and werkzeug's ProxyFix were considered: ProxyFix trusts a hop
*count* (the weakness this replaces) and ipware matches trusted proxies by
string prefix, not by network, so neither expresses this policy; the standard
library's ``ipaddress`` does the parsing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "CAKRA_TRUSTED_PROXY_NETWORKS"
RETIRED_SETTING = "CAKRA_TRUSTED_PROXIES"
NONE_VALUE = "none"
IPV6_CLIENT_PREFIX = 64
UNKNOWN_CLIENT = "unknown"


class ProxyNetworksError(ValueError):
    """CAKRA_TRUSTED_PROXY_NETWORKS cannot be parsed."""


def trusted_networks_parse(value: str) -> list[str]:
    """The networks of ``value`` (comma-separated CIDRs, or ``none``) in
    canonical form. Raises :class:`ProxyNetworksError` naming the bad entry."""
    entries = [entry.strip() for entry in value.split(",")]
    if [entry.lower() for entry in entries] == [NONE_VALUE]:
        return []
    networks = []
    for entry in entries:
        if entry.lower() == NONE_VALUE:
            raise ProxyNetworksError(f"{SETTING}: 'none' cannot be combined with networks")
        try:
            # strict: "10.0.0.1/8" is a typo for either a host or a network;
            # guessing which could trust far more than intended.
            networks.append(str(ipaddress.ip_network(entry, strict=True)))
        except ValueError:
            raise ProxyNetworksError(
                f"{SETTING}: {entry!r} is not a network (write CIDRs such as 10.0.0.0/8 or fd00::/8, or 'none')"
            ) from None
    return networks


def trusted_networks_from_environment(environ: Mapping[str, str]) -> list[str] | None:
    """The setting's value from the environment: None when unset, [] for
    ``none``. Refuses the retired hop-count variable so that a deployment
    still relying on it does not silently lose its proxy configuration."""
    if RETIRED_SETTING in environ:
        raise ProxyNetworksError(
            f"{RETIRED_SETTING} is no longer read: set {SETTING} to the networks of your reverse proxies "
            f"(for example 10.0.0.0/8), or to 'none' when clients connect directly, and remove {RETIRED_SETTING}"
        )
    value = environ.get(SETTING)
    if value is None:
        return None
    return trusted_networks_parse(value)


@functools.lru_cache(maxsize=8)
def _networks(canonical: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry) for entry in canonical)


def _address(text: str) -> IPAddress | None:
    """A bare IP address, IPv4-mapped IPv6 unwrapped; None for anything else."""
    if "%" in text:  # zone ids only make sense on the proxy's own link
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in networks)


def client_key(address: IPAddress) -> str:
    """The rate-limit identity of an address: itself for IPv4, its /64 for IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def peer_is_trusted_proxy(*, remote_addr: str, networks: Iterable[str]) -> bool:
    """True when the TCP peer ``remote_addr`` is inside ``networks``: only
    then may headers a proxy adds (``X-Forwarded-*``) be believed at all."""
    peer = _address(remote_addr)
    return peer is not None and _trusted(peer, _networks(tuple(networks)))


def client_address_resolve(*, remote_addr: str, forwarded_for: str, networks: Iterable[str]) -> str:
    """The client's rate-limit identity from a connection's peer and its
    X-Forwarded-For header, trusting proxies in ``networks`` only."""
    trusted = _networks(tuple(networks))
    client = _address(remote_addr)
    if client is None:
        # No peer address (a unix socket) or a garbled one: nothing to walk from.
        return UNKNOWN_CLIENT
    if forwarded_for and _trusted(client, trusted):
        for entry in reversed(forwarded_for.split(",")):
            hop = _address(entry)
            if hop is None:
                break  # keep the last validated hop
            client = hop
            if not _trusted(hop, trusted):
                break
    return client_key(client)


def client_address(request: HttpRequest) -> str:
    """The client's rate-limit identity under CAKRA_TRUSTED_PROXY_NETWORKS."""
    return client_address_resolve(
        remote_addr=str(request.META.get("REMOTE_ADDR") or ""),
        forwarded_for=str(request.META.get("HTTP_X_FORWARDED_FOR") or ""),
        networks=settings.CAKRA_TRUSTED_PROXY_NETWORKS or (),
    )
