"""What the notice page shows, formatted for Indonesia (and in English on request).

The page deliberately leaves out the owner's name, NIK and address: anyone
holding the letter's number and the plate reaches this page, and neither is
secret enough to justify showing identity data (UU PDP data minimisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from django.urls import reverse
from django.utils import formats, translation
from django.utils.translation import gettext as _
from django.utils.translation import pgettext

from cakra.enforcement.fines import rupiah
from cakra.enforcement.models import Evidence, Notice
from cakra.enforcement.numbers import notice_number_display
from cakra.registry.models import Vehicle
from cakra.security.freetext import location_for_display

# Indonesia's three civil time zones and their everyday abbreviations.
_ZONE_ABBREVIATIONS = {
    "Asia/Jakarta": "WIB",
    "Asia/Pontianak": "WIB",
    "Asia/Makassar": "WITA",
    "Asia/Jayapura": "WIT",
}


def status_label(status: str) -> str:
    labels: dict[str, str] = {
        Notice.Status.ISSUED: _("Issued, being sent to the registered owner"),
        Notice.Status.NOTIFIED: _("Sent to the registered owner, awaiting confirmation"),
        Notice.Status.CONFIRMED: _("Confirmed"),
        Notice.Status.CANCELLED: _("Cancelled: nothing to do or pay for this notice"),
    }
    # States added later fall back to their code rather than disappearing.
    return labels.get(status, status)


def vehicle_type_label(vehicle_type: str) -> str:
    labels: dict[str, str] = {
        Vehicle.Type.CAR: _("Car"),
        Vehicle.Type.MOTORCYCLE: _("Motorcycle"),
        Vehicle.Type.TRUCK: _("Truck"),
        Vehicle.Type.BUS: _("Bus"),
    }
    return labels.get(vehicle_type, vehicle_type)


def local_datetime(value: datetime, *, zone_name: str) -> str:
    """``Sabtu, 28 November 2026 pukul 08.05 WIB``."""
    local = value.astimezone(ZoneInfo(zone_name))
    zone = _ZONE_ABBREVIATIONS.get(zone_name) or local.tzname() or zone_name
    return _("%(date)s at %(time)s %(zone)s") % {
        "date": formats.date_format(local, pgettext("long date format", "l, j F Y")),
        "time": formats.time_format(local, pgettext("time format", "H:i")),
        "zone": zone,
    }


def long_date(value: date) -> str:
    return formats.date_format(value, pgettext("long date format", "l, j F Y"))


@dataclass(frozen=True)
class EvidenceItem:
    position: int
    url: str
    ready: bool
    # Decoding was given up on: the page says "not available", not "being prepared".
    unavailable: bool
    width: int
    height: int


def evidence_items(*, notice: Notice, evidence: list[Evidence]) -> list[EvidenceItem]:
    return [
        EvidenceItem(
            position=index,
            url=reverse("portal:evidence", kwargs={"notice_id": notice.id, "evidence_id": item.id}),
            ready=bool(item.derivative),
            unavailable=not item.derivative and item.derive_failed_at is not None,
            width=item.width,
            height=item.height,
        )
        for index, item in enumerate(evidence, start=1)
    ]


def notice_page_context(*, notice: Notice, evidence: list[Evidence]) -> dict[str, object]:
    violation = notice.violation
    article = notice.article
    vehicle = notice.vehicle
    if vehicle is None:
        # notice_get_for_citizen never returns a notice the retention schedule unlinked.
        msg = f"notice {notice.pk} has no vehicle"
        raise ValueError(msg)
    english = translation.get_language() == "en"
    return {
        "notice": notice,
        "number_display": notice_number_display(notice.number),
        "verification_code": notice.verification_code,
        "status_label": status_label(notice.status),
        "is_cancelled": notice.status == Notice.Status.CANCELLED,
        "region_name": notice.region.name,
        "captured_at": local_datetime(violation.captured_at, zone_name=notice.region.timezone),
        "location": location_for_display(violation.location),
        "measured_speed_kmh": violation.measured_speed_kmh,
        "speed_limit_kmh": violation.speed_limit_kmh,
        "article_code": article.code,
        "article_law": article.law,
        "article_title": article.title_en if english else article.title_id,
        "fine": rupiah(notice.fine_amount, english=translation.get_language().startswith("en")),
        "confirm_by": long_date(notice.confirm_by),
        "vehicle_plate": vehicle.plate,
        "vehicle_type": vehicle_type_label(vehicle.vehicle_type),
        "vehicle_make": vehicle.make,
        "vehicle_model": vehicle.model,
        "vehicle_colour": vehicle.colour,
        "evidence": evidence_items(notice=notice, evidence=evidence),
    }
