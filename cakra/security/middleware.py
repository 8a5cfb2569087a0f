"""Response headers every response carries (what a penetration tester checks
first): pages, API answers, static files, error pages; first in MIDDLEWARE,
so nothing answers around it. And the request framing every view may rely on."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

from cakra.security.identifiers import ascii_digits_check

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


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
        return response


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
