"""A field-key rotation can be finished: `cakra keys reencrypt` moves every
sealed value to the new key on a live system, and `cakra keys status` shows
when the old key protects nothing any more."""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterator, Sequence

import pytest
from django.core.management import call_command

from cakra.backoffice.models import OfficerTOTPDevice
from cakra.backoffice.services import officer_totp_device_create
from cakra.registry.models import ContactPoint, Owner, Vehicle
from cakra.security.columns import EncryptedColumn, encrypted_columns
from cakra.security.crypto import key_ring
from cakra.security.selectors import encrypted_values_status
from cakra.security.services import encrypted_values_reencrypt
from tests.factories import OfficerFactory, VehicleFactory

pytestmark = pytest.mark.django_db

NEW_KID = "rotated2"


@pytest.fixture(autouse=True)
def _fresh_key_ring() -> Iterator[None]:
    key_ring.cache_clear()
    yield
    key_ring.cache_clear()


@pytest.fixture
def stored():
    """Values of every kind, sealed under the key active before the rotation."""
    vehicle = VehicleFactory.create()
    officer = OfficerFactory.create()
    seed = os.urandom(20)
    device = officer_totp_device_create(officer=officer, name="phone", confirmed=True, seed=seed)
    owner = vehicle.owner
    expected = {
        "owner": (owner.pk, owner.name, owner.nik),
        "contacts": sorted((contact.pk, contact.value) for contact in owner.contact_points.all()),
        "vehicle": (vehicle.pk, vehicle.chassis_number, vehicle.engine_number),
        "device": (device.pk, seed),
    }
    return key_ring().active, expected


def _rotate(settings) -> None:
    """A new key appended to the ring: the last one is active."""
    settings.CAKRA_FIELD_KEYS += f",{NEW_KID}:{base64.b64encode(os.urandom(32)).decode()}"
    key_ring.cache_clear()


def _drop_key(settings, kid: str) -> None:
    settings.CAKRA_FIELD_KEYS = ",".join(
        item for item in settings.CAKRA_FIELD_KEYS.split(",") if not item.startswith(f"{kid}:")
    )
    key_ring.cache_clear()


def _under(kid: str) -> int:
    return sum(usage.values for usage in encrypted_values_status() if usage.key_id == kid)


def _assert_all_read(expected) -> None:
    pk, name, nik = expected["owner"]
    owner = Owner.objects.get(pk=pk)
    assert (owner.name, owner.nik) == (name, nik)
    assert (
        sorted((contact.pk, contact.value) for contact in ContactPoint.objects.filter(owner=owner))
        == expected["contacts"]
    )
    pk, chassis, engine = expected["vehicle"]
    vehicle = Vehicle.objects.get(pk=pk)
    assert (vehicle.chassis_number, vehicle.engine_number) == (chassis, engine)
    pk, seed = expected["device"]
    assert OfficerTOTPDevice.objects.get(pk=pk).bin_key == seed


def test_every_sealed_column_is_walked_totp_seeds_included():
    labels = {column.label for column in encrypted_columns()}
    assert {
        "registry_owner.name",
        "registry_owner.nik",
        "registry_contactpoint.value",
        "registry_vehicle.chassis_number",
        "registry_vehicle.engine_number",
        "enforcement_notice.verification_code",
        "otp_totp_totpdevice.key",
    } <= labels


def test_after_reencrypt_the_old_key_protects_nothing_and_everything_reads(settings, stored, capsys):
    old_kid, expected = stored
    _rotate(settings)
    call_command("keys", "status")
    before = capsys.readouterr().out
    assert f"registry_owner.name\t{old_kid}\t1" in before
    assert f"otp_totp_totpdevice.key\t{old_kid}\t1" in before
    old_values = _under(old_kid)

    call_command("keys", "reencrypt", "--dry-run")
    assert f"would re-seal {old_values} values" in capsys.readouterr().out
    assert _under(old_kid) == old_values  # a dry run writes nothing

    call_command("keys", "reencrypt", "--batch-size", "2")
    assert f"re-sealed {old_values} values under key {NEW_KID}" in capsys.readouterr().out
    assert _under(old_kid) == 0
    assert _under(NEW_KID) == old_values
    call_command("keys", "status")
    assert old_kid not in capsys.readouterr().out

    # The proof that nothing needs the old key: remove it, and every value still reads.
    _drop_key(settings, old_kid)
    _assert_all_read(expected)


class _InterruptedError(Exception):
    pass


def test_an_interrupted_run_is_finished_by_running_it_again(settings, stored):
    old_kid, expected = stored
    _rotate(settings)
    total = _under(old_kid)
    batches = 0

    def crash_after_two_batches(column: EncryptedColumn, count: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise _InterruptedError

    with pytest.raises(_InterruptedError):
        encrypted_values_reencrypt(batch_size=1, on_batch=crash_after_two_batches)
    assert 0 < _under(old_kid) < total  # stopped halfway, committed batches kept

    resumed = encrypted_values_reencrypt(batch_size=1)
    assert resumed.reencrypted == total - 2
    assert _under(old_kid) == 0
    again = encrypted_values_reencrypt(batch_size=1)
    assert (again.reencrypted, again.changed_meanwhile, again.failed) == (0, 0, 0)  # idempotent
    _drop_key(settings, old_kid)
    _assert_all_read(expected)


def test_a_value_written_meanwhile_is_not_overwritten_with_a_stale_one(settings, stored):
    _old_kid, expected = stored
    owner_pk = expected["owner"][0]
    _rotate(settings)
    [name_column] = [column for column in encrypted_columns() if column.label == "registry_owner.name"]

    def write_meanwhile(values: Sequence[object]) -> str:
        # Between the command's read of the row and its update, an officer's
        # correction is saved (sealed under the active key, with a new nonce).
        owner = Owner.objects.get(pk=owner_pk)
        owner.name = "Nama Baru"
        owner.save()
        return name_column.context_for(values)

    racing = dataclasses.replace(name_column, context_for=write_meanwhile)
    summary = encrypted_values_reencrypt(columns=[racing])
    assert (summary.reencrypted, summary.changed_meanwhile) == (0, 1)
    assert Owner.objects.get(pk=owner_pk).name == "Nama Baru"


def test_values_that_do_not_decrypt_are_left_and_reported(settings, stored):
    old_kid, _expected = stored
    _rotate(settings)
    _drop_key(settings, old_kid)  # the operator removed the old key too early
    summary = encrypted_values_reencrypt()
    assert summary.reencrypted == 0
    assert summary.failed == _under(old_kid) > 0
