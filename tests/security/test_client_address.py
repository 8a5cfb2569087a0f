"""Which client is it: the address every rate limit keys on, behind trusted
proxy networks, walking X-Forwarded-For from the right."""

from __future__ import annotations

import pytest
from django.core import checks
from django.core.checks import Error, Warning  # noqa: A004 - Django's name for it
from django.test import RequestFactory

from cakra.security.proxies import (
    ProxyNetworksError,
    client_address,
    client_address_resolve,
    trusted_networks_from_environment,
    trusted_networks_parse,
)
from cakra.security.proxy_checks import trusted_proxies_check

LB = ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    ("remote_addr", "forwarded_for", "networks", "expected"),
    [
        # No proxy trusted: the TCP peer is the client, whatever the header says.
        ("203.0.113.5", "198.51.100.1", [], "203.0.113.5"),
        # Behind the load balancer: its appended entry is the client.
        ("10.1.2.3", "203.0.113.5", LB, "203.0.113.5"),
        # A client forging entries on the left gains nothing.
        ("10.1.2.3", "1.2.3.4, 198.51.100.9, 203.0.113.5", LB, "203.0.113.5"),
        # Several trusted hops (CDN edge -> LB -> proxy) are walked through.
        ("10.1.2.3", "203.0.113.5, 10.9.9.9, 10.4.4.4", LB, "203.0.113.5"),
        # A forged "trusted" entry left of the real client is never reached.
        ("10.1.2.3", "10.0.0.1, 203.0.113.5", LB, "203.0.113.5"),
        # An untrusted peer: its header is ignored entirely.
        ("198.51.100.20", "203.0.113.5", LB, "198.51.100.20"),
        ("198.51.100.20", "10.1.1.1", LB, "198.51.100.20"),
        # Junk stops the walk at the last validated hop.
        ("10.1.2.3", "203.0.113.5, junk", LB, "10.1.2.3"),
        ("10.1.2.3", "203.0.113.5, junk, 10.4.4.4", LB, "10.4.4.4"),
        ("10.1.2.3", "203.0.113.5, ", LB, "10.1.2.3"),
        ("10.1.2.3", "203.0.113.5:4711", LB, "10.1.2.3"),
        ("10.1.2.3", "[2001:db8::1]", LB, "10.1.2.3"),
        ("10.1.2.3", "fe80::1%eth0", LB, "10.1.2.3"),
        ("10.1.2.3", "<script>", LB, "10.1.2.3"),
        # Only trusted hops in the header: the leftmost one is all we know.
        ("10.1.2.3", "10.7.7.7", LB, "10.7.7.7"),
        # No header behind a trusted proxy: the proxy itself.
        ("10.1.2.3", "", LB, "10.1.2.3"),
        # IPv6 clients are keyed per /64; a trusted IPv6 proxy.
        ("fd00::5", "2001:db8:1:2:aaaa::1", LB, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "", [], "2001:db8:1:2::/64"),
        # IPv4-mapped IPv6 is the IPv4 address it carries, for trust and key.
        ("::ffff:10.1.2.3", "::ffff:203.0.113.5", LB, "203.0.113.5"),
        # No usable peer (a unix socket): one shared key, and no walk.
        ("", "203.0.113.5", LB, "unknown"),
        ("garbage", "203.0.113.5", LB, "unknown"),
    ],
)
def test_client_address_policy(remote_addr, forwarded_for, networks, expected):
    got = client_address_resolve(remote_addr=remote_addr, forwarded_for=forwarded_for, networks=networks)
    assert got == expected


def test_addresses_in_one_ipv6_64_share_a_key_and_neighbouring_64s_do_not():
    def key(address):
        return client_address_resolve(remote_addr=address, forwarded_for="", networks=[])

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert key("2001:db8:1:2::1") != key("2001:db8:1:3::1")


def test_requests_use_the_setting(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.5")
    settings.CAKRA_TRUSTED_PROXY_NETWORKS = None
    assert client_address(request) == "10.1.2.3"
    settings.CAKRA_TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    assert client_address(request) == "203.0.113.5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8,fd00::/8", ["10.0.0.0/8", "fd00::/8"]),
        (" 10.0.0.0/8 , 192.168.1.7 ", ["10.0.0.0/8", "192.168.1.7/32"]),
        ("none", []),
        ("NONE", []),
    ],
)
def test_the_setting_parses_networks_or_none(value, expected):
    assert trusted_networks_parse(value) == expected


@pytest.mark.parametrize("value", ["", "10.0.0.0/33", "10.0.0.1/8", "lb.internal", "none,10.0.0.0/8", "10.0.0.0/8,"])
def test_a_malformed_setting_is_refused(value):
    with pytest.raises(ProxyNetworksError, match="CAKRA_TRUSTED_PROXY_NETWORKS"):
        trusted_networks_parse(value)


def test_the_retired_hop_count_is_refused_naming_the_new_variable():
    with pytest.raises(ProxyNetworksError, match="CAKRA_TRUSTED_PROXY_NETWORKS") as raised:
        trusted_networks_from_environment({"CAKRA_TRUSTED_PROXIES": "1"})
    assert "CAKRA_TRUSTED_PROXIES" in str(raised.value)
    assert trusted_networks_from_environment({}) is None
    assert trusted_networks_from_environment({"CAKRA_TRUSTED_PROXY_NETWORKS": "none"}) == []


@pytest.mark.parametrize(
    ("networks", "production", "ids"),
    [
        (None, True, ["cakra.E201"]),
        (None, False, []),
        ([], True, []),
        (["10.0.0.0/8", "fd00::/8", "127.0.0.1/32", "100.64.0.0/10"], True, []),
        (["0.0.0.0/0"], True, ["cakra.E202"]),
        (["::/0"], True, ["cakra.E202"]),
        (["10.0.0.0/7"], True, ["cakra.E202"]),
        (["fc00::/7", "2000::/3"], True, ["cakra.E202"]),
        (["203.0.113.0/24"], True, []),  # documentation range: not globally routed
        (["8.8.8.0/24"], True, ["cakra.E203"]),
        (["2a00:1450::/32"], True, ["cakra.E203"]),
        (["0.0.0.0/0", "8.8.8.0/24"], False, ["cakra.W202", "cakra.W203"]),
    ],
)
def test_the_deploy_check_refuses_settings_that_cannot_be_right(settings, networks, production, ids):
    settings.PRODUCTION = production
    settings.CAKRA_TRUSTED_PROXY_NETWORKS = networks

    messages = trusted_proxies_check()

    assert [message.id for message in messages] == ids
    assert all(isinstance(message, Error if production else Warning) for message in messages)
    assert all("CAKRA_TRUSTED_PROXY_NETWORKS" in message.msg for message in messages)


def test_the_check_is_registered_as_a_deploy_check(settings):

    settings.PRODUCTION = True
    settings.CAKRA_TRUSTED_PROXY_NETWORKS = None
    assert "cakra.E201" not in {message.id for message in checks.run_checks(include_deployment_checks=False)}
    assert "cakra.E201" in {message.id for message in checks.run_checks(include_deployment_checks=True)}
