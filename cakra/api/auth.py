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

import re
from datetime import timedelta

from django.http import HttpRequest
from ninja.security import HttpBearer

from cakra.api.models import ApiKey
from cakra.api.quota import api_key_request_admit
from cakra.api.services import TOKEN_PREFIX, apikey_authenticate, apikey_touch
from cakra.security.denials import access_denied_log
from cakra.security.ratelimit import AUTH_FAILURE_MESSAGE, Limit, RateLimitedError, client_address, hit

# Tokens carry 256 random bits, so this is not about guessing one: it stops a
# client from hammering the key lookup and makes scanners stand out.
AUTH_FAILURE_LIMIT = Limit(scope="api-auth-failure", count=20, seconds=60)
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_HEADER_LENGTH = 256
# A token's public part (cakra_<prefix>_<secret>): the only piece of a refused
# token that is logged, and only when it has the shape of a real prefix.
_TOKEN_SHAPE = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_.+")


class ApiKeyAuth(HttpBearer):
    def __call__(self, request: HttpRequest) -> ApiKey | None:
        # Replaces HttpBearer.__call__, which logs a malformed header (the
        # token itself) when DEBUG is on.
        header = request.headers.get(self.header, "")
        scheme, _, token = header.partition(" ")
        presented = ""
        if scheme.lower() == self.openapi_scheme and len(header) <= MAX_HEADER_LENGTH:
            presented = token.strip()
        key = self.authenticate(request, presented) if presented else None
        if key is None:
            # Missing, malformed, wrong and revoked keys count alike and get the same 401.
            _refusal_log(request, header=header, presented=presented)
            if not hit(AUTH_FAILURE_LIMIT, client_address(request)):
                raise RateLimitedError(wait=AUTH_FAILURE_LIMIT.seconds, message=AUTH_FAILURE_MESSAGE)
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


def _refusal_log(request: HttpRequest, *, header: str, presented: str) -> None:
    """The class of the refused credential, and the prefix it names if any; never the token."""
    shape = _TOKEN_SHAPE.fullmatch(presented)
    if not header:
        reason = "missing"
    elif shape is None:
        reason = "malformed"
    else:
        reason = "unknown_or_revoked"  # wrong secret, unknown or revoked prefix alike
    access_denied_log(request=request, surface="api", reason=reason, api_key=shape.group(1) if shape else None)
