"""Synthetic demo data: regions, a registry of vehicles and owners (Faker
``id_ID``), officers, API keys. Nothing here is real personal data."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from faker import Faker

from cakra.api.services import apikey_create
from cakra.backoffice.models import TOTP_SEED_BYTES, Officer, OfficerTOTPDevice
from cakra.backoffice.services import officer_totp_device_create
from cakra.demo.regions import DEMO_REGIONS
from cakra.enforcement.models import Notice, Region
from cakra.registry.models import Vehicle
from cakra.registry.services import owner_create, vehicle_register
from cakra.simulators.magic import Magic, magic_number

# Indonesian mobile operator prefixes (after +62): Telkomsel, Indosat, XL, Smartfren, Tri.
MOBILE_PREFIXES = [
    "811",
    "812",
    "813",
    "821",
    "822",
    "852",
    "853",
    "814",
    "815",
    "816",
    "855",
    "856",
    "857",
    "858",
    "817",
    "818",
    "819",
    "859",
    "877",
    "878",
    "881",
    "882",
    "883",
    "895",
    "896",
    "897",
]
VEHICLE_MODELS = [
    ("car", "Toyota", "Avanza"),
    ("car", "Toyota", "Innova"),
    ("car", "Daihatsu", "Xenia"),
    ("car", "Honda", "Brio"),
    ("car", "Mitsubishi", "Xpander"),
    ("car", "Suzuki", "Ertiga"),
    ("motorcycle", "Honda", "Beat"),
    ("motorcycle", "Honda", "Vario 125"),
    ("motorcycle", "Yamaha", "NMAX"),
    ("motorcycle", "Yamaha", "Mio"),
    ("motorcycle", "Suzuki", "Nex II"),
    ("truck", "Mitsubishi", "Colt Diesel"),
    ("truck", "Isuzu", "Elf"),
    ("bus", "Hino", "RK8"),
]
COLOURS = ["Hitam", "Putih", "Silver", "Merah", "Biru", "Abu-abu"]
# Reserved example domains (RFC 2606): demo mail can never reach anyone.
EMAIL_DOMAINS = ["example.com", "example.net", "example.org"]
DEMO_PASSWORD_BYTES = 12


@dataclass
class DemoCredentials:
    officers: list[dict[str, str]] = field(default_factory=list)
    api_keys: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def path(cls) -> Path:
        return Path(settings.DATA_DIR) / "demo-credentials.json"

    def save(self) -> None:
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    @classmethod
    def load(cls) -> DemoCredentials | None:
        path = cls.path()
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


# Owners whose number the simulators treat as not on WhatsApp, so the demo
# shows the plan falling back to SMS, and a few whose SMS fails too (-> email).
NOT_ON_WHATSAPP_SHARE = 0.08
SMS_UNDELIVERABLE_SHARE = 0.02


def mobile_number(rng: random.Random) -> str:
    draw = rng.random()
    if draw < NOT_ON_WHATSAPP_SHARE:
        return magic_number(Magic.NOT_ON_WHATSAPP, rng.randint(0, 999_999))
    if draw < NOT_ON_WHATSAPP_SHARE + SMS_UNDELIVERABLE_SHARE:
        return magic_number(Magic.NOT_ON_WHATSAPP_SMS_UNDELIVERABLE, rng.randint(0, 999_999))
    return f"+62{rng.choice(MOBILE_PREFIXES)}{rng.randint(10_000_000, 99_999_999)}"


def plate_for(prefix: str, rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    suffix = "".join(rng.choice(letters) for _ in range(rng.randint(1, 3)))
    return f"{prefix} {rng.randint(1, 9999)} {suffix}"


def regions_seed() -> list[Region]:
    regions = []
    for row in DEMO_REGIONS:
        region, _ = Region.objects.update_or_create(code=row["code"], defaults=row)
        regions.append(region)
    return regions


def registry_seed(*, regions: list[Region], vehicles_per_region: int, seed: int) -> int:
    """Create owners and vehicles; returns how many vehicles were created."""
    fake = Faker("id_ID")
    fake.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    created = 0
    for region in regions:
        for _ in range(vehicles_per_region):
            plate = plate_for(rng.choice(region.plate_prefixes), rng)
            if Vehicle.objects.filter(plate_compact=plate.replace(" ", "")).exists():
                continue
            with transaction.atomic():
                is_company = rng.random() < 0.08  # noqa: PLR2004
                owner = owner_create(
                    kind="organisation" if is_company else "person",
                    name=fake.company() if is_company else fake.name(),
                    nik="" if is_company else fake.numerify("3171############"),
                    address=fake.address().replace("\n", ", "),
                    mobile=mobile_number(rng) if rng.random() < 0.9 else "",  # noqa: PLR2004
                    email=f"{fake.user_name()}{rng.randint(1, 999)}@{rng.choice(EMAIL_DOMAINS)}"
                    if rng.random() < 0.75  # noqa: PLR2004
                    else "",
                )
                vehicle_type, make, model = rng.choice(VEHICLE_MODELS)
                vehicle_register(
                    plate=plate,
                    owner=owner,
                    vehicle_type=vehicle_type,
                    make=make,
                    model=model,
                    colour=rng.choice(COLOURS),
                    year=rng.randint(2008, 2025),
                    chassis_number=fake.bothify("MH###########????").upper(),
                    engine_number=fake.bothify("??#########").upper(),
                )
            created += 1
    return created


def officers_seed(*, regions: list[Region]) -> list[dict[str, str]]:
    """One validator per region, TOTP already enrolled so the demo can log in."""
    out = []
    for region in regions:
        username = f"{region.code.lower()}.validator"
        password = secrets.token_urlsafe(DEMO_PASSWORD_BYTES)
        officer, _ = Officer.objects.update_or_create(
            username=username,
            defaults={"region": region, "role": Officer.Role.VALIDATOR, "first_name": "Demo", "last_name": region.code},
        )
        officer.set_password(password)
        officer.save()
        OfficerTOTPDevice.objects.filter(user=officer).delete()
        key = secrets.token_bytes(TOTP_SEED_BYTES)
        officer_totp_device_create(officer=officer, name="demo authenticator", confirmed=True, seed=key)
        out.append(
            {
                "username": username,
                "password": password,
                "region": region.code,
                "totp_secret": base64.b32encode(key).decode(),
            }
        )
    return out


def apikeys_seed(*, regions: list[Region]) -> list[dict[str, str]]:
    out = []
    for region in regions:
        for pre_validated in (False, True):
            issued = apikey_create(
                region_code=region.code,
                name=f"ETLE back office {region.code}{' (pre-validated)' if pre_validated else ''}",
                pre_validated=pre_validated,
                actor="demo",
            )
            out.append({"region": region.code, "pre_validated": str(pre_validated).lower(), "token": issued.token})
    return out


def demo_summary(credentials: DemoCredentials) -> str:
    """What `make run` prints: where everything is and how to sign in."""
    base = settings.CAKRA_PORTAL_BASE_URL
    sink = f"http://127.0.0.1:{settings.CAKRA_SINK['HTTP_PORT']}/"
    lines = [
        "",
        "Cakra demo (synthetic data only)",
        f"  Citizen portal   {base}/",
        f"  Back office      {base}/backoffice/",
        f"  API              {base}/api/v1/  (schema: {base}/api/v1/openapi.json)",
        f"  Mail sink        {sink}",
        f"  WhatsApp phones  http://127.0.0.1:{settings.CAKRA_WHATSAPP_SIM['HTTP_PORT']}/",
        "  (owners on +62 819 993… are not on WhatsApp: their notices fall back to SMS)",
        "",
        "  Officers (password, then a TOTP code from an authenticator app with the secret,",
        "  or from: .venv/bin/cakra demo --totp USERNAME)",
    ]
    lines += [
        f"    {o['username']:<18} password {o['password']}  TOTP secret {o['totp_secret']}"
        for o in credentials.officers
    ]
    lines += ["", "  API keys (Authorization: Bearer …)"]
    for key in credentials.api_keys:
        kind = "pre-validated" if key["pre_validated"] == "true" else "officer review"
        lines.append(f"    {key['region']:<6} {kind:<14} {key['token']}")
    samples = Notice.objects.select_related("vehicle").filter(vehicle__isnull=False).order_by("-issued_at")[:3]
    if samples:
        lines += ["", "  Try the portal with (notice number + plate):"]
        lines += [f"    {notice.number}  {notice.vehicle.plate}" for notice in samples if notice.vehicle is not None]
    return "\n".join([*lines, ""])
