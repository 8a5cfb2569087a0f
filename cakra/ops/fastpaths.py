"""What the hand-written fast paths buy, measured in one run against the tools they replace.

Each fast path is kept only while it is provably equal to its reference
(the ``test_differential_*`` tests) and measurably faster. This module
measures the second half, as ratios taken in one run on one machine (the
fast path's speed divided by the reference's: above 1 the fast path is
faster), never as absolute figures:

- ``email_send_speedup``: messages per second of the project's bare email
  path (the MIME writer, the DKIM signer and the pipelined SMTP client of
  ``SmtpEmailAdapter.send_many``, which the bench's loopback ceiling
  measures) against Django's mail stack (``EmailMultiAlternatives`` over
  ``django.core.mail``'s SMTP backend) signed with dkimpy, both sending the
  same rendered notice over one kept SMTP session to the same SMTP sink
  (``MailSink``, in this process, on loopback).
- ``template_render_speedup``: time per notice of ``email_render`` (the
  flattened templates and hand-written dates) against Django's engine
  rendering the same templates from the same context.
- ``bulk_insert_speedup``: time per row of ``rows_insert`` against
  ``bulk_create``, inserting violations in chunks of 100 as the intake
  does, in a transaction rolled back afterwards. On SQLite ``rows_insert``
  is ``bulk_create``, so this ratio is about 1 there.

The two sides of each ratio run alternately, in rounds, so that a change
in the machine's load during the run falls on both; each ratio is the
median of the rounds' ratios.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from email.utils import formataddr
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address
from django.db import transaction
from django.template.loader import get_template
from django.utils import timezone

from cakra.db import rows_insert
from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.dkim import INCLUDE_HEADERS, dkim_key_load
from cakra.delivery.channels.email import SmtpEmailAdapter, email_domain
from cakra.delivery.messages import HTML_TEMPLATE, SUBJECT_TEMPLATE, TEXT_TEMPLATE, _email_context, email_render
from cakra.delivery.selectors import NoticeForMessage
from cakra.enforcement.models import Article, Region, Violation
from cakra.simulators.smtp import MailSink

SENDER = SenderIdentity(address="etle-metro@fastpaths.korlantas.example.go.id", display_name="ETLE Polda Metro Jaya")
RECIPIENT_DOMAIN = "fastpaths.example.com"  # "silent…" addresses: the sink stores and never reports them
REGION_CODE = "FASTPATH"
INSERT_CHUNK = 100  # the intake's chunk
ROUNDS = 8  # alternations of the two sides of each ratio
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - a run-specific folder inside, removed afterwards


def fastpaths_measure(*, messages: int = 400, renders: int = 2000, rows: int = 2000) -> dict[str, float]:
    """The three ratios (fast path ÷ reference, above 1 faster), measured now.

    ``messages`` are sent by each email stack, ``renders`` notices rendered
    by each renderer, ``rows`` violations inserted by each insert; each is
    split into rounds (at least one item per round).
    """
    return {
        "email_send_speedup": _email_send_speedup(messages),
        "template_render_speedup": _template_render_speedup(renders),
        "bulk_insert_speedup": _bulk_insert_speedup(rows),
    }


def _rounds(total: int) -> list[int]:
    per_round = max(1, total // ROUNDS)
    return [per_round] * ROUNDS


def _alternately(fast: Callable[[int], float], reference: Callable[[int], float], total: int) -> float:
    """``fast`` and ``reference`` each do ``n`` items and return the seconds
    they took; the median over the rounds of the ratio of their speeds (a
    round slowed by other work on the machine moves the median little).
    Which side goes first alternates too: the second of a pair can pay for
    the first's garbage or a cache it filled."""
    ratios = []
    for index, n in enumerate(_rounds(total)):
        if index % 2:
            reference_seconds = reference(n)
            fast_seconds = fast(n)
        else:
            fast_seconds = fast(n)
            reference_seconds = reference(n)
        ratios.append(reference_seconds / fast_seconds)
    return statistics.median(ratios)


# --- Email: the project's bare path against Django's mail stack with dkimpy ---------


def _notice() -> NoticeForMessage:
    """A notice as the bench renders them (the same for every message)."""
    return NoticeForMessage(
        number="1234567890123452",
        region_name="Polda Metro Jaya",
        region_timezone="Asia/Jakarta",
        plate="B 1234 XYZ",
        captured_at=timezone.now() - timedelta(hours=2),
        location="Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan",
        article_code="287(1)",
        article_law="UU 22/2009",
        article_title_id="Melanggar rambu lalu lintas",
        article_title_en="Disobeying a traffic sign",
        fine_amount=500_000,
        confirm_by=timezone.localdate() + timedelta(days=8),
        verification_code="ABCD2345",
    )


class _DkimSmtpBackend(EmailBackend):
    """Django's SMTP backend with every message signed by dkimpy, as a Django
    project signs mail: the message's bytes with a DKIM-Signature before them."""

    def __init__(self, *, dkim_pem: bytes, selector: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dkim_pem = dkim_pem
        self.selector = selector

    def _send(self, email_message: EmailMessage) -> bool:
        # Django's own _send, with the signature added before the bytes go out.
        if not email_message.recipients() or self.connection is None:
            return False
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        from_email = sanitize_address(email_message.from_email, encoding)
        recipients = [sanitize_address(address, encoding) for address in email_message.recipients()]
        # Django's SafeMIME messages take linesep, as its backend passes it (the stubs type the stdlib's).
        data = email_message.message().as_bytes(linesep="\r\n")  # type: ignore[call-arg]
        signature = dkim.sign(
            data,
            self.selector.encode("ascii"),
            email_domain(from_email).encode("idna"),
            self.dkim_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(INCLUDE_HEADERS),
        )
        self.connection.sendmail(from_email, recipients, signature + data)
        return True


def _outbound(n: int, *, subject: str, text: str, html: str) -> OutboundMessage:
    return OutboundMessage(
        reference=str(uuid.uuid4()),
        recipient=f"silent-f{n}@{RECIPIENT_DOMAIN}",
        sender=SENDER,
        subject=subject,
        text=text,
        html=html,
    )


def _django_message(message: OutboundMessage) -> EmailMultiAlternatives:
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=formataddr((message.sender.display_name, message.sender.address)),
        to=[message.recipient],
        headers={
            "Message-ID": f"<{message.reference}@{email_domain(message.sender.address)}>",
            "Auto-Submitted": "auto-generated",
            "Content-Language": "id, en",
        },
    )
    email.attach_alternative(message.html, "text/html")
    return email


def _mail_dir() -> tempfile.TemporaryDirectory[str]:
    # Shared memory when there is one: the sink's file creation is not what is measured.
    parent = SHARED_MEMORY if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="cakra-fastpaths-", dir=parent)


def _email_send_speedup(messages: int) -> float:
    email_options = settings.CAKRA_EMAIL
    key = dkim_key_load(str(email_options["DKIM_PRIVATE_KEY"]))
    # dkimpy reads an unencrypted PKCS#8 PEM.
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    rendered = email_render(notice=_notice())
    counter = iter(range(1_000_000_000))

    def batch(n: int) -> list[OutboundMessage]:
        return [
            _outbound(next(counter), subject=rendered.subject, text=rendered.text, html=rendered.html) for _ in range(n)
        ]

    with (
        _mail_dir() as directory,
        MailSink(
            maildir=Path(directory) / "mail",
            dkim_private_key=str(email_options["DKIM_PRIVATE_KEY"]),
            dkim_selector=str(email_options["DKIM_SELECTOR"]),
        ) as sink,
    ):
        adapter = SmtpEmailAdapter(
            options={**email_options, "HOST": "127.0.0.1", "PORT": sink.smtp_port, "SECURITY": "none"}
        )
        backend = _DkimSmtpBackend(
            dkim_pem=pem,
            selector=str(email_options["DKIM_SELECTOR"]),
            host="127.0.0.1",
            port=sink.smtp_port,
            use_tls=False,
            use_ssl=False,
            timeout=10,
        )

        def ours(n: int) -> float:
            outbound = batch(n)
            started = time.perf_counter()
            results = adapter.send_many(outbound)
            seconds = time.perf_counter() - started
            _check_sent(sum(result.error is None for result in results), expected=n)
            return seconds

        def djangos(n: int) -> float:
            outbound = [_django_message(message) for message in batch(n)]
            started = time.perf_counter()
            sent = backend.send_messages(outbound)
            seconds = time.perf_counter() - started
            _check_sent(sent, expected=n)
            return seconds

        try:
            backend.open()  # one session for the run, as the adapter keeps one
            ours(1)  # connect and warm both before the clock runs
            djangos(1)
            return _alternately(ours, djangos, messages)
        finally:
            backend.close()
            adapter.close()


def _check_sent(sent: int, *, expected: int) -> None:
    if sent != expected:
        msg = f"the sink took {sent} of {expected} messages: no measurement"
        raise RuntimeError(msg)


# --- Templates: the flattened render against Django's engine -----------------------


def _template_render_speedup(renders: int) -> float:
    notice = _notice()
    templates = [get_template(name) for name in (SUBJECT_TEMPLATE, TEXT_TEMPLATE, HTML_TEMPLATE)]

    def ours(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            email_render(notice=notice)
        return time.perf_counter() - started

    def django_render() -> tuple[str, str, str]:
        context = _email_context(notice)
        subject, text, html = (template.render(context) for template in templates)
        return " ".join(subject.split()), text, html

    def djangos(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            django_render()
        return time.perf_counter() - started

    ours(1)
    djangos(1)
    return _alternately(ours, djangos, renders)


# --- Bulk insert: rows_insert against bulk_create -------------------------------------


def _bulk_insert_speedup(rows: int) -> float:
    article = Article.objects.order_by("pk").first()
    if article is None:
        msg = "no article to insert violations of (the migrations load them)"
        raise RuntimeError(msg)
    counter = iter(range(1_000_000_000))
    with transaction.atomic():
        # Nothing of this stays: the transaction is rolled back at the end.
        region, _ = Region.objects.get_or_create(
            code=REGION_CODE,
            defaults={
                "name": "Fast paths",
                "email_from_address": SENDER.address,
                "email_from_name": SENDER.display_name,
                "letterhead": "Fast paths",
                "signatory_name": "-",
                "signatory_title": "-",
            },
        )

        def violations(n: int) -> list[Violation]:
            now = timezone.now()
            return [
                Violation(
                    region=region,
                    capture_id=f"FASTPATH-{next(counter)}",
                    payload_hash="a" * 64,
                    camera_id="CAM-SUDIRMAN-03",
                    captured_at=now,
                    location="Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan",
                    plate="B 1234 XYZ",
                    plate_compact="B1234XYZ",
                    article=article,
                    measured_speed_kmh=92,
                    status=Violation.Status.VALIDATED,
                    decided_at=now,
                    pre_validated=True,
                )
                for _ in range(n)
            ]

        def timed(insert: Callable[[list[Violation]], object]) -> Callable[[int], float]:
            def run(n: int) -> float:
                seconds = 0.0
                for start in range(0, n, INSERT_CHUNK):
                    chunk = violations(min(INSERT_CHUNK, n - start))
                    started = time.perf_counter()
                    insert(chunk)
                    seconds += time.perf_counter() - started
                return seconds

            return run

        ours, djangos = timed(rows_insert), timed(Violation.objects.bulk_create)
        # Warmed with a whole chunk each: the first statement of a chunk's
        # size costs several times the next ones (statement preparation).
        ours(INSERT_CHUNK)
        djangos(INSERT_CHUNK)
        ratio = _alternately(ours, djangos, rows)
        transaction.set_rollback(True)
    return ratio
