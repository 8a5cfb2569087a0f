"""Application-level encryption of personal data (UU PDP 27/2022).

Every personal field (names, NIK, addresses, phone numbers, email addresses)
is stored as ``<key id>$<base64(nonce || AES-256-GCM ciphertext)>``. The key id
on each value lets keys rotate: new values use the active key, old values
stay readable while their key remains in the ring. The associated data binds a
ciphertext to its column, so a value copied into another column fails to
decrypt instead of being shown out of context.

Lookups on encrypted values use a keyed hash (HMAC-SHA256 under a separate
lookup key) of the normalised value, so the database can find "this phone
number" without holding it in clear and without allowing offline guessing
from a stolen dump.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

NONCE_BYTES = 12


class DecryptionError(Exception):
    """A stored value could not be decrypted (unknown key, tampering, wrong column)."""


@dataclass(frozen=True)
class KeyRing:
    keys: dict[str, AESGCM]
    active: str

    @classmethod
    def parse(cls, spec: str, active: str = "") -> KeyRing:
        """Parse ``"kid1:base64key,kid2:base64key"``; the last key is active unless named."""
        keys: dict[str, AESGCM] = {}
        order: list[str] = []
        for raw_item in spec.split(","):
            item = raw_item.strip()
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            if not sep or not kid.isalnum():
                msg = "CAKRA_FIELD_KEYS entries look like 'kid:base64key' with an alphanumeric kid"
                raise ImproperlyConfigured(msg)
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error as exc:
                msg = f"CAKRA_FIELD_KEYS key {kid!r} is not valid base64"
                raise ImproperlyConfigured(msg) from exc
            if len(key) != 32:  # noqa: PLR2004 - AES-256
                msg = f"CAKRA_FIELD_KEYS key {kid!r} must be 32 bytes"
                raise ImproperlyConfigured(msg)
            keys[kid] = AESGCM(key)
            order.append(kid)
        if not keys:
            msg = "CAKRA_FIELD_KEYS holds no key"
            raise ImproperlyConfigured(msg)
        chosen = active or order[-1]
        if chosen not in keys:
            msg = f"CAKRA_FIELD_KEY_ACTIVE {chosen!r} is not in CAKRA_FIELD_KEYS"
            raise ImproperlyConfigured(msg)
        return cls(keys=keys, active=chosen)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.active].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.active}${base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, context: str) -> str:
        kid, sep, encoded = token.partition("$")
        aead = self.keys.get(kid)
        if not sep or aead is None:
            msg = f"no key {kid!r} in the ring"
            raise DecryptionError(msg)
        try:
            blob = base64.b64decode(encoded, validate=True)
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode()).decode()
        except (binascii.Error, InvalidTag, ValueError) as exc:
            msg = "stored value failed authentication"
            raise DecryptionError(msg) from exc

    def key_id_of(self, token: str) -> str:
        return token.partition("$")[0]


@cache
def key_ring() -> KeyRing:
    return KeyRing.parse(settings.CAKRA_FIELD_KEYS, settings.CAKRA_FIELD_KEY_ACTIVE)


@cache
def _lookup_key() -> bytes:
    key = base64.b64decode(settings.CAKRA_LOOKUP_KEY)
    if len(key) < 32:  # noqa: PLR2004
        msg = "CAKRA_LOOKUP_KEY must hold at least 32 bytes"
        raise ImproperlyConfigured(msg)
    return key


def lookup_hash(value: str, *, purpose: str) -> str:
    """Keyed hash for equality lookups; ``purpose`` separates domains (phone vs NIK)."""
    mac = hmac.new(_lookup_key(), digestmod=hashlib.sha256)
    mac.update(purpose.encode())
    mac.update(b"\x00")
    mac.update(value.encode())
    return mac.hexdigest()


def constant_time_equals(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())
