"""Email in the bench: addresses at a bench domain, the SMTP sink, its ceiling and its mailbox."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

from django.conf import settings

from cakra.delivery.channels.base import OutboundMessage, SenderIdentity
from cakra.delivery.channels.email import SmtpEmailAdapter
from cakra.ops.bench.ceiling import bare_client_rate
from cakra.ops.bench.channels.base import RunPlace
from cakra.ops.bench.supervision import accepts, wait_for
from cakra.registry.models import ContactPoint

RECIPIENT_DOMAIN = "bench.example.com"
CEILING_DOMAIN = "ceiling.example.com"
SENDER = SenderIdentity(address="etle@bench.korlantas.example.go.id", display_name="ETLE Bench")
MAIL_BYTES_PER_NOTICE = 12_000  # a signed notice email is ~11.7 KB
# Room the sink's mail needs in memory beyond its size, as for the disk check.
SHM_MARGIN = 1.5

# The bare client's message: the size of a real notice email (text ~2.8 KB,
# HTML ~6.6 KB, ~11.7 KB signed) and ordinary prose, so that encoding,
# signing, transfer and storage cost what they cost for the pipeline's.
CEILING_SENTENCE = "Kendaraan Anda tercatat melanggar lalu lintas; periksa keaslian surat di portal resmi. "
CEILING_TEXT_CHARS = 2800
CEILING_HTML_CHARS = 6600


def sink_maildir(*, place: RunPlace) -> Path:
    """Where the simulated relay keeps its mail: in memory (``/dev/shm``) when
    it has room, else beside the run's other data.

    The sink stands in for a third party's relay; its storage is not ours to
    measure, and on this machine's disk creating files slows down several
    times for minutes after a mass delete (a previous run's clean-up), which
    made the ceiling swing from one run to the next (docs/performance.md). The evidence, the
    database and the broker stay on disk.
    """
    shared = Path("/dev/shm")  # noqa: S108 - a run-specific folder, removed afterwards
    needed = (place.notices + 2 * place.ceiling_messages) * MAIL_BYTES_PER_NOTICE * SHM_MARGIN
    if shared.is_dir() and os.access(shared, os.W_OK) and shutil.disk_usage(shared).free > needed:
        return shared / f"cakra-bench-{place.run_id}-sink"
    return place.workdir / "sink"


def ceiling_message(n: int) -> OutboundMessage:
    text = (CEILING_SENTENCE * (CEILING_TEXT_CHARS // len(CEILING_SENTENCE) + 1))[:CEILING_TEXT_CHARS]
    html = "<p>" + (CEILING_SENTENCE * (CEILING_HTML_CHARS // len(CEILING_SENTENCE) + 1))[:CEILING_HTML_CHARS] + "</p>"
    return OutboundMessage(
        reference=f"ceiling-{n}",
        # "silent": the sink stores it and reports no receipt (the system under
        # test never sent it, and must not spend the measurement on it).
        recipient=f"silent-c{n}@{CEILING_DOMAIN}",
        subject="Surat konfirmasi pelanggaran lalu lintas (ETLE)",
        text=text,
        html=html,
        sender=SENDER,
    )


class EmailBareClient:
    """The system's own SMTP adapter (rendering aside, the same MIME, DKIM and
    SMTP code, over reused sessions), its DKIM key loaded and a session open."""

    def __init__(self, port: int) -> None:
        options = {**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": port, "SECURITY": "none"}
        self.adapter = SmtpEmailAdapter(options=options)
        self.send(-1 - os.getpid())

    def send(self, n: int) -> None:
        """One message through the adapter's one entry point, as the worker
        sends (one message per call here; the worker's calls carry a chunk)."""
        [result] = self.adapter.send_many([ceiling_message(n)])
        if result.error is not None:
            raise result.error


def message_delivery_id(message_id: str) -> str:
    """The delivery id a Message-ID was derived from (``<id@sender domain>``,
    cakra.delivery.channels.email); the Message-ID itself if it is not of that form."""
    inner = message_id.strip().removeprefix("<").removesuffix(">")
    local, at, _ = inner.rpartition("@")
    return local if at else message_id


def maildir_received(maildir: Path) -> Counter[str]:
    """Copies in ``maildir`` of each message to the bench's recipients, by delivery id.

    The bare client's messages (another domain) are not counted.
    """
    parser = BytesHeaderParser()
    seen: Counter[str] = Counter()
    for folder in ("new", "cur"):
        directory = maildir / folder
        if not directory.exists():
            continue
        for path in directory.iterdir():
            with path.open("rb") as handle:
                headers = parser.parse(handle)
            if RECIPIENT_DOMAIN in str(headers.get("To", "")):
                seen[message_delivery_id(str(headers.get("Message-ID", "")))] += 1
    return seen


@dataclass
class EmailRun:
    maildir: Path
    smtp_port: int
    http_port: int
    env: Mapping[str, str] = field(init=False)
    processes: Mapping[str, Sequence[str]] = field(init=False)
    confirms: bool = field(init=False)

    def __post_init__(self) -> None:
        self.env = {
            "CAKRA_SMTP_HOST": "127.0.0.1",
            "CAKRA_SMTP_PORT": str(self.smtp_port),
            "CAKRA_SMTP_SECURITY": "none",
            "CAKRA_SINK_SMTP_PORT": str(self.smtp_port),
            "CAKRA_SINK_HTTP_PORT": str(self.http_port),
            "CAKRA_SINK_MAILDIR": str(self.maildir),
        }
        self.processes = {"sink": [sys.executable, "-m", "cakra.cli", "sink"]}
        self.confirms = bool(getattr(settings, "CAKRA_SINK", {}).get("RECEIPT_URL"))

    def wait_ready(self) -> None:
        wait_for(lambda: accepts(self.smtp_port), timeout=30, what="the SMTP sink")

    def ceiling(self, *, messages: int, processes: int) -> float:
        return bare_client_rate(
            messages=messages, processes=processes, make_client=functools.partial(EmailBareClient, self.smtp_port)
        )

    def received(self) -> Counter[str]:
        return maildir_received(self.maildir)

    def remove(self) -> None:
        shutil.rmtree(self.maildir, ignore_errors=True)


class EmailChannel:
    name: str = "email"
    contact_kind: str = ContactPoint.Kind.EMAIL.value
    port_names: tuple[str, ...] = ("smtp", "sink_http")
    stored_bytes_per_message: int = MAIL_BYTES_PER_NOTICE

    def contact_value(self, index: int, *, plan: tuple[str, ...]) -> str:
        return f"owner{index}@{RECIPIENT_DOMAIN}"

    def region_fields(self) -> dict[str, object]:
        return {"email_from_address": SENDER.address, "email_from_name": SENDER.display_name}

    def database_prepare(self) -> None:
        """Nothing: an email needs only the region's sender."""

    def run(self, *, place: RunPlace, ports: Mapping[str, int]) -> EmailRun:
        maildir = sink_maildir(place=place)
        if not place.keep:
            # Memory is not freed by a reboot-less machine: removed at exit even if the run fails.
            atexit.register(shutil.rmtree, maildir, ignore_errors=True)
        return EmailRun(maildir=maildir, smtp_port=ports["smtp"], http_port=ports["sink_http"])
