"""Reads on deliveries."""

from __future__ import annotations

from cakra.delivery.models import Delivery
from cakra.enforcement.models import Region


def delivery_get_for_send(*, delivery_id: str) -> Delivery:
    """A delivery with everything its message is rendered from, in one query."""
    return Delivery.objects.select_related(
        "contact_point",
        "notice__region",
        "notice__article",
        "notice__violation",
        "notice__vehicle",
    ).get(pk=delivery_id)


def email_sender_domains() -> list[str]:
    """Every domain regions send email from: each must publish the DKIM record."""
    addresses = Region.objects.exclude(email_from_address="").values_list("email_from_address", flat=True)
    return sorted({address.rpartition("@")[2].lower() for address in addresses})
