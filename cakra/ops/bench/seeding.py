"""Setup before the clock starts: room on disk, the bench region, its API key, and
one registered vehicle per notice whose owner has a contact of every channel
(one mobile number for the phone channels together)."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings

from cakra.api.services import apikey_create
from cakra.enforcement.models import Region
from cakra.ops.bench.channels.base import BenchChannel
from cakra.ops.bench.config import REGION_CODE
from cakra.ops.bench.statistics import autoanalyze_as_autovacuum
from cakra.registry.models import ContactPoint, Owner, Vehicle
from cakra.registry.services import contact_hash

PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
# Original evidence + simulator storage + database rows per notice, with margin.
DISK_MARGIN = 1.5
DB_BYTES_PER_NOTICE = 12_000
SEED_CHUNK = 2000


def plate_for_index(index: int) -> str:
    number = index % 9999 + 1
    rest = index // 9999
    letters = ""
    for _ in range(3):
        letters += PLATE_LETTERS[rest % len(PLATE_LETTERS)]
        rest //= len(PLATE_LETTERS)
    return f"B {number} {letters}"


def disk_check(*, notices: int, pool: list[bytes], channels: Sequence[BenchChannel]) -> None:
    per_notice = (
        statistics.mean(len(p) for p in pool)
        + DB_BYTES_PER_NOTICE
        + sum(channel.stored_bytes_per_message for channel in channels)
    )
    needed = int(notices * per_notice * DISK_MARGIN)
    for path in {Path(settings.EVIDENCE_ROOT), Path(settings.DATA_DIR)}:
        path.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path).free
        if free < needed:
            msg = f"bench needs ~{needed / 1e9:.1f} GB free at {path}; {free / 1e9:.1f} GB free"
            raise RuntimeError(msg)


def registry_seed(*, notices: int, channels: Sequence[BenchChannel], log: Callable[[str], None]) -> str:
    """The bench region (its plan: ``channels`` in order), a pre-validated
    key and one registered vehicle (its owner with a contact of each
    channel) per notice; bulk inserts, encryption included. Returns the key's token."""
    plan = tuple(channel.name for channel in channels)
    region_fields: dict[str, object] = {
        "name": "Bench region",
        "plate_prefixes": ["B"],
        "channel_order": list(plan),
        "letterhead": "BENCH",
        "signatory_name": "Bench",
        "signatory_title": "Bench",
    }
    for channel in channels:
        region_fields |= channel.region_fields()
    region, _ = Region.objects.update_or_create(code=REGION_CODE, defaults=region_fields)
    for channel in channels:
        channel.database_prepare()
    have = Vehicle.objects.filter(plate__startswith="B ").count()
    for start in range(have, notices, SEED_CHUNK):
        stop = min(notices, start + SEED_CHUNK)
        owners = [Owner(name=f"Pemilik {i}", nik="", nik_hash="") for i in range(start, stop)]
        Owner.objects.bulk_create(owners)
        contacts = []
        vehicles = []
        for i, owner in zip(range(start, stop), owners, strict=True):
            # Channels of one contact kind share the owner's contact (WhatsApp and SMS a number).
            values = {(channel.contact_kind, channel.contact_value(i, plan=plan)) for channel in channels}
            for kind, value in sorted(values):
                contacts.append(
                    ContactPoint(owner=owner, kind=kind, value=value, value_hash=contact_hash(kind=kind, value=value))
                )
            plate = plate_for_index(i)
            vehicles.append(
                Vehicle(
                    plate=plate,
                    plate_compact=plate.replace(" ", ""),
                    vehicle_type=Vehicle.Type.CAR,
                    make="Toyota",
                    model="Avanza",
                    colour="Hitam",
                    chassis_number=f"MHBENCH{i:010d}",
                    engine_number=f"EB{i:09d}",
                    owner=owner,
                )
            )
        ContactPoint.objects.bulk_create(contacts)
        Vehicle.objects.bulk_create(vehicles)
        if (stop // SEED_CHUNK) % 10 == 0 or stop == notices:
            log(f"  registry: {stop:,}/{notices:,} vehicles")
    # Fresh statistics for the tables just seeded, as autovacuum would take
    # them after a bulk load; the pipeline's tables get theirs as they grow,
    # from autoanalyze_as_autovacuum during the run.
    autoanalyze_as_autovacuum()
    return apikey_create(region_code=region.code, name="bench", pre_validated=True, actor="bench").token
