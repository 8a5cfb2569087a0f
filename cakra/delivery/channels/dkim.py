"""DKIM keys: signing outgoing mail and the DNS record that lets receivers check it.

The private key comes from ``settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]`` (PEM,
RSA), or from an SMTP provider's own ``OPTIONS``. Receivers fetch the public
half from ``<selector>._domainkey.<domain>``; ``cakra dkim dns-record`` prints
that record for every sender domain.

**Signing speed.** dkimpy canonicalises the message, hashes it and builds the
``DKIM-Signature`` header, and we keep all of that; but it computes the RSA
signature itself in pure Python, about 6 ms per RSA-2048 signature (some 150
messages/s per core, the dispatch engine's ceiling). OpenSSL, through
``cryptography``, makes the same signature in about 0.25 ms. RSASSA-PKCS1-v1_5
is deterministic, so the bytes are identical either way.

dkimpy offers no hook for the RSA step: ``DKIM.sign`` parses the key with
``dkim.parse_pem_private_key`` and ``DKIM.gen_header`` signs with
``dkim.RSASSA_PKCS1_v1_5_sign``, both looked up in the ``dkim`` module when
called. :func:`_openssl_seam_install` replaces those two names with wrappers
that recognise one private type, :class:`OpenSSLSigner`, and hand everything
else to dkimpy's originals unchanged: a caller that passes PEM bytes (the SMTP
sink, any other code) gets exactly dkimpy's behaviour. Tests check that the
seam is in place, that its signature equals dkimpy's own byte for byte, and
that dkimpy's verifier accepts the result (the sink verifies every message).
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from django.core.exceptions import ImproperlyConfigured

MIN_KEY_BITS = 1024  # what receivers still accept; generate 2048 (the dev default)
TXT_STRING_MAX = 255  # one DNS character-string; longer TXT values are split

# Signed once each; the second mention ("oversigning") makes a copy of the
# header added in transit (a second From, say) break the signature.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-language",
    b"auto-submitted",
)
OVERSIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"auto-submitted")


class _Digest(Protocol):
    @property
    def name(self) -> str: ...

    def digest(self) -> bytes: ...


class OpenSSLSigner:
    """An RSA private key that signs through OpenSSL. Passed to dkimpy in place
    of the PEM bytes; the seam below routes it to :meth:`sign_digest`."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:
        return f"OpenSSLSigner(rsa-{self._key.key_size})"

    def sign_digest(self, digest: _Digest) -> bytes:
        """RSASSA-PKCS1-v1_5 over an already computed SHA-256 digest (what
        dkimpy's ``RSASSA_PKCS1_v1_5_sign`` computes, at OpenSSL speed)."""
        if digest.name != "sha256":  # we only ever sign rsa-sha256
            raise dkim.ParameterError(f"unsupported DKIM hash {digest.name}")
        return self._key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


_SEAM_MARK = "_cakra_openssl_seam"


def _openssl_seam_install() -> None:
    """Route dkimpy's key parsing and RSA signing for :class:`OpenSSLSigner`
    keys to OpenSSL; every other key takes dkimpy's own path. Idempotent."""
    if getattr(dkim.RSASSA_PKCS1_v1_5_sign, _SEAM_MARK, False):
        return
    pure_parse = dkim.parse_pem_private_key
    pure_sign = dkim.RSASSA_PKCS1_v1_5_sign

    def parse_pem_private_key(data: Any) -> Any:
        return data if isinstance(data, OpenSSLSigner) else pure_parse(data)

    def rsassa_pkcs1_v1_5_sign(hash_object: Any, private_key: Any) -> Any:
        if isinstance(private_key, OpenSSLSigner):
            return private_key.sign_digest(hash_object)
        return pure_sign(hash_object, private_key)

    setattr(rsassa_pkcs1_v1_5_sign, _SEAM_MARK, True)
    dkim.parse_pem_private_key = parse_pem_private_key
    dkim.RSASSA_PKCS1_v1_5_sign = rsassa_pkcs1_v1_5_sign


_openssl_seam_install()


@dataclass(frozen=True, slots=True)
class DkimKey:
    private_pem: bytes = field(repr=False)
    public_key_b64: str
    signer: OpenSSLSigner = field(repr=False, compare=False)

    def sign(self, message: bytes, *, selector: str, domain: str) -> bytes:
        """Return ``message`` with a DKIM-Signature header prepended."""
        signature: bytes = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("idna"),
            self.signer,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[*SIGNED_HEADERS, *OVERSIGNED_HEADERS],
        )
        return signature + message

    def txt_value(self) -> str:
        """The TXT record value a receiver fetches: ``v=DKIM1; k=rsa; p=…``."""
        return f"v=DKIM1; k=rsa; p={self.public_key_b64}"

    def txt_record(self, *, selector: str, domain: str) -> str:
        """One zone-file line; the value is split into 255-character strings,
        which resolvers join again."""
        value = self.txt_value()
        strings = " ".join(f'"{value[i : i + TXT_STRING_MAX]}"' for i in range(0, len(value), TXT_STRING_MAX))
        return f"{dkim_dns_name(selector=selector, domain=domain)} TXT {strings}"


def dkim_dns_name(*, selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


@functools.lru_cache(maxsize=4)
def dkim_key_load(pem: str) -> DkimKey:
    """Parse and check the configured key once per process (cached by content)."""
    if "\\n" in pem and "\n" not in pem:  # a PEM pasted into one environment line
        pem = pem.replace("\\n", "\n")
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("the DKIM key is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        raise ImproperlyConfigured(f"the DKIM key must be RSA of at least {MIN_KEY_BITS} bits")
    # Re-serialised so dkimpy gets the one PEM shape it parses (LF line ends, PKCS#8).
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(
        private_pem=private_pem,
        public_key_b64=base64.b64encode(public_der).decode("ascii"),
        signer=OpenSSLSigner(key),
    )
