"""Bearer authentication with API keys, rate-limited per client address on
failure; an accepted key then passes its own quotas (:mod:`cakra.api.quota`).

The key is checked first and only a failed key is counted: a camera system
with a valid key is never refused because others behind the same address
(a NAT, a shared egress) filled the failure limit. Checking first costs one
SHA-256 and one indexed lookup, and keys carry 256 random bits, so the limit
is about noise, not guessing; the failure is counted atomically before its
answer (401, or 429 once over the limit) is decided.

Only the ``Authorization: Bearer <token>`` header is read: session cookies
(an officer logged into the back office in the same browser) never
authenticate an API call, so ninja's CSRF handling has nothing to protect
and no cross-site request can ride on ambient credentials.
"""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest
from ninja.security import HttpBearer

from cakra.api.errors import RateLimitedError
from cakra.api.models import ApiKey
from cakra.api.quota import api_key_request_admit
from cakra.api.services import apikey_authenticate, apikey_touch
from cakra.security.ratelimit import Limit, client_address, hit

# Tokens carry 256 random bits, so this is not about guessing one: it stops a
# client from hammering the key lookup and makes scanners stand out.
AUTH_FAILURE_LIMIT = Limit(scope="api-auth-failure", count=20, seconds=60)
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_HEADER_LENGTH = 256


class ApiKeyAuth(HttpBearer):
    def __call__(self, request: HttpRequest) -> ApiKey | None:
        # Replaces HttpBearer.__call__, which logs a malformed header (the
        # token itself) when DEBUG is on.
        header = request.headers.get(self.header, "")
        scheme, _, token = header.partition(" ")
        key = None
        if scheme.lower() == self.openapi_scheme and token.strip() and len(header) <= MAX_HEADER_LENGTH:
            key = self.authenticate(request, token.strip())
        if key is None:
            # Missing, malformed, wrong and revoked keys count alike and get the same 401.
            if not hit(AUTH_FAILURE_LIMIT, client_address(request)):
                raise RateLimitedError(retry_after=AUTH_FAILURE_LIMIT.seconds)
            return None
        # Every authenticated route, the bulk batch route included, passes
        # here before its body is read or any work is done.
        api_key_request_admit(request=request, key=key)
        return key

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = apikey_authenticate(token=token)
        if key is not None:
            apikey_touch(key=key, resolution=LAST_USED_RESOLUTION)
        return key
