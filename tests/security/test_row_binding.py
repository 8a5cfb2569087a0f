"""What a database writer without the keys can do with ciphertexts: nothing.

Each attack writes the database as an attacker would (raw SQL), then reads
through the application.
"""

from __future__ import annotations

import importlib
import secrets
from binascii import hexlify
from typing import Any

import pytest
from django.apps import apps
from django.db import connection, models, transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from cakra.backoffice.models import OfficerTOTPDevice
from cakra.backoffice.services import officer_totp_device_create
from cakra.enforcement.models import Notice
from cakra.registry.models import ContactPoint, Owner, Vehicle
from cakra.security.crypto import DecryptionError, key_ring
from cakra.security.fields import UnboundWriteError
from cakra.security.rebinding import encrypted_values_bind_to_rows
from tests.factories import OfficerFactory, VehicleFactory, make_notice, make_owner

pytestmark = pytest.mark.django_db


def _db_pk(model: type[models.Model], pk: Any) -> Any:
    field = model._meta.pk
    assert field is not None
    return field.get_db_prep_value(pk, connection)


def _raw_read(model: type[models.Model], pk: Any, column: str) -> str:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote(column)} FROM {quote(model._meta.db_table)} WHERE {quote('id')} = %s",  # noqa: S608
            [_db_pk(model, pk)],
        )
        (value,) = cursor.fetchone()
    return str(value)


def _raw_write(model: type[models.Model], pk: Any, column: str, value: str) -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(model._meta.db_table)} SET {quote(column)} = %s WHERE {quote('id')} = %s",  # noqa: S608
            [value, _db_pk(model, pk)],
        )


def _swap(model: type[models.Model], first: Any, second: Any, column: str) -> None:
    one, other = _raw_read(model, first, column), _raw_read(model, second, column)
    _raw_write(model, first, column, other)
    _raw_write(model, second, column, one)


@pytest.mark.parametrize("column", ["name", "nik"])
def test_owner_values_swapped_between_rows_fail_closed(column):
    first, second = make_owner(), make_owner()
    _swap(Owner, first.pk, second.pk, column)
    for owner in (first, second):
        loaded = Owner.objects.get(pk=owner.pk)
        with pytest.raises(DecryptionError):
            getattr(loaded, column)


def test_a_phone_number_moved_to_another_owner_fails_closed():
    first = make_owner(mobile="+6281211112222")
    second = make_owner(mobile="+6281233334444")
    one = ContactPoint.objects.get(owner=first, kind=ContactPoint.Kind.MOBILE)
    other = ContactPoint.objects.get(owner=second, kind=ContactPoint.Kind.MOBILE)
    _swap(ContactPoint, one.pk, other.pk, "value")
    with pytest.raises(DecryptionError):
        _ = ContactPoint.objects.get(pk=other.pk).value
    # The values() road (the send path reads columns, not models) fails the same way.
    field = ContactPoint._meta.get_field("value")
    sealed, owner_id, kind, value_hash = ContactPoint.objects.values_list(
        "value", "owner_id", "kind", "value_hash"
    ).get(pk=other.pk)
    with pytest.raises(DecryptionError):
        field.open_value(sealed, bound_values=(owner_id, kind, value_hash))


def test_a_contact_moved_to_another_kind_of_the_same_owner_fails_closed():
    owner = make_owner(mobile="+6281211112222", email="pemilik@example.co.id")
    mobile = ContactPoint.objects.get(owner=owner, kind=ContactPoint.Kind.MOBILE)
    email = ContactPoint.objects.get(owner=owner, kind=ContactPoint.Kind.EMAIL)
    _raw_write(ContactPoint, email.pk, "value", _raw_read(ContactPoint, mobile.pk, "value"))
    with pytest.raises(DecryptionError):
        _ = ContactPoint.objects.get(pk=email.pk).value


def test_vehicle_numbers_swapped_between_rows_fail_closed():
    first, second = VehicleFactory.create(), VehicleFactory.create(plate="B 9999 ZZZ")
    _swap(Vehicle, first.pk, second.pk, "chassis_number")
    with pytest.raises(DecryptionError):
        _ = Vehicle.objects.get(pk=first.pk).chassis_number
    # The column beside it was not touched and still reads.
    assert Vehicle.objects.get(pk=first.pk).engine_number == first.engine_number


def test_verification_codes_swapped_between_notices_fail_closed(notice_pair):
    first, second = notice_pair
    _swap(Notice, first.pk, second.pk, "verification_code")
    with pytest.raises(DecryptionError):
        _ = Notice.objects.get(pk=first.pk).verification_code


@pytest.fixture
def notice_pair(pre_validated_key, region):
    key, _token = pre_validated_key
    return [make_notice(vehicle=VehicleFactory.create(), api_key=key, capture_id=f"CAP-SWAP-{i}") for i in range(2)]


def test_values_read_back_for_their_own_row_and_saving_keeps_the_ciphertext():
    owner = make_owner(name="Budi Santoso")
    stored = _raw_read(Owner, owner.pk, "name")
    assert "Budi" not in stored
    loaded = Owner.objects.get(pk=owner.pk)
    assert loaded.name == "Budi Santoso"
    loaded.save()  # unchanged: the stored ciphertext stays as it was
    assert _raw_read(Owner, owner.pk, "name") == stored
    loaded.name = "Budi S."
    loaded.save()
    assert Owner.objects.get(pk=owner.pk).name == "Budi S."


def test_bulk_create_binds_each_value_to_its_row():
    owners = [Owner(name=f"Pemilik {i}", nik="", nik_hash="") for i in range(2)]
    Owner.objects.bulk_create(owners)
    assert [Owner.objects.get(pk=owner.pk).name for owner in owners] == ["Pemilik 0", "Pemilik 1"]
    _swap(Owner, owners[0].pk, owners[1].pk, "name")
    with pytest.raises(DecryptionError):
        _ = Owner.objects.get(pk=owners[0].pk).name


def test_writes_that_cannot_bind_clear_text_to_a_row_are_refused():
    owner = make_owner(name="Budi Santoso")
    with pytest.raises(UnboundWriteError), transaction.atomic():
        Owner.objects.filter(pk=owner.pk).update(name="Siti")
    owner.name = "Siti"
    with pytest.raises(UnboundWriteError), transaction.atomic():
        Owner.objects.bulk_update([owner], ["name"])
    assert Owner.objects.get(pk=owner.pk).name == "Budi Santoso"


def test_values_sealed_for_their_column_only_are_rebound_by_the_migration():
    owner = make_owner(name="Budi Santoso")
    _raw_write(Owner, owner.pk, "name", key_ring().encrypt("Budi Santoso", context="registry_owner.name"))
    with pytest.raises(DecryptionError):
        _ = Owner.objects.get(pk=owner.pk).name
    encrypted_values_bind_to_rows(apps, None, model_label="registry.Owner", field_names=("name",))
    assert Owner.objects.get(pk=owner.pk).name == "Budi Santoso"


# --- TOTP seeds -----------------------------------------------------------------


def test_a_totp_seed_is_not_in_the_database_in_clear():
    officer = OfficerFactory.create()
    seed = secrets.token_bytes(20)
    device = officer_totp_device_create(officer=officer, name="phone", confirmed=True, seed=seed)
    stored = TOTPDevice.objects.values_list("key", flat=True).get(pk=device.pk)
    assert hexlify(seed).decode() not in stored.lower()
    assert stored.startswith(key_ring().active + "$")
    assert OfficerTOTPDevice.objects.get(pk=device.pk).bin_key == seed


def test_a_totp_seed_moved_to_another_officers_device_fails_closed():
    first, second = OfficerFactory.create(), OfficerFactory.create()
    mine = officer_totp_device_create(officer=first, name="phone", confirmed=True)
    theirs = officer_totp_device_create(officer=second, name="phone", confirmed=True)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE otp_totp_totpdevice SET key = %s WHERE id = %s", [mine.key, theirs.pk])
    with pytest.raises(DecryptionError):
        _ = OfficerTOTPDevice.objects.get(pk=theirs.pk).bin_key


def test_seeds_stored_in_hex_are_sealed_by_the_migration():
    officer = OfficerFactory.create()
    seed = secrets.token_bytes(20)
    plain = TOTPDevice.objects.create(user=officer, name="old", confirmed=True, key=seed.hex())
    migration = importlib.import_module("cakra.backoffice.migrations.0004_totp_seeds_sealed")
    migration.seal_clear_seeds(apps, None)
    migration.seal_clear_seeds(apps, None)  # a second run leaves sealed seeds alone
    device = OfficerTOTPDevice.objects.get(pk=plain.pk)
    assert "$" in device.key
    assert device.bin_key == seed
