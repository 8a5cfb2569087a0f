"""Writes on the registry mirror: owners, contact points, vehicles."""

from __future__ import annotations

from django.db import transaction

from cakra.registry.models import ContactPoint, Owner, Vehicle
from cakra.registry.normalise import contact_normalise
from cakra.registry.plates import plate_compact, plate_normalise
from cakra.security.crypto import lookup_hash


def contact_hash(*, kind: str, value: str) -> str:
    return lookup_hash(contact_normalise(kind=kind, value=value), purpose=f"contact:{kind}")


@transaction.atomic
def owner_create(
    *,
    name: str,
    nik: str = "",
    kind: str = Owner.Kind.PERSON,
    address: str,
    mobile: str = "",
    email: str = "",
) -> Owner:
    owner = Owner.objects.create(kind=kind, name=name, nik=nik, nik_hash=lookup_hash(nik, purpose="nik") if nik else "")
    for contact_kind, value in (
        (ContactPoint.Kind.POSTAL, address),
        (ContactPoint.Kind.MOBILE, mobile),
        (ContactPoint.Kind.EMAIL, email),
    ):
        if value:
            normalised = contact_normalise(kind=contact_kind, value=value)
            ContactPoint.objects.create(
                owner=owner,
                kind=contact_kind,
                value=normalised,
                value_hash=contact_hash(kind=contact_kind, value=normalised),
            )
    return owner


def vehicle_register(
    *,
    plate: str,
    owner: Owner,
    vehicle_type: str,
    make: str,
    model: str = "",
    colour: str,
    year: int | None = None,
    chassis_number: str,
    engine_number: str,
) -> Vehicle:
    return Vehicle.objects.create(
        plate=plate_normalise(plate),
        plate_compact=plate_compact(plate),
        vehicle_type=vehicle_type,
        make=make,
        model=model,
        colour=colour,
        year=year,
        chassis_number=chassis_number,
        engine_number=engine_number,
        owner=owner,
    )
