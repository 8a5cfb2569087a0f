"""The notice email as bytes: rendering (compiled Django templates), the MIME
written directly, and the DKIM signature computed from the message's parts.

Each of the three replaces a slower general tool, so each is checked against
that tool: the rendering against Django's own template rendering and date
formatting, the message against Python's ``email`` parser, the signature
against dkimpy's verifier. The same comparisons over generated inputs are
in the ``test_differential_*`` modules beside this one.
"""

from __future__ import annotations

import email
import re
from datetime import date, datetime, timedelta
from email import policy
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import dkim
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.template import Engine
from django.template.loader import render_to_string
from django.utils import dateformat, translation

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.dkim import relaxed_body
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.delivery.channels.mime import alternative_message, header, quoted_printable
from cakra.delivery.messages import (
    HTML_TEMPLATE,
    SUBJECT_TEMPLATE,
    TEXT_TEMPLATE,
    _day_en,
    _day_id,
    _email_context,
    _fetcher,
    _flatten,
    _Pieces,
    email_render,
    notice_lookup_url,
    outbound_message_build,
)
from cakra.delivery.models import Delivery
from cakra.delivery.selectors import NoticeForMessage, deliveries_get_for_send
from cakra.security import crypto
from cakra.simulators.smtp import SimulatedDkimDns, dkim_check

DOMAIN = "korlantas.polri.go.id"
SENDER = SenderIdentity(address=f"etle-metro@{DOMAIN}", display_name="ETLE Polda Metro Jaya")
HOSTILE_LOCATION = "Jl. <script>alert(1)</script> & \"Gatot\" 'Subroto'\r\nBcc: victim@example.co.id"
# Text that exercises every rule of the body encoding: non-ASCII, a long line,
# lines starting with "." and "From ", runs of spaces, trailing spaces, tabs.
TRICKY_TEXT = (
    "Jl. Jend. Sudirman — Kav. 5 é\n"
    + "panjang " * 30
    + "\n.\n.titik di awal baris\nFrom the camera feed\nkolom   :   rata  \n\ttab\tdi\ttengah\t\n"
    + "x" * 75
    + "From "
    + "y" * 80
    + "\n"
)


@pytest.fixture
def loaded(delivery):
    """The delivery as the sending path loads deliveries in bulk."""
    [found] = deliveries_get_for_send(delivery_ids=[delivery.pk])
    return found


@pytest.fixture
def model(delivery):
    """The same delivery as model instances, with everything a message shows."""
    return Delivery.objects.select_related(
        "notice__violation", "notice__region", "notice__article", "notice__vehicle", "contact_point"
    ).get(pk=delivery.pk)


def notice_for_message(notice):
    """What the message shows, read from a notice loaded as model instances."""
    region, violation, article = notice.region, notice.violation, notice.article
    return NoticeForMessage(
        number=notice.number,
        region_name=region.name,
        region_timezone=region.timezone,
        plate=notice.vehicle.plate,
        captured_at=violation.captured_at,
        location=violation.location,
        article_code=article.code,
        article_law=article.law,
        article_title_id=article.title_id,
        article_title_en=article.title_en,
        fine_amount=notice.fine_amount,
        confirm_by=notice.confirm_by,
        verification_code=notice.verification_code,
    )


@pytest.fixture
def adapter(settings):
    return SmtpEmailAdapter(options=settings.CAKRA_EMAIL)


@pytest.fixture
def dns(adapter):
    return SimulatedDkimDns(record=adapter.dkim_key.txt_value(), selector=adapter.dkim_selector)


def _message(*, subject="Surat Konfirmasi ETLE", text="Teks surat.\n", html="<p>Teks surat.</p>\n", sender=SENDER):
    return OutboundMessage(
        reference="5f0c6f7e-1111-4a4a-9b9b-000000000001",
        recipient="pemilik@example.co.id",
        sender=sender,
        subject=subject,
        text=text,
        html=html,
    )


def _parsed(raw):
    return email.message_from_bytes(raw, policy=policy.default)


def _as_received(text):
    """What a reader gets back: line breaks as the email package counts them, and a final one."""
    return (b"\n".join(text.encode().splitlines()) + b"\n").decode()


def _content(part):
    return part.get_content().replace("\r\n", "\n")


def _assert_well_formed(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 78 for line in head.split(b"\r\n")[1:] if not line.startswith(b"DKIM"))
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))  # quoted-printable's limit
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert not re.search(rb"(?m)^From ", body)  # an mbox writer would prefix it with ">"


# --- Rendering -----------------------------------------------------------------


@pytest.mark.parametrize("location", [HOSTILE_LOCATION + " {braces} — é", "Jl. \x00 <b>nul</b> & \x00"])
def test_the_rendering_is_djangos_own_rendering_of_the_templates(loaded, location):
    notice = loaded.notice
    # A location like this is withheld (cakra.security.freetext); the region's
    # name, configured text, still goes through the escaping.
    notice.location = location
    notice.region_name = location
    context = _email_context(notice)

    rendered = email_render(notice=notice)

    assert rendered.subject == " ".join(render_to_string(SUBJECT_TEMPLATE, context).split())
    assert rendered.text == render_to_string(TEXT_TEMPLATE, context)
    assert rendered.html == render_to_string(HTML_TEMPLATE, context)
    assert "<script>" not in rendered.html
    assert "<b>" not in rendered.html
    assert location in rendered.text  # plain text needs no escaping
    assert "\n" not in rendered.subject


def test_hostile_text_is_escaped_in_the_html_part(loaded):
    loaded.notice.region_name = HOSTILE_LOCATION

    rendered = email_render(notice=loaded.notice)

    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Gatot&quot; &#x27;Subroto&#x27;" in rendered.html
    assert HOSTILE_LOCATION in rendered.text


def test_templates_of_one_or_no_variable_fetch_a_tuple():
    assert _fetcher(("a", "b"))({"a": "1", "b": "2"}) == ("1", "2")
    assert _fetcher(("a",))({"a": "1"}) == ("1",)
    assert _fetcher(())({}) == ()


@pytest.mark.parametrize("number", ["1234567890123456", "12 34/&?=é+"])
def test_the_lookup_link_is_the_one_urlencode_writes(settings, number):
    assert notice_lookup_url(number=number) == f"{settings.CAKRA_PORTAL_BASE_URL}/cek/?{urlencode({'n': number})}"


def test_the_send_path_reads_what_the_models_hold(loaded, model):
    assert loaded.notice == notice_for_message(model.notice)
    assert (loaded.pk, loaded.reference, loaded.notice_id, loaded.notice_reference) == (
        model.pk,
        str(model.pk),
        model.notice_id,
        str(model.notice_id),
    )
    assert (loaded.channel, loaded.step, loaded.attempt_count) == (model.channel, model.step, model.attempt_count)
    assert loaded.recipient == model.contact_point.value
    region = model.notice.region
    assert (loaded.region_code, loaded.email_from_address, loaded.email_from_name) == (
        region.code,
        region.email_from_address,
        region.email_from_name,
    )


def test_the_send_path_decrypts_only_the_recipient_and_the_verification_code(delivery, monkeypatch):
    contexts = []
    decrypt = crypto.KeyRing.decrypt

    def counting(self, token, *, context):
        contexts.append(context)
        return decrypt(self, token, context=context)

    monkeypatch.setattr(crypto.KeyRing, "decrypt", counting)

    deliveries_get_for_send(delivery_ids=[delivery.pk])

    contact = delivery.contact_point
    assert sorted(contexts) == [
        f"enforcement_notice.verification_code.{delivery.notice_id}",
        f"registry_contactpoint.value.{contact.owner_id}.{contact.kind}.{contact.value_hash}",
    ]


def test_dates_are_written_as_djangos_dateformat_writes_them_in_both_languages():
    for offset in range(0, 366, 5):  # every weekday and every month
        day = date(2026, 1, 1) + timedelta(days=offset)
        with translation.override("id"):
            assert _day_id(day) == dateformat.format(day, "l, j F Y")
        with translation.override("en"):
            assert _day_en(day) == dateformat.format(day, "l j F Y")


def test_the_capture_time_is_written_in_the_regions_zone(loaded):
    notice = loaded.notice
    notice.region_timezone = "Asia/Jayapura"
    notice.captured_at = datetime(2026, 11, 28, 23, 5, tzinfo=ZoneInfo("UTC"))

    context = _email_context(notice)

    assert context["captured_at_id"] == "Minggu, 29 November 2026, pukul 08.05 WIT"
    assert context["captured_at_en"] == "Sunday 29 November 2026, 08:05 WIT"


@pytest.mark.parametrize(
    "source",
    ["{{ plate|upper }}", "{% if plate %}x{% endif %}", "{{ notice.number }}", "{% include 'x.html' %}", "{{ 'x' }}"],
)
def test_a_template_using_more_than_plain_variables_is_refused(source):
    template = Engine(autoescape=True).from_string(source)

    with pytest.raises(ImproperlyConfigured):
        _flatten(template.nodelist, autoescape=True, pieces=_Pieces(), escaped=set(), name="test")


def test_building_a_delivery_loaded_in_bulk_runs_no_query(loaded, django_assert_num_queries):
    with django_assert_num_queries(0):
        message = outbound_message_build(delivery=loaded)

    assert message.reference == str(loaded.pk)
    assert message.sender.address == loaded.email_from_address


def test_the_message_is_the_one_built_from_the_models(loaded, model):
    # What the sender passed the adapter before it read plain values: the
    # message built straight from the model instances, field by field.
    notice = model.notice
    expected = email_render(notice=notice_for_message(notice))

    message = outbound_message_build(delivery=loaded)

    assert message == OutboundMessage(
        reference=str(model.id),
        recipient=model.contact_point.value,
        sender=SenderIdentity(address=notice.region.email_from_address, display_name=notice.region.email_from_name),
        subject=expected.subject,
        text=expected.text,
        html=expected.html,
    )


# --- The message -----------------------------------------------------------------


def test_the_notice_email_parses_back_to_its_subject_text_and_html(loaded, adapter, dns):
    loaded.notice.region_name = HOSTILE_LOCATION
    message = outbound_message_build(delivery=loaded)

    message_id, raw = adapter.build(message)

    parsed = _parsed(raw)
    assert parsed["Subject"] == message.subject
    assert parsed["Message-ID"] == message_id == f"<{loaded.pk}@{DOMAIN}>"
    assert parsed["Bcc"] is None  # the line break stayed in the body
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert _content(parsed.get_body(preferencelist=("plain",))) == _as_received(message.text)
    assert _content(parsed.get_body(preferencelist=("html",))) == _as_received(message.html)
    assert not parsed.defects
    assert all(not part.defects for part in parsed.walk())
    _assert_well_formed(raw)
    assert dkim_check(raw, dns=dns).passed


def test_headers_say_who_when_and_what_as_before(adapter):
    _, raw = adapter.build(_message())

    parsed = _parsed(raw)
    assert parsed["From"].addresses[0].display_name == SENDER.display_name
    assert parsed["From"].addresses[0].addr_spec == SENDER.address
    assert parsed["To"] == "pemilik@example.co.id"
    assert parsed["Date"].datetime.utcoffset() == timedelta(hours=7)  # Asia/Jakarta
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Content-Language"] == "id, en"
    assert parsed["MIME-Version"] == "1.0"
    assert list(parsed.keys())[:2] == ["DKIM-Signature", "From"]


@pytest.mark.parametrize(
    ("subject", "display_name"),
    [
        ("Surat Konfirmasi ETLE No. 1234 5678 9012 3456 / ETLE confirmation notice", "ETLE Polda Metro Jaya"),
        ("Surat Konfirmasi — Jl. Jend. Sudirman é " + "kata " * 30, "ETLE Polda Jawa Timur — é"),
        ('Surat: "Konfirmasi" (ETLE), <No. 1>', 'ETLE "Polda", Jakarta'),
        ("x" * 120, "ETLE"),
    ],
)
def test_subjects_and_names_of_any_kind_arrive_intact_and_signed(adapter, dns, subject, display_name):
    sender = SenderIdentity(address=SENDER.address, display_name=display_name)

    _, raw = adapter.build(_message(subject=subject, sender=sender))

    parsed = _parsed(raw)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == display_name
    assert raw.isascii()  # non-ASCII goes into RFC 2047 encoded words
    assert dkim.verify(raw, dnsfunc=dns)


@pytest.mark.parametrize(
    ("name", "value"),
    [("Subject", "Surat\r\nBcc: victim@example.co.id"), ("To", "a@example.co.id\nBcc: b@example.co.id")],
)
def test_a_line_break_in_a_header_value_is_refused(name, value):
    with pytest.raises(ValueError, match="line break"):
        header(name, value)


def test_a_message_whose_subject_or_recipient_holds_a_line_break_is_not_built(adapter):
    with pytest.raises(ValueError, match="line break"):
        adapter.build(_message(subject="Surat\r\nBcc: victim@example.co.id"))
    hostile = OutboundMessage(
        reference="r", recipient="a@example.co.id\r\nBcc: b@example.co.id", sender=SENDER, subject="s", text="t"
    )
    with pytest.raises(ValueError, match="line break"):
        adapter.build(hostile)


def test_bodies_with_long_lines_dots_from_lines_tabs_and_spaces_arrive_intact_and_signed(adapter, dns):
    message = _message(text=TRICKY_TEXT, html=f"<pre>\n{TRICKY_TEXT}</pre>\n")

    _, raw = adapter.build(message)

    parsed = _parsed(raw)
    assert _content(parsed.get_body(preferencelist=("plain",))) == _as_received(TRICKY_TEXT)
    assert _content(parsed.get_body(preferencelist=("html",))) == _as_received(message.html)
    _assert_well_formed(raw)
    assert dkim.verify(raw, dnsfunc=dns)
    assert dkim_check(raw, dns=dns).passed


@pytest.mark.parametrize(
    "text",
    [
        "Teks surat.\n",
        "kolom   :   rata   \nakhir  \n",  # fast path: runs of spaces, trailing spaces
        "From the camera\n" + "z" * 74 + " From here on\n",  # "From " at a line start, also after a soft break
        "a\tb\x01c\x0bd\r\re\u2028f\n",  # tab and control bytes: the careful path
        "",
        "\n\n\n",
        "é" * 100,
    ],
)
def test_quoted_printable_decodes_to_the_text_and_is_its_own_relaxed_form(text):
    encoded = quoted_printable(text)

    decoded = email.message_from_bytes(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded,
        policy=policy.default,
    )
    assert _content(decoded) == _as_received(text)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert not re.search(rb"(?m)^From ", encoded)
    # No run of white space, no tab, no trailing space: the DKIM signer can
    # hash the body as it is (its speed depends on this, not its correctness).
    assert b"\t" not in encoded
    assert b"  " not in encoded
    assert b" \r\n" not in encoded


def test_a_notice_body_needs_no_canonicalisation_pass(loaded):
    message = outbound_message_build(delivery=loaded)

    mime = alternative_message(headers=(), text=message.text, html=message.html, content_language="id, en")

    assert relaxed_body(mime.body) == mime.body


def test_each_message_has_its_own_unguessable_boundary(adapter):
    boundaries = set()
    for _ in range(3):
        _, raw = adapter.build(_message())
        boundaries.add(_parsed(raw).get_boundary())

    assert len(boundaries) == 3
    assert all(re.fullmatch(r"=_[0-9a-f]{32}", boundary) for boundary in boundaries)


def test_a_message_without_html_is_a_single_text_part(adapter, dns):
    _, raw = adapter.build(_message(html=""))

    parsed = _parsed(raw)
    assert parsed.get_content_type() == "text/plain"
    assert _content(parsed) == "Teks surat.\n"
    assert parsed["Content-Language"] == "id, en"
    assert dkim.verify(raw, dnsfunc=dns)


# --- The signature ----------------------------------------------------------------


def test_a_message_changed_after_signing_fails_verification(adapter, dns):
    _, raw = adapter.build(_message(text="Denda Rp500.000\n"))

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Rp500.000", b"Rp900.000"), dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Subject: Surat", b"Subject: Surat palsu"), dnsfunc=dns)
