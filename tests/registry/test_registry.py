"""The registry mirror: plates, contact points and the lookups intake relies on."""

from __future__ import annotations

import pytest

from cakra.registry.models import ContactPoint, Vehicle
from cakra.registry.normalise import InvalidContactError, contact_normalise, phone_normalise
from cakra.registry.plates import InvalidPlateError, plate_compact, plate_normalise, plate_region_code
from cakra.registry.selectors import vehicle_find_by_plate
from cakra.registry.services import contact_hash, owner_create, vehicle_register


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("b1234xyz", "B 1234 XYZ"), ("  B  1234   XYZ ", "B 1234 XYZ"), ("AB 7 C", "AB 7 C"), ("d 99", "D 99")],
)
def test_plates_are_written_one_way(raw, normalised):
    assert plate_normalise(raw) == normalised
    assert plate_compact(raw) == normalised.replace(" ", "")


@pytest.mark.parametrize("raw", ["", "B", "1234", "B 0123 XY", "ABC 1234 X", "B 12345 X", "B 1234 WXYZ", "B-1234-XY"])
def test_what_is_not_a_plate_is_refused(raw):
    with pytest.raises(InvalidPlateError):
        plate_normalise(raw)


def test_the_region_code_is_the_plates_prefix():
    assert plate_region_code("b 1234 xyz") == "B"
    assert plate_region_code("AB 7 C") == "AB"


@pytest.mark.parametrize("raw", ["0812-3456-7890", "+62 812 3456 7890", "6281234567890", "(0812) 34567890"])
def test_every_indonesian_way_of_writing_a_mobile_number_is_one_number(raw):
    assert phone_normalise(raw) == "+6281234567890"


@pytest.mark.parametrize("raw", ["", "halo", "0812", "+1 202 555 01"])
def test_what_is_not_a_phone_number_is_refused(raw):
    with pytest.raises(InvalidContactError):
        phone_normalise(raw)


def test_email_domains_are_case_folded_and_local_parts_kept():
    assert contact_normalise(kind="email", value=" Budi.S@Example.CO.ID ") == "Budi.S@example.co.id"
    with pytest.raises(InvalidContactError):
        contact_normalise(kind="email", value="budi@localhost")


def test_equal_contacts_hash_equally_whatever_their_spelling():
    assert contact_hash(kind="mobile", value="0812-3456-7890") == contact_hash(kind="mobile", value="+6281234567890")
    assert contact_hash(kind="email", value="a@EXAMPLE.co.id") == contact_hash(kind="email", value="a@example.co.id")
    assert contact_hash(kind="mobile", value="081234567890") != contact_hash(kind="email", value="081234567890@x.id")


def test_an_owner_gets_one_contact_point_per_kind_given(db):
    owner = owner_create(name="Budi Santoso", address="Jl. Melati 1, Jakarta", mobile="0812-3456-7890")

    contacts = {c.kind: c for c in ContactPoint.objects.filter(owner=owner)}
    assert set(contacts) == {ContactPoint.Kind.POSTAL, ContactPoint.Kind.MOBILE}
    assert contacts[ContactPoint.Kind.MOBILE].value == "+6281234567890"
    assert contacts[ContactPoint.Kind.MOBILE].value_hash == contact_hash(kind="mobile", value="0812 3456 7890")


def test_a_vehicle_is_found_by_its_plate_however_it_is_written(db):
    owner = owner_create(name="Siti Aminah", address="Jl. Kenanga 2, Bandung")
    vehicle = vehicle_register(
        plate="d1234abc",
        owner=owner,
        vehicle_type="car",
        make="Toyota",
        colour="Hitam",
        chassis_number="MHF11KF8000000001",
        engine_number="2NR0000001",
    )

    assert Vehicle.objects.get(pk=vehicle.pk).plate == "D 1234 ABC"
    assert vehicle_find_by_plate(plate="D 1234 ABC") == vehicle
    assert vehicle_find_by_plate(plate="d1234abc") == vehicle
    assert vehicle_find_by_plate(plate="D 1234 ABD") is None
    assert vehicle_find_by_plate(plate="not a plate") is None
