"""Reads on the registry mirror."""

from __future__ import annotations

from cakra.registry.models import Vehicle
from cakra.registry.plates import InvalidPlateError, plate_compact


def vehicle_find_by_plate(*, plate: str) -> Vehicle | None:
    try:
        compact = plate_compact(plate)
    except InvalidPlateError:
        return None
    return Vehicle.objects.select_related("owner").filter(plate_compact=compact).first()
