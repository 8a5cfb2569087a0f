"""Two session realms, citizens and officers, and a store a dump cannot use.

The portal and the back office keep apart everything a session is made of:
the cookie (its name, ``SameSite`` and lifetime), the realm column of the
row, and the key that hashes the cookie value. ``RealmSessionMiddleware``
picks the realm by path (``/backoffice/`` or the rest), so a citizen's
session never authenticates a back-office page, and an officer's cookie is
never sent to a portal page's session machinery.

The database holds ``HMAC-SHA256(key derived from SECRET_KEY and the realm,
cookie value)`` as the primary key, never the cookie value: a dump or a
backup of the table yields no working session, and someone able to write to
the table cannot plant one without ``SECRET_KEY`` either. The cookie value
itself is Django's (32 random characters from ``[a-z0-9]``).

``SESSION_ENGINE`` names this module: its ``SessionStore`` is the back
office's, so Django's own helpers (``clearsessions``, the test client's
``force_login``) work on officer sessions unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.crypto import salted_hmac
from django.utils.http import http_date

from cakra.security.identifiers import ascii_int_parse
from cakra.security.models import Session

if TYPE_CHECKING:
    from django.db.models import QuerySet

SameSite = Literal["Lax", "Strict"]

BACKOFFICE_PATH_PREFIX = "/backoffice/"


def session_key_stored(*, realm: str, session_key: str) -> str:
    """What the database keeps for a cookie value of ``realm``."""
    return salted_hmac(f"cakra.security.sessions.{realm}", session_key, algorithm="sha256").hexdigest()


class SessionStore(DatabaseSessionStore):
    """Officer sessions (the back office): keyed by a hash, tagged with the officer."""

    realm: ClassVar[str] = "backoffice"

    @classmethod
    def get_model_class(cls) -> type[Session]:
        return Session

    def _rows(self) -> QuerySet[Session]:
        return self.get_model_class().objects.filter(realm=self.realm)

    def _stored(self, session_key: str) -> str:
        return session_key_stored(realm=self.realm, session_key=session_key)

    def _officer_id(self, data: dict[str, Any]) -> int | None:
        raw = data.get(SESSION_KEY)
        return ascii_int_parse(raw) if isinstance(raw, str) else None

    def get_session_cookie_age(self) -> int:
        return int(settings.SESSION_COOKIE_AGE)

    def _get_session_from_db(self) -> Session | None:
        if self.session_key is None:
            return None
        session = (
            self._rows()
            .filter(session_key=self._stored(self.session_key), expire_date__gt=timezone.now())
            .only("session_data")
            .first()
        )
        if session is None:
            self._session_key = None
        return session

    def exists(self, session_key: str) -> bool:
        # Across realms: a new key is unique in the whole table.
        return self.get_model_class().objects.filter(session_key=self._stored(session_key)).exists()

    def create_model_instance(self, data: dict[str, Any]) -> Session:
        key = self._session_key
        if key is None:  # save() creates the key before it builds the row
            msg = "a session row needs a session key"
            raise RuntimeError(msg)
        return self.get_model_class()(
            session_key=self._stored(key),
            session_data=self.encode(data),
            expire_date=self.get_expiry_date(),
            realm=self.realm,
            officer_id=self._officer_id(data),
        )

    def delete(self, session_key: str | None = None) -> None:
        key = session_key if session_key is not None else self.session_key
        if key is not None:
            self._rows().filter(session_key=self._stored(key)).delete()

    # The web process is WSGI; the asynchronous API runs the same hashed
    # queries rather than Django's, which would look the cookie value up as is.
    async def aload(self) -> dict[str, Any]:
        return await sync_to_async(self.load)()

    async def aexists(self, session_key: str) -> bool:
        return await sync_to_async(self.exists)(session_key)

    async def acreate(self) -> None:
        await sync_to_async(self.create)()

    async def asave(self, must_create: bool = False) -> None:
        await sync_to_async(self.save)(must_create)

    async def adelete(self, session_key: str | None = None) -> None:
        await sync_to_async(self.delete)(session_key)


class PortalSessionStore(SessionStore):
    """Citizen sessions: only notice grants, never an officer, as long as a grant lives."""

    realm: ClassVar[str] = "portal"

    def _officer_id(self, data: dict[str, Any]) -> int | None:
        return None

    def get_session_cookie_age(self) -> int:
        return int(settings.CAKRA_PORTAL_SESSION_COOKIE_AGE)


@dataclass(frozen=True)
class SessionRealm:
    store: type[SessionStore]
    cookie_name: str
    samesite: SameSite


def _samesite(value: object) -> SameSite:
    # "None" would send session cookies on cross-site requests (CSRF exposure).
    if value == "Lax":
        return "Lax"
    if value == "Strict":
        return "Strict"
    msg = f"session cookies must be SameSite=Lax or Strict, not {value!r}"
    raise ImproperlyConfigured(msg)


def session_realm_for_path(path: str) -> SessionRealm:
    if path.startswith(BACKOFFICE_PATH_PREFIX):
        return SessionRealm(
            store=SessionStore,
            cookie_name=settings.SESSION_COOKIE_NAME,
            samesite=_samesite(settings.SESSION_COOKIE_SAMESITE),
        )
    return SessionRealm(
        store=PortalSessionStore,
        cookie_name=settings.CAKRA_PORTAL_SESSION_COOKIE_NAME,
        samesite=_samesite(settings.CAKRA_PORTAL_SESSION_COOKIE_SAMESITE),
    )


class RealmSessionMiddleware(SessionMiddleware):
    """Django's session middleware, with the cookie and store of the path's realm.

    Cookies are host-only (no ``Domain``) with ``Path=/``: the ``__Host-``
    prefix used in production demands both, so the realms differ by name,
    not path. A session is saved only when modified (``SESSION_SAVE_EVERY_REQUEST``
    is not read: the back office's idle clock already writes on every request).
    """

    def process_request(self, request: HttpRequest) -> None:
        realm = session_realm_for_path(request.path_info)
        request.session = realm.store(request.COOKIES.get(realm.cookie_name))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        session = getattr(request, "session", None)
        if not isinstance(session, SessionStore):
            return response
        realm = session_realm_for_path(request.path_info)
        empty = session.is_empty()
        need_vary_cookie = session.accessed
        if realm.cookie_name in request.COOKIES and empty:
            response.delete_cookie(realm.cookie_name, path="/", samesite=realm.samesite)
            need_vary_cookie = True
        elif session.modified and not empty:
            self._save_and_set_cookie(session, response, realm)
            need_vary_cookie = True
        if need_vary_cookie:
            patch_vary_headers(response, ("Cookie",))
        return response

    def _save_and_set_cookie(self, session: SessionStore, response: HttpResponse, realm: SessionRealm) -> None:
        if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:  # as Django: an error page stores nothing
            return
        max_age: int | None = None
        expires: str | None = None
        if not session.get_expire_at_browser_close():
            max_age = session.get_expiry_age()
            expires = http_date(time.time() + max_age)
        try:
            session.save()
        except UpdateError as exc:
            # Ended meanwhile (sign-out, password change, deactivation in
            # another request): never bring it back.
            msg = "The session was ended before the request completed."
            raise SessionInterrupted(msg) from exc
        response.set_cookie(
            realm.cookie_name,
            session.session_key or "",
            max_age=max_age,
            expires=expires,
            path="/",
            secure=bool(settings.SESSION_COOKIE_SECURE),
            httponly=True,
            samesite=realm.samesite,
        )
