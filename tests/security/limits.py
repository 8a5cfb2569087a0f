"""Fresh limits for scanners that send hundreds of requests from one test
address: without this they would meet the documented 429s (tested on their
own in tests/security/test_ratelimit_races.py, test_sign_in_throttle.py and
test_api_key_quota.py) and exercise only the limiters."""

from __future__ import annotations

from django.core.cache import cache

from cakra.api.models import ApiKeyLease, ApiKeyLoad
from cakra.backoffice.models import SignInThrottle
from cakra.security.models import RateLimitCounter


def limits_reset() -> None:
    """Every limiter's state on the embedded default: anti-guessing counters,
    sign-in throttles, per-key load and in-flight slots, the cache."""
    RateLimitCounter.objects.all().delete()
    SignInThrottle.objects.all().delete()
    ApiKeyLoad.objects.all().delete()
    ApiKeyLease.objects.all().delete()
    cache.clear()
