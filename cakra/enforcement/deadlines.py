"""Deadlines from a region's policy, counted in the region's own time zone."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from cakra.enforcement.models import Region


def confirmation_deadline(*, region: Region, captured_at: datetime, issued_at: datetime) -> date:
    zone = ZoneInfo(region.timezone)
    basis = captured_at if region.confirmation_basis == Region.DeadlineBasis.VIOLATION else issued_at
    return basis.astimezone(zone).date() + timedelta(days=region.confirmation_days)
