"""``cakra apikey create|revoke|list``."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from cakra.api.models import ApiKey
from tests.api.helpers import get, payload, post


def _run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _token_from(output):
    (token,) = [line for line in output.splitlines() if line.startswith("cakra_")]
    return token


def test_create_prints_a_working_token_once_with_a_warning(client, region, vehicle):
    out, err = _run("create", "--region", "METRO", "--name", "ETLE Metro back office")

    token = _token_from(out)
    assert "will not be shown again" in err
    key = ApiKey.objects.get()
    assert key.name == "ETLE Metro back office"
    assert key.pre_validated is False
    assert token.split("_")[1] == key.prefix
    assert token.split("_", 2)[2] not in key.secret_hash  # only the hash is stored
    assert post(client, token, payload()).status_code == 201


def test_create_pre_validated(region):
    _run("create", "--region", "METRO", "--pre-validated")
    assert ApiKey.objects.get().pre_validated is True


def test_revoke_makes_the_token_401(client, region):
    out, _ = _run("create", "--region", "METRO")
    token = _token_from(out)
    assert get(client, token, "violations/x").status_code == 404
    prefix = ApiKey.objects.get().prefix

    revoke_out, _ = _run("revoke", prefix)

    assert f"Revoked API key {prefix}" in revoke_out
    assert get(client, token, "violations/x").status_code == 401
    assert ApiKey.objects.get().revoked_at is not None


def test_list_shows_keys_but_never_a_secret(region, other_region):
    created, _ = _run("create", "--region", "METRO", "--name", "metro")
    _run("create", "--region", "JABAR", "--name", "jabar")
    token = _token_from(created)

    everything, _ = _run("list")
    metro_only, _ = _run("list", "--region", "METRO")

    assert "metro" in everything
    assert "jabar" in everything
    assert "jabar" not in metro_only
    secret = token.split("_", 2)[2]
    for listing in (everything, metro_only):
        assert secret not in listing
        for key in ApiKey.objects.all():
            assert key.secret_hash not in listing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--region", "NOPE"), "unknown region"),
        (("revoke", "000000000000"), "no active API key"),
        (("list", "--region", "NOPE"), "unknown region"),
        (("create", "--region", "METRO", "--name", "  "), "--name"),
    ],
)
def test_clear_errors(region, args, message):
    with pytest.raises(CommandError, match=message):
        _run(*args)


def test_revoking_twice_is_an_error(region):
    _run("create", "--region", "METRO")
    prefix = ApiKey.objects.get().prefix
    _run("revoke", prefix)
    with pytest.raises(CommandError, match="no active API key"):
        _run("revoke", prefix)
