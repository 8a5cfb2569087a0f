"""A complete, good production environment for tests that load the settings
in a child process: every secret strong and fresh, the official https base
URL, the load balancer's network. A test changes one thing in it and expects
the start to be refused, or changes nothing and expects a clean start."""

from __future__ import annotations

import base64
import os
import secrets
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DOMAIN = "etle.korlantas.polri.go.id"
REPO = Path(__file__).resolve().parents[2]


@cache
def _dkim_pem() -> str:
    # One RSA-2048 key per test process: generating it costs a noticeable fraction of a second.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def production_environment(*, data_dir: Path) -> dict[str, str]:
    """The parent's environment without any CAKRA_/DJANGO_ variable or
    DATABASE_URL, plus a complete production configuration."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CAKRA_", "DJANGO_"))}
    env.pop("DATABASE_URL", None)
    env.update(
        CAKRA_ENV="production",
        CAKRA_DATA_DIR=str(data_dir),
        SECRET_KEY=secrets.token_urlsafe(50),
        CAKRA_FIELD_KEYS="k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        CAKRA_LOOKUP_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        CAKRA_AUDIT_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        CAKRA_DKIM_PRIVATE_KEY=_dkim_pem(),
        ALLOWED_HOSTS=DOMAIN,
        CAKRA_PORTAL_BASE_URL=f"https://{DOMAIN}",
        CAKRA_TRUSTED_PROXY_NETWORKS="10.0.0.0/8",
        DJANGO_SETTINGS_MODULE="cakra.config.settings",
        PYTHONPATH=str(REPO),
    )
    return env
