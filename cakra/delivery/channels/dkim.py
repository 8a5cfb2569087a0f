"""DKIM keys: signing outgoing mail and the DNS record that lets receivers check it.

The private key comes from ``settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"]`` (PEM,
RSA), or from an SMTP provider's own ``OPTIONS``. Receivers fetch the public
half from ``<selector>._domainkey.<domain>``; ``cakra dkim dns-record`` prints
that record for every sender domain.

**Signing without dkimpy.** dkimpy would parse the message we just wrote,
run its canonicalisation regexes over the whole body and compute the RSA
signature in pure Python; together that costs many times the rest of
building a notice. :meth:`DkimKey.sign_parts` signs a message that is still
in parts (header fields and body, as :mod:`cakra.delivery.channels.mime`
builds it), computes the RSA signature through OpenSSL (``cryptography``;
RSASSA-PKCS1-v1_5 is deterministic, so the bytes are dkimpy's own), and
writes the same ``DKIM-Signature`` header dkimpy would, byte for byte for
the same second: same tags in the same order, same folding (dkimpy's own
``fold``), same relaxed/relaxed canonicalisation, same header selection
(each listed name takes the next instance upwards; a name with none left,
as the oversigned second mentions, adds nothing). The body's relaxed
canonical form is the body itself when it has no tab, no run of spaces and
no trailing space, which :mod:`~cakra.delivery.channels.mime` arranges;
otherwise it is computed with dkimpy's functions.
``tests/delivery/test_differential_dkim.py`` signs generated messages and
has dkimpy verify every signature and sign the same message itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from django.core.exceptions import ImproperlyConfigured
from dkim.canonicalization import Relaxed, correct_empty_body, strip_trailing_lines

# RFC 8301 lets receivers still accept 1024-bit keys, but such a key can be
# factored by a well-funded attacker, who could then sign notices as the police.
MIN_KEY_BITS = 2048
TXT_STRING_MAX = 255  # one DNS character-string; longer TXT values are split

# Signed once each; the second mention ("oversigning") makes a copy of the
# header added in transit (a second From, say) break the signature. Every
# header that decides what a reader sees is oversigned: with a second
# Content-Type or Content-Transfer-Encoding a relay could make a client show
# another body than the signed one. Content-Transfer-Encoding is listed even
# where the message has none at the top (multipart): signing its absence
# makes an added one break the signature too.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"content-language",
    b"auto-submitted",
)
# Every signed header is over-signed: listed once more than it occurs.
OVERSIGNED_HEADERS = SIGNED_HEADERS
INCLUDE_HEADERS = (*SIGNED_HEADERS, *OVERSIGNED_HEADERS)
_SIGNATURE_HEADER = b"DKIM-Signature"
_H_TAG = b" : ".join(INCLUDE_HEADERS)  # as dkimpy writes h=
_WSP_RUN = re.compile(rb"[\t ]+")
_LINE_BREAK = re.compile(rb"\r?\n")
_RELAXED_CHANGES = (b"\t", b"  ", b" \r\n")  # a body free of these is its own relaxed form (but for trailing lines)


@dataclass(frozen=True, slots=True)
class DkimKey:
    public_key_b64: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)

    def sign_parts(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        selector: str,
        domain: str,
        timestamp: int | None = None,
    ) -> bytes:
        """The ``DKIM-Signature`` header line (CRLF-terminated) for a message
        given as header fields ``(name, value as written after the colon)``
        and CRLF body bytes: what ``dkim.sign`` would return for the
        message, without parsing it.

        ``timestamp`` (the t= tag) defaults to now, as dkimpy's does.
        """
        domain_bytes = domain.encode("idna")
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        stamp = int(time.time()) if timestamp is None else timestamp
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", b"relaxed/relaxed"),
            (b"d", domain_bytes),
            (b"i", b"@" + domain_bytes),
            (b"q", b"dns/txt"),
            (b"s", selector.encode("ascii")),
            (b"t", str(stamp).encode("ascii")),
            (b"h", _H_TAG),
            (b"bh", body_hash),
            # dkimpy's placeholder: it makes the fold put b= on a line of its
            # own, so that filling it in does not move the other tags.
            (b"b", b"0" * 60),
        ]
        unsigned = _fold(b"; ".join([b"=".join(field) for field in fields]))
        unsigned = dkim.RE_BTAG.sub(rb"\1", unsigned)  # b= with the placeholder removed is what is signed
        digest = hashlib.sha256()
        for name, value in _select_headers(headers):
            digest.update(relaxed_header(name, value))
        digest.update(relaxed_header(_SIGNATURE_HEADER, b" " + unsigned).rstrip())  # hashed without its CRLF
        # RSASSA-PKCS1-v1_5 over the digest, as dkimpy's RSASSA_PKCS1_v1_5_sign computes it.
        signature = self.private_key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        return _SIGNATURE_HEADER + b": " + _fold(b"; ".join([b"=".join(field) for field in fields]) + b"\r\n")

    def txt_value(self) -> str:
        """The TXT record value a receiver fetches: ``v=DKIM1; k=rsa; p=…``."""
        return f"v=DKIM1; k=rsa; p={self.public_key_b64}"

    def txt_record(self, *, selector: str, domain: str) -> str:
        """One zone-file line; the value is split into 255-character strings,
        which resolvers join again."""
        value = self.txt_value()
        strings = " ".join(f'"{value[i : i + TXT_STRING_MAX]}"' for i in range(0, len(value), TXT_STRING_MAX))
        return f"{dkim_dns_name(selector=selector, domain=domain)} TXT {strings}"


def _fold(value: bytes) -> bytes:
    """dkimpy's folding of the DKIM-Signature value (72 columns, the name included)."""
    folded: bytes = dkim.fold(value, namelen=len(_SIGNATURE_HEADER), linesep=b"\r\n")
    return folded


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2, as dkimpy computes it: ``name:value\\r\\n`` with the name
    lowercased, the value unfolded, runs of white space made one space, and
    white space around it removed."""
    if b"\n" in value:
        value = _LINE_BREAK.sub(b"", value)
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.lower().rstrip() + b":" + value.strip() + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4, as dkimpy computes it, for a CRLF body. The regular
    expressions run only when the body holds something they change."""
    if any(pattern in body for pattern in _RELAXED_CHANGES):
        return bytes(Relaxed.canonicalize_body(body))
    return bytes(correct_empty_body(strip_trailing_lines(body)))


def _select_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """dkimpy's ``select_headers``: for each name of h=, the next instance
    upwards from the bottom; a name with no instance left contributes nothing."""
    selected = []
    lowered = [name.lower() for name, _ in headers]
    next_from: dict[bytes, int] = {}
    for wanted in INCLUDE_HEADERS:
        index = next_from.get(wanted, len(headers))
        while index > 0:
            index -= 1
            if lowered[index] == wanted:
                selected.append(headers[index])
                break
        next_from[wanted] = index
    return selected


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
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(public_key_b64=base64.b64encode(public_der).decode("ascii"), private_key=key)
