"""Secrets for the embedded default, and the rule that production brings its own.

In production (``CAKRA_ENV=production``) every secret comes from the environment
and a missing one stops the process at start-up. On a developer machine the
secrets are generated once into ``<data dir>/dev-secrets.json`` (mode 0600,
never committed) so that ``make run`` needs no set-up and restarts keep the
same keys (encrypted rows stay readable, DKIM keys stay published).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.exceptions import ImproperlyConfigured


def _generate_dev_secrets() -> dict[str, Any]:
    dkim_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dkim_pem = dkim_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CAKRA_FIELD_KEYS": "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "CAKRA_LOOKUP_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CAKRA_AUDIT_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CAKRA_DKIM_PRIVATE_KEY": dkim_pem,
    }


def _dev_audit_key(stored: dict[str, str]) -> str:
    # A dev-secrets.json written before the audit key existed: derived from
    # that file's SECRET_KEY (HKDF, a label of its own) rather than written
    # back, so that every process of `make run` agrees without a race.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cakra/dev-audit-key/v1").derive(
        stored["SECRET_KEY"].encode()
    )
    return base64.b64encode(derived).decode()


def load_secrets(*, production: bool, data_dir: Path) -> dict[str, str]:
    names = ("SECRET_KEY", "CAKRA_FIELD_KEYS", "CAKRA_LOOKUP_KEY", "CAKRA_AUDIT_KEY", "CAKRA_DKIM_PRIVATE_KEY")
    from_env = {name: os.environ[name] for name in names if os.environ.get(name)}
    if production:
        missing = [name for name in names if name not in from_env]
        if missing:
            msg = f"CAKRA_ENV=production needs these environment variables: {', '.join(missing)}"
            raise ImproperlyConfigured(msg)
        return from_env
    path = data_dir / "dev-secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        stored = _generate_dev_secrets()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of `make run` won the race
            stored = json.loads(path.read_text())
        else:
            with os.fdopen(fd, "w") as handle:
                json.dump(stored, handle)
    if "CAKRA_AUDIT_KEY" not in stored:
        stored = {**stored, "CAKRA_AUDIT_KEY": _dev_audit_key(stored)}
    return {**stored, **from_env}
