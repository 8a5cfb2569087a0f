"""Field encryption: rotation by key id, column binding, tamper detection."""

from __future__ import annotations

import base64
import json
import os

import pytest
from django.core.exceptions import ImproperlyConfigured

from cakra.config.secrets import load_secrets
from cakra.security.crypto import DecryptionError, KeyRing, lookup_hash


def key_spec(*kids: str) -> str:
    return ",".join(f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in kids)


def test_values_carry_the_key_id_and_old_keys_still_decrypt_after_rotation():
    old_spec = key_spec("k1")
    old = KeyRing.parse(old_spec)
    token = old.encrypt("Budi Santoso", context="registry_owner.name")
    assert token.startswith("k1$")

    rotated = KeyRing.parse(old_spec + "," + key_spec("k2"))
    assert rotated.active == "k2"
    assert rotated.decrypt(token, context="registry_owner.name") == "Budi Santoso"
    assert rotated.encrypt("Budi Santoso", context="registry_owner.name").startswith("k2$")


def test_the_same_value_encrypts_differently_each_time():
    ring = KeyRing.parse(key_spec("k1"))
    assert ring.encrypt("x", context="t.c") != ring.encrypt("x", context="t.c")


def test_a_value_moved_to_another_column_does_not_decrypt():
    ring = KeyRing.parse(key_spec("k1"))
    token = ring.encrypt("3171012345678901", context="registry_owner.nik")
    with pytest.raises(DecryptionError):
        ring.decrypt(token, context="registry_owner.name")


def test_tampered_and_unknown_key_values_are_refused():
    ring = KeyRing.parse(key_spec("k1"))
    token = ring.encrypt("secret", context="t.c")
    kid, _, body = token.partition("$")
    blob = bytearray(base64.b64decode(body))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError):
        ring.decrypt(f"{kid}${base64.b64encode(bytes(blob)).decode()}", context="t.c")
    with pytest.raises(DecryptionError):
        ring.decrypt("k9$" + body, context="t.c")
    with pytest.raises(DecryptionError):
        ring.decrypt("k1$not base64!", context="t.c")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "k1",
        "k1:not-base64!",
        f"k1:{base64.b64encode(b'short').decode()}",
        f"bad-kid:{base64.b64encode(os.urandom(32)).decode()}",
    ],
)
def test_malformed_key_rings_stop_the_start(spec):
    with pytest.raises(ImproperlyConfigured):
        KeyRing.parse(spec)


def test_naming_an_active_key_that_is_not_in_the_ring_stops_the_start():
    with pytest.raises(ImproperlyConfigured):
        KeyRing.parse(key_spec("k1"), active="k2")


def test_lookup_hashes_are_keyed_and_separated_by_purpose():
    phone = lookup_hash("+6281234567890", purpose="contact:mobile")
    assert phone == lookup_hash("+6281234567890", purpose="contact:mobile")
    assert phone != lookup_hash("+6281234567890", purpose="nik")
    assert "6281234567890" not in phone


def test_production_refuses_to_start_without_its_secrets(tmp_path, monkeypatch):
    for name in ("SECRET_KEY", "CAKRA_FIELD_KEYS", "CAKRA_LOOKUP_KEY", "CAKRA_AUDIT_KEY", "CAKRA_DKIM_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ImproperlyConfigured, match="CAKRA_FIELD_KEYS"):
        load_secrets(production=True, data_dir=tmp_path)
    assert not (tmp_path / "dev-secrets.json").exists()


def test_development_secrets_are_generated_once_and_private(tmp_path):
    first = load_secrets(production=False, data_dir=tmp_path)
    second = load_secrets(production=False, data_dir=tmp_path)
    assert first == second
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o777 == 0o600


def test_a_development_secrets_file_without_an_audit_key_gets_a_stable_one_of_its_own(tmp_path):
    first = load_secrets(production=False, data_dir=tmp_path)
    assert len(base64.b64decode(first["CAKRA_AUDIT_KEY"])) == 32
    path = tmp_path / "dev-secrets.json"
    older = {name: value for name, value in json.loads(path.read_text()).items() if name != "CAKRA_AUDIT_KEY"}
    path.write_text(json.dumps(older))
    derived = load_secrets(production=False, data_dir=tmp_path)["CAKRA_AUDIT_KEY"]
    assert derived == load_secrets(production=False, data_dir=tmp_path)["CAKRA_AUDIT_KEY"]
    assert base64.b64decode(derived) not in {base64.b64decode(older["CAKRA_LOOKUP_KEY"]), older["SECRET_KEY"].encode()}
