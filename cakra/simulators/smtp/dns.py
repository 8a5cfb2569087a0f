"""The receiver's side of DKIM: the key record a lookup finds, and the verdict.

DKIM is verified with dkimpy against a **simulated DNS**: the lookup of
``<selector>._domainkey.<domain>`` is answered with the public key derived from
the configured private key, as if every sender domain published the record
``cakra dkim dns-record`` prints. A message changed after signing, or signed
with another key, fails.

A real receiver knows only the published record. The sink is configured with
the sender's private key (there is no DNS to publish in), so it derives the
record from it here, with ``cryptography``, and from then on uses only the
record, as a receiver would.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ImproperlyConfigured


def dkim_record_derive(private_key_pem: str) -> str:
    """The TXT record value (``v=DKIM1; k=rsa; p=…``) the holder of this RSA
    private key publishes."""
    pem = private_key_pem
    if "\\n" in pem and "\n" not in pem:  # a PEM pasted into one environment line
        pem = pem.replace("\\n", "\n")
    try:
        # Only the public half is used, never a signature made with this key,
        # so OpenSSL's slow consistency check of the private half guards
        # nothing here.
        key = serialization.load_pem_private_key(
            pem.strip().encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("the DKIM key is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ImproperlyConfigured("the DKIM key must be an RSA key (k=rsa)")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode('ascii')}"


class SimulatedDkimDns:
    """A ``dnsfunc`` for dkimpy: answers ``<selector>._domainkey.<domain>`` TXT
    lookups with ``record``, and nothing else."""

    def __init__(self, *, record: str, selector: str) -> None:
        self._prefix = f"{selector.lower()}._domainkey."
        self._record = record.encode("ascii")

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".").lower()
        if text.startswith(self._prefix) and len(text) > len(self._prefix):
            return self._record
        return None


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    passed: bool
    domain: str


def dkim_check(raw: bytes, *, dns: SimulatedDkimDns) -> DkimVerdict:
    """Verify the first DKIM signature of ``raw`` against the simulated DNS."""
    checker = dkim.DKIM(raw)
    try:
        passed = bool(checker.verify(dnsfunc=dns))
    except dkim.DKIMException:
        passed = False
    domain = checker.domain.decode("ascii", "replace") if isinstance(checker.domain, bytes) else ""
    return DkimVerdict(passed=passed, domain=domain)
