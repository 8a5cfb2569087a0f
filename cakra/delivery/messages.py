"""What a delivery says: the rendered message for its channel.

Every message carries only what identifies the notice (number, plate, date,
place, article, fine, deadline, verification code) and exactly one link, to
the official portal's lookup page. No owner name or address: the provider
(SMTP relay, WhatsApp solution provider) is a processor and gets the minimum.
Bahasa Indonesia first, then English.

**Rendering speed.** The templates under ``delivery/email/`` are ordinary
Django templates, but they use only text, ``{{ variable }}`` and
``{% autoescape %}``. Each is parsed by Django once per process and turned into
one ``str.format_map`` pattern (:func:`_compiled`), so a message costs a few
microseconds instead of a template render with its context stack (~0.5 ms for
the three). The escaping rule is Django's own: a variable inside an
autoescaping block is HTML-escaped (``html.escape``, exactly what Django's
``escape`` does), one inside ``{% autoescape off %}`` is not. A template that
uses anything else (a filter, a tag, a dotted lookup) is refused when first
loaded rather than rendered differently.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.template import Engine
from django.template.base import Node, NodeList, TextNode, Variable, VariableNode
from django.template.defaulttags import AutoEscapeControlNode, CommentNode
from django.utils import translation
from django.utils.dates import MONTHS, WEEKDAYS

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.models import Channel, Delivery
from cakra.enforcement.models import Notice
from cakra.enforcement.numbers import notice_number_display

SUBJECT_TEMPLATE = "delivery/email/notice_subject.txt"
TEXT_TEMPLATE = "delivery/email/notice.txt"
HTML_TEMPLATE = "delivery/email/notice.html"
# Suffix of the format-field name that stands for the HTML-escaped value of a
# variable; "|" cannot occur in a Django variable name, so no clash.
_ESCAPED = "|html"


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


# --- Dates ---------------------------------------------------------------------
# The same words Django's dateformat writes for "l" and "F" (its WEEKDAYS and
# MONTHS through the active translation), looked up once per process and
# language instead of under translation.override for every field of every
# message. Translation catalogues do not change while a process runs.


@functools.cache
def _date_names(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    with translation.override(language):
        return tuple(str(WEEKDAYS[i]) for i in range(7)), tuple(str(MONTHS[i]) for i in range(1, 13))


def _zone_name(moment: datetime) -> str:
    """Django's "T": the zone's abbreviation (WIB, WITA, WIT), or nothing for a
    wall-clock time that a DST change makes ambiguous or impossible."""
    tz = moment.tzinfo
    if tz is None or tz.utcoffset(moment.replace(fold=not moment.fold)) != tz.utcoffset(moment):
        return ""
    return str(tz.tzname(moment))


def _day_id(day: date) -> str:
    """``l, j F Y`` in Bahasa Indonesia: ``Sabtu, 28 November 2026``."""
    weekdays, months = _date_names("id")
    return f"{weekdays[day.weekday()]}, {day.day} {months[day.month - 1]} {day.year:04d}"


def _day_en(day: date) -> str:
    """``l j F Y`` in English: ``Saturday 28 November 2026``."""
    weekdays, months = _date_names("en")
    return f"{weekdays[day.weekday()]} {day.day} {months[day.month - 1]} {day.year:04d}"


def _email_context(notice: Notice) -> dict[str, str]:
    violation = notice.violation
    region = notice.region
    captured_at = violation.captured_at.astimezone(ZoneInfo(region.timezone))
    zone = _zone_name(captured_at)
    article = notice.article
    lookup_url = notice_lookup_url(number=notice.number)
    return {
        "region_name": region.name,
        "number_display": notice_number_display(notice.number),
        "plate": notice.vehicle.plate,
        # "l, j F Y, \p\u\k\u\l H.i T" and "l j F Y, H:i T" as Django formats them.
        "captured_at_id": f"{_day_id(captured_at)}, pukul {captured_at.hour:02d}.{captured_at.minute:02d} {zone}",
        "captured_at_en": f"{_day_en(captured_at)}, {captured_at.hour:02d}:{captured_at.minute:02d} {zone}",
        "location": violation.location,
        "article_reference": f"Pasal {article.code} {article.law}",
        "article_reference_en": f"Article {article.code} {article.law}",
        "article_title_id": article.title_id,
        "article_title_en": article.title_en,
        "fine": rupiah(notice.fine_amount),
        "confirm_by_id": _day_id(notice.confirm_by),
        "confirm_by_en": _day_en(notice.confirm_by),
        "verification_code": notice.verification_code,
        "lookup_url": lookup_url,
        # The link's visible text is the address itself (without the scheme),
        # so a reader sees the official domain before clicking.
        "lookup_url_display": lookup_url.partition("://")[2],
        "official_domain": settings.CAKRA_OFFICIAL_DOMAIN,
    }


# --- Templates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    pattern: str  # for str.format_map: "{name}" raw, "{name|html}" escaped
    escaped: frozenset[str]  # variables the pattern needs HTML-escaped


def _flatten(nodelist: NodeList, *, autoescape: bool, pieces: list[str], escaped: set[str], name: str) -> None:
    node: Node
    for node in nodelist:
        if isinstance(node, TextNode):
            pieces.append(node.s.replace("{", "{{").replace("}", "}}"))
        elif isinstance(node, VariableNode):
            expression = node.filter_expression
            variable = expression.var
            if (
                expression.filters
                or not isinstance(variable, Variable)
                or variable.translate
                or variable.lookups is None
                or len(variable.lookups) != 1
            ):
                msg = f"{name}: only plain {{{{ variable }}}} is supported, not {expression.token!r}"
                raise ImproperlyConfigured(msg)
            var_name = variable.lookups[0]
            if autoescape:
                escaped.add(var_name)
                pieces.append("{" + var_name + _ESCAPED + "}")
            else:
                pieces.append("{" + var_name + "}")
        elif isinstance(node, AutoEscapeControlNode):
            _flatten(node.nodelist, autoescape=node.setting, pieces=pieces, escaped=escaped, name=name)
        elif not isinstance(node, CommentNode):
            msg = f"{name}: only text, {{{{ variable }}}} and {{% autoescape %}} are supported, not {node!r}"
            raise ImproperlyConfigured(msg)


@functools.cache
def _compiled(name: str) -> _Compiled:
    """The template, parsed by Django's engine once per process.

    Cached for the life of the process, like Django's own cached template
    loader: the files change only with a deployment, which restarts workers.
    The pattern holds no data, only the template's text.
    """
    engine = Engine.get_default()
    template = engine.get_template(name)
    pieces: list[str] = []
    escaped: set[str] = set()
    _flatten(template.nodelist, autoescape=engine.autoescape, pieces=pieces, escaped=escaped, name=name)
    return _Compiled(pattern="".join(pieces), escaped=frozenset(escaped))


def _render(compiled: _Compiled, values: dict[str, str]) -> str:
    # A variable missing from the context raises KeyError (Django would render
    # nothing): a wrong notice is worse than a failed attempt, which is retried.
    return compiled.pattern.format_map(values)


@functools.cache
def _notice_templates() -> tuple[_Compiled, _Compiled, _Compiled, tuple[str, ...]]:
    """Subject, text and HTML templates, and the variables any of them escapes."""
    subject, text, body = _compiled(SUBJECT_TEMPLATE), _compiled(TEXT_TEMPLATE), _compiled(HTML_TEMPLATE)
    return subject, text, body, tuple(sorted(subject.escaped | text.escaped | body.escaped))


def email_render(*, notice: Notice) -> RenderedEmail:
    """Subject, plain text and HTML of the notice email (templates under delivery/email/)."""
    values = _email_context(notice)
    subject, text, body, escaped = _notice_templates()
    # Every variable in an autoescaping block is escaped: camera-supplied text
    # (the location) cannot inject markup into the HTML part. The text
    # templates turn escaping off.
    for key in escaped:
        values[key + _ESCAPED] = html.escape(values[key])
    return RenderedEmail(
        subject=" ".join(_render(subject, values).split()),  # one line: a header cannot carry a line break
        text=_render(text, values),
        html=_render(body, values),
    )


def outbound_message_build(*, delivery: Delivery) -> OutboundMessage:
    """The message for one delivery, ready for its channel's adapter.

    Reads only the delivery's notice (with its violation, region, article and
    vehicle) and contact point: loaded with ``select_related`` they cost no
    query here.
    """
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
