"""DKIM keys: signing outgoing mail and the DNS record that lets receivers check it.

The private key comes from ``settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]`` (PEM,
RSA). Receivers fetch the public half from ``<selector>._domainkey.<domain>``;
``cakra dkim dns-record`` prints that record for every sender domain.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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


@dataclass(frozen=True, slots=True)
class DkimKey:
    private_pem: bytes = field(repr=False)
    public_key_b64: str

    def sign(self, message: bytes, *, selector: str, domain: str) -> bytes:
        """Return ``message`` with a DKIM-Signature header prepended."""
        signature: bytes = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("idna"),
            self.private_pem,
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
        raise ImproperlyConfigured("CAKRA_EMAIL['DKIM_PRIVATE_KEY'] is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        raise ImproperlyConfigured(f"the DKIM key must be RSA of at least {MIN_KEY_BITS} bits")
    # Re-serialised so dkimpy gets the one PEM shape it parses (LF line ends, PKCS#8).
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(private_pem=private_pem, public_key_b64=base64.b64encode(public_der).decode("ascii"))
