"""factory_boy factories for synthetic test data (Faker id_ID)."""

from __future__ import annotations

import functools
import io
from datetime import datetime
from typing import Any

import factory
from faker import Faker
from PIL import Image

from cakra.api.intake import EvidenceSubmission, ViolationSubmission, violation_receive
from cakra.api.models import ApiKey
from cakra.api.services import apikey_create
from cakra.backoffice.models import Officer
from cakra.enforcement.models import Article, Notice, Region, Violation
from cakra.registry.models import Owner, Vehicle
from cakra.registry.services import owner_create, vehicle_register

fake = Faker("id_ID")
OFFICER_PASSWORD = "correct horse battery staple 42"


class RegionFactory(factory.django.DjangoModelFactory[Region]):
    class Meta:
        model = Region
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"R{n}")
    name = factory.LazyAttribute(lambda o: f"Polda {o.code}")
    plate_prefixes = factory.LazyFunction(lambda: ["B"])
    channel_order = factory.LazyFunction(lambda: ["whatsapp", "sms", "email", "post"])
    email_from_address = factory.LazyAttribute(lambda o: f"etle-{o.code.lower()}@korlantas.polri.go.id")
    email_from_name = factory.LazyAttribute(lambda o: f"ETLE {o.name}")
    whatsapp_sender = "+62 811 1500 669"
    whatsapp_phone_number_id = "109900000000669"
    whatsapp_display_name = factory.LazyAttribute(lambda o: f"ETLE {o.name}")
    sms_sender_id = "POLRI-ETLE"
    letterhead = factory.LazyAttribute(lambda o: f"KEPOLISIAN NEGARA REPUBLIK INDONESIA\n{o.name.upper()}")
    signatory_name = "AKBP Contoh Penandatangan"
    signatory_title = "Kasubdit Gakkum"


def make_owner(**overrides: Any) -> Owner:
    values: dict[str, Any] = {
        "name": fake.name(),
        "nik": fake.numerify("################"),
        "address": fake.address().replace("\n", ", "),
        "mobile": "+62812" + fake.numerify("########"),
        "email": fake.user_name() + "@example.co.id",
    }
    values.update(overrides)
    return owner_create(**values)


class VehicleFactory(factory.django.DjangoModelFactory[Vehicle]):
    class Meta:
        model = Vehicle

    plate = factory.Sequence(lambda n: f"B {1000 + n} ABC")
    owner = factory.LazyFunction(make_owner)
    vehicle_type = Vehicle.Type.CAR
    make = "Toyota"
    model = "Avanza"
    colour = "Hitam"
    year = 2020
    chassis_number = factory.LazyFunction(lambda: fake.bothify("MHF##??#########").upper())
    engine_number = factory.LazyFunction(lambda: fake.bothify("1NR#######").upper())

    @classmethod
    def _create(cls, model_class: type[Vehicle], *args: Any, **kwargs: Any) -> Vehicle:
        return vehicle_register(**kwargs)


class OfficerFactory(factory.django.DjangoModelFactory[Officer]):
    class Meta:
        model = Officer

    username = factory.Sequence(lambda n: f"officer{n}")
    first_name = "Petugas"
    role = Officer.Role.VALIDATOR
    password = factory.PostGenerationMethodCall("set_password", OFFICER_PASSWORD)

    @classmethod
    def _after_postgeneration(cls, instance: Officer, create: bool, results: Any = None) -> None:
        if create:
            instance.save()


class ApiKeyFactory:
    @staticmethod
    def with_token(*, region: Region, pre_validated: bool = False) -> tuple[Any, str]:
        issued = apikey_create(region_code=region.code, name="ETLE back office", pre_validated=pre_validated)
        return issued.key, issued.token


def make_violation(*, region: Region, vehicle: Vehicle | None = None, **overrides: Any) -> Violation:
    """A received violation as intake stores it (no evidence), for service-level tests."""
    plate = vehicle.plate if vehicle is not None else "B 9 ZZZ"
    values: dict[str, Any] = {
        "capture_id": "CAP-1",
        "payload_hash": "0" * 64,
        "camera_id": "CAM-1",
        "captured_at": "2026-11-28T08:05:00+07:00",
        "location": "Jl. Jend. Sudirman, Jakarta Pusat",
        "plate": plate,
        "plate_compact": plate.replace(" ", ""),
        "article": Article.objects.get(code=overrides.pop("article_code", "287(2)")),
        "vehicle": vehicle,
    }
    values.update(overrides)
    return Violation.objects.create(region=region, **values)


@functools.cache
def capture_jpeg(colour: tuple[int, int, int] = (120, 130, 140), size: tuple[int, int] = (80, 60)) -> bytes:
    """A small, valid JPEG (made once per colour and size): intake reads its header only."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=80)
    return out.getvalue()


def make_submission(*, plate: str, **overrides: Any) -> ViolationSubmission:
    """A capture as the API would hand it to intake, with one evidence photo."""
    values: dict[str, Any] = {
        "capture_id": "CAP-1",
        "camera_id": "CAM-1",
        "captured_at": datetime.fromisoformat("2026-11-28T08:05:00+07:00"),
        "location": "Jl. Jend. Sudirman, Jakarta Pusat",
        "plate": plate,
        "article_code": "287(2)",
        "evidence": (EvidenceSubmission(kind="vehicle", content=capture_jpeg()),),
    }
    values.update(overrides)
    return ViolationSubmission(**values)


def make_notice(
    *, vehicle: Vehicle, region: Region | None = None, api_key: ApiKey | None = None, **overrides: Any
) -> Notice:
    """A notice issued the way production issues one without an officer: a
    pre-validated key's capture of a registered plate through the intake
    service (evidence stored, violation validated, notice issued, deliveries
    planned in one transaction). No HTTP, and the photo's pixels are never
    decoded. ``api_key``: a pre-validated key, or else ``region``'s new one;
    ``overrides``: the submission's fields (``make_submission``)."""
    if api_key is None:
        assert region is not None, "make_notice needs a region or a pre-validated key"
        api_key = apikey_create(region_code=region.code, name="ETLE back office", pre_validated=True).key
    assert api_key.pre_validated, "only a pre-validated key issues at intake"
    result = violation_receive(api_key=api_key, submission=make_submission(plate=vehicle.plate, **overrides))
    return Notice.objects.select_related("violation", "region", "article").get(violation=result.violation)
