"""Forged proxy headers: a client that reaches a web process directly (not
through the load balancer) sends ``X-Forwarded-Proto: https`` to be taken for
a secure request, or ``X-Forwarded-Host``/``Forwarded`` to steer what the
application believes about the request. Production believes
``X-Forwarded-Proto`` (``SECURE_PROXY_SSL_HEADER``); only a TCP peer inside
``CAKRA_TRUSTED_PROXY_NETWORKS`` may set it."""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory, override_settings

from cakra.security.middleware import ProxyHeadersMiddleware

PROXY_NETWORK = "10.0.0.0/8"
LOAD_BALANCER = "10.1.2.3"
OUTSIDER = "203.0.113.9"  # a client that found the web process's address
PRODUCTION_PROXY_SETTINGS = {
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "CAKRA_TRUSTED_PROXY_NETWORKS": [PROXY_NETWORK],
}
FORGED = {
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "evil.example",
    "HTTP_X_FORWARDED_PORT": "443",
    "HTTP_X_FORWARDED_FOR": "198.51.100.1",
    "HTTP_FORWARDED": "for=198.51.100.1;proto=https",
}


def _seen(*, remote_addr: str) -> HttpRequest:
    """The request as the views see it after the middleware."""
    seen: list[HttpRequest] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse()

    request = RequestFactory().get("/", REMOTE_ADDR=remote_addr)
    request.META.update(FORGED)
    ProxyHeadersMiddleware(view)(request)
    return seen[0]


@override_settings(**PRODUCTION_PROXY_SETTINGS)
def test_an_untrusted_peer_cannot_claim_https():
    request = _seen(remote_addr=OUTSIDER)
    assert not request.is_secure()
    assert not [name for name in FORGED if name in request.META]


@override_settings(**PRODUCTION_PROXY_SETTINGS)
def test_our_load_balancer_still_says_https():
    request = _seen(remote_addr=LOAD_BALANCER)
    assert request.is_secure()
    assert all(request.META[name] == value for name, value in FORGED.items())


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), CAKRA_TRUSTED_PROXY_NETWORKS=[])
def test_with_no_proxies_configured_nobody_sets_them():
    assert not _seen(remote_addr=LOAD_BALANCER).is_secure()


@pytest.mark.django_db
@pytest.mark.parametrize(("peer", "redirected"), [(OUTSIDER, True), (LOAD_BALANCER, False)])
def test_the_ssl_redirect_holds_for_a_direct_client(peer, redirected):
    """Through the whole middleware stack: the forged header is gone before
    SecurityMiddleware decides whether the request came over https."""
    with override_settings(**PRODUCTION_PROXY_SETTINGS, SECURE_SSL_REDIRECT=True):
        response = Client(REMOTE_ADDR=peer).get("/cek/", HTTP_X_FORWARDED_PROTO="https")
    if redirected:
        assert response.status_code == 301
        assert response["Location"].startswith("https://")
    else:
        assert response.status_code == 200
