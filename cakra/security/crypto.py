"""Application-level encryption of personal data (UU PDP 27/2022).

Every personal field (names, NIK, addresses, phone numbers, email addresses)
is stored as ``<key id>$<base64(nonce || AES-256-GCM ciphertext)>``. The key id
on each value lets keys rotate: new values use the active key, old values
stay readable while their key remains in the ring. The associated data binds a
ciphertext to its column and its row (``<table>.<column>.<row>``, see
cakra.security.fields), so a value copied into another column or another
row fails to decrypt instead of being shown out of context.

Lookups on encrypted values use a keyed hash (HMAC-SHA256 under a separate
lookup key) of the normalised value, so the database can find "this phone
number" without holding it in clear and without allowing offline guessing
from a stolen dump.

The audit chain and its anchors have keys of their own, derived with
HKDF-SHA256 from ``CAKRA_AUDIT_KEY`` (which does nothing else) and a label
naming the purpose (:func:`purpose_key`); session keys and rate-limit
subjects use Django's labelled ``salted_hmac`` over ``SECRET_KEY``. A key
learned from one use (or misused by one piece of code) gives nothing for
another.
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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

NONCE_BYTES = 12
# A sealed TOTP seed (20 bytes) is the key id, "$" and 64 base64 characters,
# in django-otp's 80-character column.
MAX_KEY_ID_LENGTH = 15


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
            if not sep or not kid.isalnum() or len(kid) > MAX_KEY_ID_LENGTH:
                msg = (
                    "CAKRA_FIELD_KEYS entries look like 'kid:base64key' with an alphanumeric kid "
                    f"of at most {MAX_KEY_ID_LENGTH} characters"
                )
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
        return self.encrypt_bytes(plaintext.encode(), context=context)

    def decrypt(self, token: str, *, context: str) -> str:
        try:
            return self.decrypt_bytes(token, context=context).decode()
        except UnicodeDecodeError as exc:
            msg = "stored value failed authentication"
            raise DecryptionError(msg) from exc

    def encrypt_bytes(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.active].encrypt(nonce, plaintext, context.encode())
        return f"{self.active}${base64.b64encode(nonce + sealed).decode()}"

    def decrypt_bytes(self, token: str, *, context: str) -> bytes:
        kid, sep, encoded = token.partition("$")
        aead = self.keys.get(kid)
        if not sep or aead is None:
            msg = f"no key {kid!r} in the ring"
            raise DecryptionError(msg)
        try:
            blob = base64.b64decode(encoded, validate=True)
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
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
    # The lookup key's only job: equality hashes of normalised values (each
    # kind of value with its own purpose prefix). It is used as it is, not
    # derived, so that the stored hashes stay valid.
    return _secret_bytes("CAKRA_LOOKUP_KEY")


def lookup_hash(value: str, *, purpose: str) -> str:
    """Keyed hash for equality lookups; ``purpose`` separates domains (phone vs NIK)."""
    mac = hmac.new(_lookup_key(), digestmod=hashlib.sha256)
    mac.update(purpose.encode())
    mac.update(b"\x00")
    mac.update(value.encode())
    return mac.hexdigest()


# --- One key per purpose -----------------------------------------------------------
# Each label names exactly one use; a new use gets a new label, never a
# borrowed key. The secret each purpose derives from is listed beside it.
AUDIT_CHAIN_LABEL = "cakra/audit-chain-mac/v1"  # from CAKRA_AUDIT_KEY
AUDIT_ANCHOR_LABEL = "cakra/audit-anchor-mac/v1"  # from CAKRA_AUDIT_KEY
INBOUND_SENDER_LABEL = "cakra/inbound-sender-hash/v1"  # from CAKRA_LOOKUP_KEY


def _secret_bytes(setting: str) -> bytes:
    try:
        key = base64.b64decode(getattr(settings, setting), validate=True)
    except binascii.Error as exc:
        msg = f"{setting} is not valid base64"
        raise ImproperlyConfigured(msg) from exc
    if len(key) < 32:  # noqa: PLR2004 - 256 bits
        msg = f"{setting} must hold at least 32 bytes"
        raise ImproperlyConfigured(msg)
    return key


@cache
def purpose_key(*, source: str, label: str) -> bytes:
    """A 256-bit key for one purpose: HKDF-SHA256 of the secret in
    ``source`` (base64, at least 32 bytes) with ``label`` as the info."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(_secret_bytes(source))


def audit_chain_key() -> bytes:
    return purpose_key(source="CAKRA_AUDIT_KEY", label=AUDIT_CHAIN_LABEL)


def audit_anchor_key() -> bytes:
    return purpose_key(source="CAKRA_AUDIT_KEY", label=AUDIT_ANCHOR_LABEL)


def inbound_sender_hash(number: str) -> str:
    """Keyed hash of the number an inbound message came from (E.164 with "+"):
    finds a sender's earlier messages without keeping the number in clear.
    A key of its own, so the hash links to no registry contact."""
    return hmac.new(
        purpose_key(source="CAKRA_LOOKUP_KEY", label=INBOUND_SENDER_LABEL), number.encode(), hashlib.sha256
    ).hexdigest()


def constant_time_equals(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())
