"""What a delivery says: the rendered message for its channel.

Every message carries only what identifies the notice (number, plate, date,
place, article, fine, deadline, verification code) and exactly one link, to
the official portal's lookup page. No owner name or address: the provider
(SMTP relay, WhatsApp solution provider) is a processor and gets the minimum.
Bahasa Indonesia first, then English.

**Rendering speed.** The templates under ``delivery/email/`` are ordinary
Django templates, but they use only text, ``{{ variable }}`` and
``{% autoescape %}``. Each is parsed by Django once per process and kept as
its pieces of text and its variables in turn (:func:`_compiled`), so a message
costs a join instead of a template render with its context stack
(docs/performance.md, "Fast paths"). The escaping rule is Django's own: a variable inside an
autoescaping block is HTML-escaped (``html.escape``, exactly what Django's
``escape`` does), one inside ``{% autoescape off %}`` is not. A template that
uses anything else (a filter, a tag, a dotted lookup) is refused when first
loaded rather than rendered differently. ``tests/delivery/test_differential_templates.py``
compares the result, dates included, with Django's over generated notices.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain
from operator import itemgetter
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.template import Engine
from django.template.base import Node, NodeList, TextNode, Variable, VariableNode
from django.template.defaulttags import AutoEscapeControlNode, CommentNode
from django.utils import translation
from django.utils.dates import MONTHS, WEEKDAYS

from cakra.delivery.channels.base import OutboundMessage, PermanentProviderError, SenderIdentity
from cakra.delivery.message_templates import template_message_build
from cakra.delivery.models import Channel
from cakra.delivery.selectors import DeliveryForSend, NoticeForMessage
from cakra.enforcement.fines import rupiah
from cakra.enforcement.numbers import notice_number_display
from cakra.security.freetext import location_for_display

SUBJECT_TEMPLATE = "delivery/email/notice_subject.txt"
TEXT_TEMPLATE = "delivery/email/notice.txt"
HTML_TEMPLATE = "delivery/email/notice.html"
# Suffix of the name that stands for the HTML-escaped value of a
# variable; "|" cannot occur in a Django variable name, so no clash.
_ESCAPED = "|html"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def notice_lookup_url(*, number: str) -> str:
    """The portal's lookup page, with the number prefilled: the one link a message carries."""
    # What urlencode({"n": number}) writes, without its generic walk over a mapping.
    return f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?n={quote_plus(number)}"


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


def _email_context(notice: NoticeForMessage) -> dict[str, str]:
    captured_at = notice.captured_at.astimezone(ZoneInfo(notice.region_timezone))
    zone = _zone_name(captured_at)
    lookup_url = notice_lookup_url(number=notice.number)
    return {
        "region_name": notice.region_name,
        "number_display": notice_number_display(notice.number),
        "plate": notice.plate,
        # "l, j F Y, \p\u\k\u\l H.i T" and "l j F Y, H:i T" as Django formats them.
        "captured_at_id": f"{_day_id(captured_at)}, pukul {captured_at.hour:02d}.{captured_at.minute:02d} {zone}",
        "captured_at_en": f"{_day_en(captured_at)}, {captured_at.hour:02d}:{captured_at.minute:02d} {zone}",
        # Checked again here, not only at intake: whatever reached the row
        # (an older rule, a direct write), a notice never carries a link or
        # a phone number other than the portal's.
        "location": location_for_display(notice.location),
        "article_reference": f"Pasal {notice.article_code} {notice.article_law}",
        "article_reference_en": f"Article {notice.article_code} {notice.article_law}",
        "article_title_id": notice.article_title_id,
        "article_title_en": notice.article_title_en,
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
    """A template as text and variables in turn: ``literals[i]`` comes before
    the value of ``names[i]``, and ``trail`` after the last one."""

    literals: tuple[str, ...]
    names: tuple[str, ...]  # "name" raw, "name|html" escaped
    trail: str
    escaped: frozenset[str]  # variables the template needs HTML-escaped
    # The values of ``names`` from a context, as a tuple (a KeyError for a missing one).
    fetch: Callable[[dict[str, str]], tuple[str, ...]]


def _fetcher(names: tuple[str, ...]) -> Callable[[dict[str, str]], tuple[str, ...]]:
    if len(names) > 1:
        return itemgetter(*names)  # one C call for every value (a tuple from two names on)
    if names:
        (only,) = names
        return lambda values: (values[only],)
    return lambda _values: ()


class _Pieces:
    """A template being flattened: text and variables in turn."""

    def __init__(self) -> None:
        self.literals: list[str] = []  # the text before each variable
        self.names: list[str] = []  # "name" raw, "name|html" escaped
        self.text: list[str] = []  # the text since the last variable

    def variable(self, name: str) -> None:
        self.literals.append("".join(self.text))
        self.names.append(name)
        self.text.clear()


def _flatten(nodelist: NodeList, *, autoescape: bool, pieces: _Pieces, escaped: set[str], name: str) -> None:
    node: Node
    for node in nodelist:
        if isinstance(node, TextNode):
            pieces.text.append(node.s)
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
                pieces.variable(var_name + _ESCAPED)
            else:
                pieces.variable(var_name)
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
    It holds no data, only the template's text and variable names.

    A message then joins the pieces of text with the values, instead of
    parsing a whole pattern again for every message (``str.format_map``) or
    walking the template's nodes (Django's render); a differential test holds
    it to Django's output, and docs/performance.md has the measured reason.
    """
    engine = Engine.get_default()
    template = engine.get_template(name)
    pieces = _Pieces()
    escaped: set[str] = set()
    _flatten(template.nodelist, autoescape=engine.autoescape, pieces=pieces, escaped=escaped, name=name)
    names = tuple(pieces.names)
    return _Compiled(
        literals=tuple(pieces.literals),
        names=names,
        trail="".join(pieces.text),
        escaped=frozenset(escaped),
        fetch=_fetcher(names),
    )


def _render(compiled: _Compiled, values: dict[str, str]) -> str:
    # A variable missing from the context raises KeyError (Django would render
    # nothing): a wrong notice is worse than a failed attempt, which is retried.
    return "".join(chain.from_iterable(zip(compiled.literals, compiled.fetch(values), strict=True))) + compiled.trail


@functools.cache
def _notice_templates() -> tuple[_Compiled, _Compiled, _Compiled, tuple[tuple[str, str], ...]]:
    """Subject, text and HTML templates, and the variables any of them
    escapes, each with the name its escaped value goes by."""
    subject, text, body = _compiled(SUBJECT_TEMPLATE), _compiled(TEXT_TEMPLATE), _compiled(HTML_TEMPLATE)
    escaped = sorted(subject.escaped | text.escaped | body.escaped)
    return subject, text, body, tuple((key, key + _ESCAPED) for key in escaped)


def email_render(*, notice: NoticeForMessage) -> RenderedEmail:
    """Subject, plain text and HTML of the notice email (templates under delivery/email/)."""
    values = _email_context(notice)
    subject, text, body, escaped = _notice_templates()
    # Every variable in an autoescaping block is escaped: camera-supplied text
    # (the location) cannot inject markup into the HTML part. The text
    # templates turn escaping off.
    for key, escaped_key in escaped:
        values[escaped_key] = html.escape(values[key])
    return RenderedEmail(
        subject=" ".join(_render(subject, values).split()),  # one line: a header cannot carry a line break
        text=_render(text, values),
        html=_render(body, values),
    )


# --- WhatsApp and SMS ------------------------------------------------------------
# Neither carries the owner's name or address (a processor gets the minimum),
# and each carries exactly one link, the portal's. WhatsApp sends the
# approved template (Bahasa Indonesia with an English line); SMS is one
# GSM-7 segment in Bahasa Indonesia, without the camera's location text.

WHATSAPP_NOTICE_TEMPLATE = "cakra_notice"
WHATSAPP_LANGUAGE = "id"
SMS_SEGMENT = 160  # GSM-7 characters in one SMS


def _one_line(text: str) -> str:
    # A template parameter may not hold a line break, a tab or a run of spaces.
    return " ".join(text.split())


def whatsapp_parameters(notice: NoticeForMessage) -> tuple[str, ...]:
    """The ``cakra_notice`` template's parameters, ``{{1}}`` to ``{{10}}``, in order."""
    values = _email_context(notice)
    return tuple(
        _one_line(value) or "-"
        for value in (
            values["region_name"],
            values["plate"],
            values["captured_at_id"],
            values["location"],
            f"{values['article_reference']} - {values['article_title_id']}",
            values["number_display"],
            values["verification_code"],
            values["fine"],
            values["confirm_by_id"],
            values["lookup_url"],
        )
    )


def sms_portal_address() -> str:
    """The portal's lookup page without the scheme: phones link it, and it saves a segment."""
    return f"{settings.CAKRA_PORTAL_BASE_URL.partition('://')[2]}/cek/"


def sms_render(*, notice: NoticeForMessage, sender_id: str) -> str:
    """The notice SMS: the sender ID first (as government senders do, so a
    forwarded copy still says who sent it), then plate, date, number, code
    and the one place to check it."""
    day = notice.captured_at.astimezone(ZoneInfo(notice.region_timezone))
    return (
        f"{sender_id}: Tilang ETLE {notice.plate} tgl {day.day:02d}-{day.month:02d}-{day.year:04d}. "
        f"No {notice.number} kode {notice.verification_code}. "
        f"Cek keaslian di {sms_portal_address()} Tanpa lampiran/APK."
    )


def _whatsapp_message(delivery: DeliveryForSend) -> OutboundMessage:
    if not delivery.whatsapp_phone_number_id:
        raise PermanentProviderError("the region has no WhatsApp number")
    template, text = template_message_build(
        name=WHATSAPP_NOTICE_TEMPLATE, language=WHATSAPP_LANGUAGE, parameters=whatsapp_parameters(delivery.notice)
    )
    return OutboundMessage(
        reference=delivery.reference,
        recipient=delivery.recipient,
        sender=SenderIdentity(address=delivery.whatsapp_phone_number_id, display_name=delivery.whatsapp_display_name),
        text=text,
        template=template,
    )


def _sms_message(delivery: DeliveryForSend) -> OutboundMessage:
    if not delivery.sms_sender_id:
        raise PermanentProviderError("the region has no SMS sender ID")
    return OutboundMessage(
        reference=delivery.reference,
        recipient=delivery.recipient,
        sender=SenderIdentity(address=delivery.sms_sender_id),
        text=sms_render(notice=delivery.notice, sender_id=delivery.sms_sender_id),
    )


def _email_message(delivery: DeliveryForSend) -> OutboundMessage:
    rendered = email_render(notice=delivery.notice)
    return OutboundMessage(
        reference=delivery.reference,
        recipient=delivery.recipient,
        sender=SenderIdentity(address=delivery.email_from_address, display_name=delivery.email_from_name),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )


_BUILDERS: dict[str, Callable[[DeliveryForSend], OutboundMessage]] = {
    Channel.WHATSAPP: _whatsapp_message,
    Channel.SMS: _sms_message,
    Channel.EMAIL: _email_message,
}


def outbound_message_build(*, delivery: DeliveryForSend) -> OutboundMessage:
    """The message for one delivery, ready for its channel's adapter.

    Reads only what :func:`cakra.delivery.selectors.deliveries_get_for_send`
    loaded (and, for WhatsApp, the approved template, cached per process).
    A :class:`~cakra.delivery.channels.base.PermanentProviderError` says the
    message cannot be built for good (no approved template, no sender
    identity): the delivery fails and the plan moves on.
    """
    builder = _BUILDERS.get(delivery.channel)
    if builder is None:
        msg = f"no message format for channel {delivery.channel!r}"
        raise ValueError(msg)
    return builder(delivery)
