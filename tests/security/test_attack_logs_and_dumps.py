"""Personal data in logs and in a database dump. A notice goes the whole way
(intake through the API, an officer's validation in the back office, the
derivative, the email to the local SMTP sink, citizen lookups right and
wrong, the pages of both sides) with every log line captured; then every
row of every table is read raw with SQL, as a stolen backup would be. The
owner's name, NIK, address, phone and email appear in neither, and no log
line ties a plate to a notice number."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import connection
from django.test import Client

from cakra.delivery.sending import deliveries_send
from cakra.enforcement.evidence import evidence_derive
from cakra.enforcement.models import Evidence, Notice
from cakra.security.models import Session
from cakra.security.sessions import PortalSessionStore, SessionStore
from cakra.simulators.smtp import MailSink
from tests.api.helpers import payload
from tests.factories import ApiKeyFactory, VehicleFactory, make_owner
from tests.security.attack_world import csrf_token, english_client, sign_in, visit

OWNER = {
    "name": "Siti Rahmawati Purnamasari",
    "nik": "3174055203870011",
    "address": "Jl. Kenanga Wangi No. 17, Kebayoran Baru, Jakarta Selatan 12160",
    "mobile": "+6281298765432",
    "email": "siti.purnamasari77@example.co.id",
}
PLATE = "B 4321 KWS"


def _personal_forms() -> dict[str, str]:
    """Every spelling of the owner's data a leak might use."""
    return {
        **OWNER,
        "mobile, national": "081298765432",
        "mobile, digits": "6281298765432",
        "mobile, subscriber": "81298765432",
        "email, local part": "siti.purnamasari77",
        "address, street": "Kenanga Wangi",
        "name, family": "Purnamasari",
    }


@pytest.fixture
def mail_sink(tmp_path, settings):
    with MailSink(
        maildir=tmp_path / "mail",
        dkim_private_key=settings.CAKRA_EMAIL["DKIM_PRIVATE_KEY"],
        dkim_selector=settings.CAKRA_EMAIL["DKIM_SELECTOR"],
    ) as sink:
        providers = dict(settings.CAKRA_PROVIDERS)
        providers["smtp"] = {
            **providers["smtp"],
            "OPTIONS": {
                **providers["smtp"]["OPTIONS"],
                "HOST": "127.0.0.1",
                "PORT": sink.smtp_port,
                "SECURITY": "none",
            },
        }
        settings.CAKRA_PROVIDERS = providers
        yield sink


@pytest.fixture
def journey(region, officer, mail_sink, caplog, capsys):
    """The whole life of two notices, with every log record and console line kept."""
    caplog.set_level(logging.DEBUG)
    VehicleFactory.create(plate=PLATE, owner=make_owner(**OWNER))
    _key, token = ApiKeyFactory.with_token(region=region)
    _pre_key, pre_token = ApiKeyFactory.with_token(region=region, pre_validated=True)
    camera = Client()

    # Intake: one capture for an officer to decide, one from a pre-validated system.
    for capture, key in (("LOG-1", token), ("LOG-2", pre_token)):
        answer = camera.post(
            "/api/v1/violations",
            data=json.dumps(payload(capture_id=capture, plate=PLATE)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        assert answer.status_code == 201, answer.content
    for evidence in Evidence.objects.all():
        evidence_derive(evidence_id=evidence.id)

    # The officer reads the queue and the capture, and validates it.
    desk = sign_in(english_client(), officer)
    waiting = visit(desk, "get", "/backoffice/").context["page"][0]
    visit(desk, "get", f"/backoffice/violations/{waiting.id}/")
    assert visit(desk, "post", f"/backoffice/violations/{waiting.id}/validate/").status_code == 302
    for notice in Notice.objects.all():
        visit(desk, "get", f"/backoffice/notices/{notice.number}/")
        for delivery in notice.deliveries.filter(channel="email"):
            deliveries_send(delivery_ids=[str(delivery.id)])
    assert len(mail_sink.messages()) == 2

    # Citizens: a right pair, a wrong plate, an unknown number, then the pages.
    notice = Notice.objects.order_by("issued_at")[0]
    citizen = english_client()
    form = csrf_token(citizen.get("/cek/"))
    for number, plate in ((notice.number, "B 9999 ZZZ"), ("1234567890123416", PLATE), (notice.number, PLATE)):
        citizen.post("/cek/", {"csrfmiddlewaretoken": form, "number": number, "plate": plate})
    page = visit(citizen, "get", f"/notice/{notice.id}/")
    assert page.status_code == 200
    for evidence in notice.violation.evidence.all():
        visit(citizen, "get", f"/notice/{notice.id}/evidence/{evidence.id}/")

    console = capsys.readouterr()
    records = [record.getMessage() + " " + str(record.msg) for record in caplog.records]
    return records, caplog.text + console.out + console.err


def test_logs_carry_no_personal_data(journey):
    _records, everything = journey
    assert "delivery.batch_recorded" in everything  # the sweep did capture the sending

    for label, value in _personal_forms().items():
        assert value not in everything, f"the owner's {label} is in the logs"


def test_no_log_line_ties_a_plate_to_a_notice_number(journey):
    records, _everything = journey
    plates = (PLATE, PLATE.replace(" ", ""))
    for notice in Notice.objects.all():
        numbers = (
            notice.number,
            f"{notice.number[:4]} {notice.number[4:8]} {notice.number[8:12]} {notice.number[12:]}",
        )
        for line in records:
            assert not (any(p in line for p in plates) and any(n in line for n in numbers)), line


def _dump() -> str:
    """Every row of every table, as text, read with SQL past the models."""
    lines: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - names from introspection
            lines.extend(f"{table}: {row!r}" for row in cursor.fetchall())
    return "\n".join(lines)


def test_a_database_dump_holds_no_personal_data_in_clear(journey):
    dump = _dump()
    assert "registry_owner" in dump  # the dump did reach the registry
    assert Notice.objects.count() == 2

    for label, value in _personal_forms().items():
        assert value not in dump, f"the owner's {label} is in the dump"


def test_sessions_in_the_dump_hold_no_personal_data(journey):
    # Session rows are signed, not encrypted: what they hold is readable to
    # whoever has the dump. Both realms live in one table; each is decoded by
    # its own store.
    stores = {store.realm: store() for store in (SessionStore, PortalSessionStore)}
    table = connection.ops.quote_name(Session._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT realm, session_data FROM {table}")  # noqa: S608 - the name is the model's
        rows = cursor.fetchall()
    assert {realm for realm, _data in rows} == set(stores)  # the officer's and the citizen's sessions were kept
    decoded = " ".join(repr(stores[realm].decode(data)) for realm, data in rows)
    assert "portal_grants" in decoded
    for label, value in _personal_forms().items():
        assert value not in decoded, label
    assert PLATE not in decoded
    assert PLATE.replace(" ", "") not in decoded
