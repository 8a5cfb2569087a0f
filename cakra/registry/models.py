"""The vehicle registry (ERI / Regident mirror): vehicles, owners, contact points.

Personal fields are encrypted in the application; ``*_hash`` columns hold
keyed hashes for lookup (see cakra.security.crypto).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models

from cakra.db import time_ordered_uuid
from cakra.security.fields import EncryptedTextField


class Owner(models.Model):
    class Kind(models.TextChoices):
        PERSON = "person", "Person"
        ORGANISATION = "organisation", "Organisation"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PERSON)
    name = EncryptedTextField()
    nik = EncryptedTextField(blank=True)
    nik_hash = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Owner {self.id}"


class ContactPoint(models.Model):
    """A way to reach an owner. ``postal`` is the registered address (channel of record)."""

    class Kind(models.TextChoices):
        POSTAL = "postal", "Postal address"
        MOBILE = "mobile", "Mobile phone"
        EMAIL = "email", "Email"

    owner = models.ForeignKey(Owner, on_delete=models.CASCADE, related_name="contact_points")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # The database numbers contact points at insert, too late to bind the
    # ciphertext to the key; (owner, kind, value hash) is unique by the
    # constraint below and known before the insert. A value moved to another
    # row fails to decrypt unless that row is the same owner's, of the same
    # kind, with the same value's hash: nothing to gain.
    value = EncryptedTextField(bound_to=("owner_id", "kind", "value_hash"))
    value_hash = models.CharField(max_length=64, db_index=True)
    is_active = models.BooleanField(default=True)
    source = models.CharField(max_length=32, default="registry")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["owner", "kind", "value_hash"], name="contact_point_unique_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} contact of {self.owner_id}"


class Vehicle(models.Model):
    class Type(models.TextChoices):
        CAR = "car", "Mobil"
        MOTORCYCLE = "motorcycle", "Sepeda motor"
        TRUCK = "truck", "Truk"
        BUS = "bus", "Bus"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    plate = models.CharField(max_length=16)
    plate_compact = models.CharField(max_length=12, unique=True)
    vehicle_type = models.CharField(max_length=16, choices=Type.choices)
    make = models.CharField(max_length=64)
    model = models.CharField(max_length=64, blank=True)
    colour = models.CharField(max_length=32)
    year = models.PositiveSmallIntegerField(null=True, blank=True)
    # Chassis and engine numbers are used as ownership "proof" by older portals
    # and leak through tracking apps: encrypted like personal data.
    chassis_number = EncryptedTextField()
    engine_number = EncryptedTextField()
    owner = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="vehicles")
    registration_valid_until = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.plate
