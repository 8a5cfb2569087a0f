"""What a delivery says: the rendered message for its channel.

Every message carries only what identifies the notice (number, plate, date,
place, article, fine, deadline, verification code) and exactly one link, to
the official portal's lookup page. No owner name or address: the provider
(SMTP relay, WhatsApp solution provider) is a processor and gets the minimum.
Bahasa Indonesia first, then English.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import dateformat, translation

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.models import Channel, Delivery
from cakra.enforcement.models import Notice
from cakra.enforcement.numbers import notice_number_display


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def rupiah(amount: int) -> str:
    """Rupiah as Indonesians write it: ``Rp500.000``."""
    return f"Rp{amount:,}".replace(",", ".")


def notice_lookup_url(*, number: str) -> str:
    """The portal's lookup page, with the number prefilled: the one link a message carries."""
    return f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?{urlencode({'n': number})}"


def _in_language(language: str, value: datetime | date, pattern: str) -> str:
    with translation.override(language):
        return dateformat.format(value, pattern)


def _email_context(notice: Notice) -> dict[str, Any]:
    violation = notice.violation
    region = notice.region
    captured_at = violation.captured_at.astimezone(ZoneInfo(region.timezone))
    article = notice.article
    lookup_url = notice_lookup_url(number=notice.number)
    return {
        "region_name": region.name,
        "number_display": notice_number_display(notice.number),
        "plate": notice.vehicle.plate,
        "captured_at_id": _in_language("id", captured_at, "l, j F Y, \\p\\u\\k\\u\\l H.i T"),
        "captured_at_en": _in_language("en", captured_at, "l j F Y, H:i T"),
        "location": violation.location,
        "article_reference": f"Pasal {article.code} {article.law}",
        "article_reference_en": f"Article {article.code} {article.law}",
        "article_title_id": article.title_id,
        "article_title_en": article.title_en,
        "fine": rupiah(notice.fine_amount),
        "confirm_by_id": _in_language("id", notice.confirm_by, "l, j F Y"),
        "confirm_by_en": _in_language("en", notice.confirm_by, "l j F Y"),
        "verification_code": notice.verification_code,
        "lookup_url": lookup_url,
        # The link's visible text is the address itself (without the scheme),
        # so a reader sees the official domain before clicking.
        "lookup_url_display": lookup_url.partition("://")[2],
        "official_domain": settings.CAKRA_OFFICIAL_DOMAIN,
    }


def email_render(*, notice: Notice) -> RenderedEmail:
    """Subject, plain text and HTML of the notice email (templates under delivery/email/)."""
    context = _email_context(notice)
    # Django templates autoescape: camera-supplied text (the location) cannot
    # inject markup into the HTML part. The text templates turn escaping off.
    subject = render_to_string("delivery/email/notice_subject.txt", context)
    return RenderedEmail(
        subject=" ".join(subject.split()),  # one line: a header cannot carry a line break
        text=render_to_string("delivery/email/notice.txt", context),
        html=render_to_string("delivery/email/notice.html", context),
    )


def outbound_message_build(*, delivery: Delivery) -> OutboundMessage:
    """The message for one delivery, ready for its channel's adapter."""
    notice = delivery.notice
    if delivery.channel != Channel.EMAIL:
        msg = f"no message format for channel {delivery.channel!r} yet"
        raise ValueError(msg)
    rendered = email_render(notice=notice)
    return OutboundMessage(
        reference=str(delivery.id),
        recipient=delivery.contact_point.value,
        sender=SenderIdentity(address=notice.region.email_from_address, display_name=notice.region.email_from_name),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )
