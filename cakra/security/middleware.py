"""Response headers every response carries (what a penetration tester checks
first): pages, API answers, static files, error pages; first in MIDDLEWARE,
so nothing answers around it. And the request framing every view may rely on."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from cakra.security.identifiers import ascii_digits_check
from cakra.security.proxies import peer_is_trusted_proxy

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# Every answer under the API's prefix, errors included (ASVS V14.4.2).
API_PREFIX = "/api/"
API_CONTENT_DISPOSITION = 'attachment; filename="api.json"'


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        # The middlewares that set these run after WhiteNoise, which answers
        # static files without calling them: set here too, for every response.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        # Notices, evidence and officer pages hold personal data: never cache them.
        response.headers.setdefault("Cache-Control", "no-store")
        if request.path_info.startswith(API_PREFIX):
            # An API answer opened in a browser (a link in a phishing mail, a
            # scanner's report) is saved, never rendered as a page of our origin.
            response.headers.setdefault("Content-Disposition", API_CONTENT_DISPOSITION)
        return response


# Request headers only a proxy of ours may set: the X-Forwarded-* family
# (Django reads X-Forwarded-Proto through SECURE_PROXY_SSL_HEADER, and Host
# and Port when told to) and RFC 7239's Forwarded. As WSGI environ keys.
_PROXY_HEADER_PREFIX = "HTTP_X_FORWARDED_"
_PROXY_HEADERS = frozenset({"HTTP_FORWARDED"})


class ProxyHeadersMiddleware:
    """Drop the headers a proxy adds when the TCP peer is not one of our proxies.

    ``SECURE_PROXY_SSL_HEADER`` makes Django believe ``X-Forwarded-Proto:
    https`` from whoever sent it: a client reaching a web process directly
    could claim https, pass the SSL redirect and the CSRF checks made for
    secure requests. Only a peer inside ``CAKRA_TRUSTED_PROXY_NETWORKS`` (the
    networks the client-address walk trusts, cakra.security.proxies) keeps
    them; with ``none`` nobody does. Runs before SecurityMiddleware and
    CsrfViewMiddleware, so neither ever sees a forged value.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        trusted = peer_is_trusted_proxy(
            remote_addr=str(request.META.get("REMOTE_ADDR") or ""),
            networks=settings.CAKRA_TRUSTED_PROXY_NETWORKS or (),
        )
        if not trusted:
            for name in [name for name in request.META if _proxy_header(name)]:
                del request.META[name]
        return self.get_response(request)


def _proxy_header(name: str) -> bool:
    return name.startswith(_PROXY_HEADER_PREFIX) or name in _PROXY_HEADERS


class ContentLengthMiddleware:
    """Refuse a Content-Length that is not ASCII digits, before anything reads the body.

    Django's ``request.body`` converts the header with ``int()``, which
    raises on "²" (a 500 from every form and JSON view) and reads "٣" as 3.
    gunicorn already refuses such requests; this holds for any server in front.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH")
        if declared and not ascii_digits_check(declared):
            return HttpResponseBadRequest(b"malformed Content-Length", content_type="text/plain; charset=utf-8")
        return self.get_response(request)
