"""Server-side sessions that a copy of the database does not give away."""

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
    # Which officer signed this session in, so that a password change or a
    # deactivation can end every session of that officer at once.
    officer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )

    class Meta(AbstractBaseSession.Meta):
        db_table = "security_session"

    @classmethod
    def get_session_store_class(cls) -> type:
        from cakra.security.sessions import SessionStore

        return SessionStore
