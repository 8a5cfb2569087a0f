"""The template flattener against Django's template engine, over generated notices.

:mod:`cakra.delivery.messages` renders the notice email from the real
templates under ``delivery/email/``, flattened once into text and variables
(:func:`cakra.delivery.messages._compiled`), and writes the dates itself
instead of through ``dateformat``. For generated notices (any text in every
field that reaches a template, HTML and template syntax included; any
amount; dates over centuries, in Indonesian zones and in zones with
daylight saving) and generated portal addresses, the result must be what
Django's engine renders from the same context: the same text, the same
HTML escaping (escaped in the HTML part, not in the plain-text parts), and
the dates Django's ``dateformat`` writes in Bahasa Indonesia and English.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from django.template.loader import render_to_string
from django.test import override_settings
from django.utils import dateformat, translation
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cakra.delivery.messages import HTML_TEMPLATE, SUBJECT_TEMPLATE, TEXT_TEMPLATE, _email_context, email_render
from cakra.delivery.selectors import NoticeForMessage

DIFFERENTIAL = settings(max_examples=150, deadline=None, derandomize=True, database=None)

# Text that HTML escaping and a template engine could treat differently.
MARKUP = [
    "<script>alert(1)</script>",
    "&",
    "&amp;",
    '"',
    "'",
    "<b>tebal</b>",
    "{{ plate }}",
    "{% autoescape off %}",
    "{# x #}",
    "%}",
    "\\",
    "—",
    "😀",
    "Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan",
    "Polda Metro Jaya",
]
TEXT = st.lists(
    st.one_of(st.sampled_from(MARKUP), st.text(st.characters(exclude_categories=["Cs"]), max_size=20)),
    max_size=6,
).map("".join)
ZONES = st.sampled_from(
    [
        "Asia/Jakarta",
        "Asia/Makassar",
        "Asia/Jayapura",
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
    ]
)
# Hypothesis takes naive bounds and makes the values aware in the zones given.
MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 2),  # noqa: DTZ001
    max_value=datetime(2199, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)
NOTICES = st.builds(
    NoticeForMessage,
    number=st.one_of(st.from_regex(r"[0-9]{16}", fullmatch=True), TEXT),
    region_name=TEXT,
    region_timezone=ZONES,
    plate=TEXT,
    captured_at=MOMENTS,
    location=st.one_of(st.sampled_from(MARKUP), TEXT),
    article_code=TEXT,
    article_law=TEXT,
    article_title_id=TEXT,
    article_title_en=TEXT,
    fine_amount=st.integers(min_value=0, max_value=10**12),
    confirm_by=st.dates(),
    verification_code=TEXT,
)


@DIFFERENTIAL
@given(notice=NOTICES, base_url=TEXT, official_domain=TEXT)
def test_the_flattened_render_is_djangos_render_of_the_real_templates(notice, base_url, official_domain):
    with override_settings(CAKRA_PORTAL_BASE_URL=base_url, CAKRA_OFFICIAL_DOMAIN=official_domain):
        context = _email_context(notice)
        rendered = email_render(notice=notice)

        assert rendered.text == render_to_string(TEXT_TEMPLATE, context)
        assert rendered.html == render_to_string(HTML_TEMPLATE, context)
        # The subject is one line: its words as Django renders them, joined by single spaces.
        assert rendered.subject == " ".join(render_to_string(SUBJECT_TEMPLATE, context).split())


@DIFFERENTIAL
@given(moment=MOMENTS, zone=ZONES, day=st.dates())
# The hour a daylight-saving zone repeats, both times: no zone name (it would be ambiguous).
@example(moment=datetime(2026, 10, 25, 0, 30, tzinfo=UTC), zone="Europe/Berlin", day=date(2026, 10, 25))
@example(moment=datetime(2026, 10, 25, 1, 30, tzinfo=UTC), zone="Europe/Berlin", day=date(2026, 10, 25))
def test_dates_are_what_djangos_dateformat_writes(moment, zone, day):
    notice = NoticeForMessage(
        number="1234567890123452",
        region_name="Polda Metro Jaya",
        region_timezone=zone,
        plate="B 1234 XYZ",
        captured_at=moment,
        location="Jl. Jend. Sudirman",
        article_code="287(1)",
        article_law="UU 22/2009",
        article_title_id="Rambu",
        article_title_en="Signs",
        fine_amount=500_000,
        confirm_by=day,
        verification_code="ABCD2345",
    )
    local = moment.astimezone(ZoneInfo(zone))

    context = _email_context(notice)

    with translation.override("id"):
        assert context["captured_at_id"] == dateformat.format(local, r"l, j F Y, \p\u\k\u\l H.i T")
        assert context["confirm_by_id"] == dateformat.format(day, "l, j F Y")
    with translation.override("en"):
        assert context["captured_at_en"] == dateformat.format(local, "l j F Y, H:i T")
        assert context["confirm_by_en"] == dateformat.format(day, "l j F Y")
