"""Display filters for officer pages."""

from __future__ import annotations

from django import template
from django.utils.functional import Promise as StrPromise
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from cakra.enforcement import fines
from cakra.enforcement.models import Article
from cakra.enforcement.numbers import notice_number_display

register = template.Library()


@register.filter
def rupiah(amount: int | None) -> str:
    """``500000`` → ``Rp500.000`` (Indonesian grouping with dots, whatever the UI language)."""
    return "" if amount is None else fines.rupiah(amount)


@register.filter
def notice_number(number: str) -> str:
    """Grouped in fours for reading aloud over the phone."""
    return notice_number_display(number)


@register.filter
def article_title(article: Article) -> str:
    return article.title_en if (get_language() or "").startswith("en") else article.title_id


# Model choice labels are English and not marked for translation (they live in
# other apps); officers read these instead.
_LABELS: dict[tuple[str, str], StrPromise] = {
    ("violation", "received"): _("Waiting for review"),
    ("violation", "validated"): _("Validated"),
    ("violation", "rejected"): _("Rejected"),
    ("notice", "issued"): _("Issued"),
    ("notice", "notified"): _("Notified"),
    ("notice", "confirmed"): _("Confirmed"),
    ("notice", "cancelled"): _("Cancelled"),
    ("delivery", "planned"): _("Planned (fallback)"),
    ("delivery", "pending"): _("Waiting to send"),
    ("delivery", "sending"): _("Sending"),
    ("delivery", "sent"): _("Sent"),
    ("delivery", "delivered"): _("Delivered"),
    ("delivery", "read"): _("Read"),
    ("delivery", "failed_temporary"): _("Failed, will retry"),
    ("delivery", "failed_permanent"): _("Failed permanently"),
    ("outcome", "sent"): _("Accepted by the provider"),
    ("outcome", "retryable"): _("Temporary error"),
    ("outcome", "throttled"): _("Throttled by the provider"),
    ("outcome", "permanent"): _("Permanent error"),
    ("outcome", "duplicate"): _("Duplicate"),
    # What a provider's receipt reported (the notice timeline's outcome column).
    ("outcome", "delivered"): _("Delivered"),
    ("outcome", "read"): _("Read"),
    ("outcome", "failed"): _("Failed"),
    ("outcome", "deferred"): _("Deferred by the provider"),
    # Notice timeline events (audit actions).
    ("event", "notice.issued"): _("Notice issued"),
    ("event", "delivery.planned"): _("Delivery planned"),
    ("event", "delivery.sent"): _("Handed to the provider"),
    ("event", "delivery.failed"): _("Attempt failed"),
    ("event", "delivery.lease_expired"): _("Sender stopped mid-send; sent again"),
    ("event", "delivery.receipt"): _("Provider receipt"),
    ("event", "delivery.timed_out"): _("Not confirmed by the cut-off"),
    ("event", "delivery.fallback"): _("Moved to the next channel"),
    ("event", "delivery.plan_exhausted"): _("No channel left"),
    ("event", "notice.notified"): _("Notified"),
    ("channel", "whatsapp"): _("WhatsApp"),
    ("channel", "sms"): _("SMS"),
    ("channel", "email"): _("Email"),
    ("channel", "post"): _("Post"),
    ("contact", "mobile"): _("Mobile phone"),
    ("contact", "email"): _("Email"),
    ("contact", "postal"): _("Postal address"),
    ("vehicle", "car"): _("Car"),
    ("vehicle", "motorcycle"): _("Motorcycle"),
    ("vehicle", "truck"): _("Truck"),
    ("vehicle", "bus"): _("Bus"),
    ("owner", "person"): _("Person"),
    ("owner", "organisation"): _("Organisation"),
    ("role", "validator"): _("Validator (investigator)"),
    ("role", "supervisor"): _("Supervisor"),
    ("role", "auditor"): _("Auditor"),
    ("role", "admin"): _("Administrator"),
}


@register.filter
def label(value: str, kind: str) -> str:
    """``{{ violation.status|label:"violation" }}``: the translated label, or the raw value."""
    return str(_LABELS.get((kind, str(value)), value))
