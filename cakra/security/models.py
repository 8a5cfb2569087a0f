"""Tables of the security layer: server-side sessions that a copy of the
database does not give away, and rate-limit counters on the embedded default.

Rate-limit counters: one row per limit, window and subject; see
:mod:`cakra.security.ratelimit` for the single statement that counts
atomically. Keys carry a keyed hash of the subject, never a client address
or notice number in clear.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class Session(AbstractBaseSession):
    """One browser session of the portal or the back office.

    ``session_key`` holds a keyed hash of the cookie value, never the value
    itself (see ``cakra.security.sessions``): a dump or a backup of this
    table yields no cookie that opens anything.
    """

    class Realm(models.TextChoices):
        PORTAL = "portal", "Citizen portal"
        BACKOFFICE = "backoffice", "Officer back office"

    session_key = models.CharField(max_length=64, primary_key=True)
    realm = models.CharField(max_length=16, choices=Realm.choices)
    # Which officer signed the session in, so that a password change or a
    # deactivation can end every session of that officer at once.
    officer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta(AbstractBaseSession.Meta):
        db_table = "security_session"


class RateLimitCounter(models.Model):
    # The scope, the window number and a keyed hash of the subject.
    key = models.CharField(max_length=128, primary_key=True)
    count = models.IntegerField()
    # Unix seconds at which the window ends; rows past it are purged.
    expires_at = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return self.key
