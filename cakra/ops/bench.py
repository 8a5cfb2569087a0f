"""``cakra bench``: the whole pipeline under load, measured in one run.

Intake over HTTP through the batch API (as the ETLE back office would) →
notice → every channel the bench plan uses, into the loopback simulators,
on whatever database and broker the settings name. The web server, the
Celery worker and the simulators run as real child processes; this process
only drives the intake, watches the database and samples memory.

Method (docs/performance.md):
- ``loopback_ceiling_per_s`` is what a bare client gets from the same
  simulator in the same run: the same adapter (render-free, DKIM-signed
  messages the size of a notice) sending from as many processes as the
  worker has, with no database and no queue. Measured before and after the
  pipeline; the higher of the two counts (both are reported).
- ``seconds`` runs from the first intake request until every notice's
  delivery reached a final state (delivered/read, or failed for good).
- ``p50_ms``/``p99_ms``: notice issued → delivery confirmed (``delivered_at``
  when the simulator reports receipts, else ``sent_at``).
- ``lost``: notices posted that did not reach a final state by the
  deadline. ``duplicates``: messages the simulator received more than once
  (same Message-ID), plus notices with more than one successful attempt.
- ``peak_rss_mb``: the peak of the summed resident memory of the system's
  processes (web, worker, simulators, with their children), sampled each
  second; the driver's own memory is reported apart.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, connections
from django.db.models import Count, Q
from django.utils import timezone
from PIL import Image

from cakra.api.services import apikey_create
from cakra.delivery.models import Delivery, DeliveryAttempt
from cakra.demo.images import capture_jpeg
from cakra.enforcement.models import Notice, Region
from cakra.ops.processes import process_groups_stop
from cakra.registry.models import ContactPoint, Owner, Vehicle
from cakra.registry.services import contact_hash

REGION_CODE = "BENCH"
RECIPIENT_DOMAIN = "bench.example.com"
CEILING_DOMAIN = "ceiling.example.com"
PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
ARTICLES = ["287(1)", "287(2)", "287(5)", "289", "291", "283"]
PHOTO_POOL = 6
FINAL_STATUSES = (Delivery.Status.DELIVERED, Delivery.Status.READ, Delivery.Status.FAILED_PERMANENT)
# Original evidence + sink mail + database rows per notice, with margin.
DISK_MARGIN = 1.5
DB_BYTES_PER_NOTICE = 12_000
# How long the system under test gets to stop after the run.
STOP_GRACE_SECONDS = 30
MAIL_BYTES_PER_NOTICE = 12_000  # a signed notice email is ~11.7 KB


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    notices: int
    batch_size: int = 100
    intake_threads: int = 2
    web_workers: int = 2
    worker_concurrency: int = 4
    ceiling_messages: int = 8000
    timeout_seconds: float = 0.0  # 0: derived from the size
    keep: bool = False
    web_port: int = 0
    smtp_port: int = 0
    sink_http_port: int = 0


@dataclass
class ProcessGroup:
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def _trees(self) -> dict[str, list[int]]:
        alive = {name: process.pid for name, process in self.processes.items() if process.poll() is None}
        trees = _process_trees(alive.values())
        return {name: trees[pid] for name, pid in alive.items()}

    def rss_mb(self) -> float:
        return sum(_rss_kb(pid) for tree in self._trees().values() for pid in tree) / 1024

    def cpu_seconds(self) -> dict[str, float]:
        return {name: round(sum(_proc_cpu_seconds(pid) for pid in tree), 1) for name, tree in self._trees().items()}

    def stop(self) -> None:
        process_groups_stop(self.processes.values(), grace_seconds=STOP_GRACE_SECONDS)


# --- helpers ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, children that exited included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3; utime, stime, cutime, cstime are 14-17.
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _process_trees(roots: Iterable[int]) -> dict[int, list[int]]:
    """Each root with all its descendants, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    trees = {}
    for root in roots:
        found, stack = [], [root]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, []))
        trees[root] = found
    return trees


def _rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1])


def _servers_cpu_seconds() -> dict[str, float]:
    """CPU used so far by the machine's database and broker servers (for per-run deltas)."""
    totals = {"postgres": 0.0, "rabbitmq": 0.0, "redis": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = Path(entry, "comm").read_text().strip()
        except OSError:
            continue
        role = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis"}.get(name)
        if role:
            totals[role] += _proc_cpu_seconds(int(entry.name))
    return totals


def _own_rss_mb() -> float:
    """This process alone (the system's processes are its children)."""
    return _rss_kb(os.getpid()) / 1024


def _wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    msg = f"bench: timed out waiting for {what}"
    raise RuntimeError(msg)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def plate_for_index(index: int) -> str:
    number = index % 9999 + 1
    rest = index // 9999
    letters = ""
    for _ in range(3):
        letters += PLATE_LETTERS[rest % len(PLATE_LETTERS)]
        rest //= len(PLATE_LETTERS)
    return f"B {number} {letters}"


def photo_pool(size: int = PHOTO_POOL) -> list[bytes]:
    """1080p JPEGs of realistic weight (~250-350 KB): a drawn scene with sensor-like noise."""
    pool = []
    when = datetime.now(ZoneInfo("Asia/Jakarta"))
    for n in range(size):
        scene = capture_jpeg(
            plate=plate_for_index(n),
            colour=["Hitam", "Putih", "Merah", "Biru", "Silver", "Abu-abu"][n % 6],
            camera_id=f"BENCH-{n:03d}",
            captured_at=when,
            location="Jl. Jend. Sudirman, Jakarta",
            caption="Pasal 287(1)",
            seed=n,
            quality=92,
        )
        image = Image.open(io.BytesIO(scene))
        noisy = Image.blend(image, Image.effect_noise(image.size, 28).convert("RGB"), 0.11)
        out = io.BytesIO()
        noisy.save(out, format="JPEG", quality=88)
        pool.append(out.getvalue())
    return pool


# --- phases ----------------------------------------------------------------------
def disk_check(*, notices: int, pool: list[bytes]) -> None:
    per_notice = statistics.mean(len(p) for p in pool) + DB_BYTES_PER_NOTICE + MAIL_BYTES_PER_NOTICE
    needed = int(notices * per_notice * DISK_MARGIN)
    for path in {Path(settings.EVIDENCE_ROOT), Path(settings.DATA_DIR)}:
        path.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path).free
        if free < needed:
            msg = f"bench needs ~{needed / 1e9:.1f} GB free at {path}; {free / 1e9:.1f} GB free"
            raise RuntimeError(msg)


def registry_seed(*, notices: int, log: Callable[[str], None]) -> str:
    """The bench region, a pre-validated key and one registered vehicle (with
    an email contact) per notice; bulk inserts, encryption included."""
    region, _ = Region.objects.update_or_create(
        code=REGION_CODE,
        defaults={
            "name": "Bench region",
            "plate_prefixes": ["B"],
            "channel_order": list(settings.CAKRA_ENABLED_CHANNELS),
            "email_from_address": "etle@bench.korlantas.example.go.id",
            "email_from_name": "ETLE Bench",
            "letterhead": "BENCH",
            "signatory_name": "Bench",
            "signatory_title": "Bench",
        },
    )
    have = Vehicle.objects.filter(plate__startswith="B ").count()
    chunk = 2000
    for start in range(have, notices, chunk):
        stop = min(notices, start + chunk)
        owners = [Owner(name=f"Pemilik {i}", nik="", nik_hash="") for i in range(start, stop)]
        Owner.objects.bulk_create(owners)
        contacts = []
        vehicles = []
        for i, owner in zip(range(start, stop), owners, strict=True):
            address = f"owner{i}@{RECIPIENT_DOMAIN}"
            contacts.append(
                ContactPoint(
                    owner=owner,
                    kind=ContactPoint.Kind.EMAIL,
                    value=address,
                    value_hash=contact_hash(kind="email", value=address),
                )
            )
            plate = plate_for_index(i)
            vehicles.append(
                Vehicle(
                    plate=plate,
                    plate_compact=plate.replace(" ", ""),
                    vehicle_type=Vehicle.Type.CAR,
                    make="Toyota",
                    model="Avanza",
                    colour="Hitam",
                    chassis_number=f"MHBENCH{i:010d}",
                    engine_number=f"EB{i:09d}",
                    owner=owner,
                )
            )
        ContactPoint.objects.bulk_create(contacts)
        Vehicle.objects.bulk_create(vehicles)
        if (stop // chunk) % 10 == 0 or stop == notices:
            log(f"  registry: {stop:,}/{notices:,} vehicles")
    # Fresh statistics for the tables just seeded, as autovacuum would take
    # them after a bulk load; the pipeline's tables get theirs as they grow,
    # from autoanalyze_as_autovacuum during the run.
    autoanalyze_as_autovacuum()
    return apikey_create(region_code=region.code, name="bench", pre_validated=True, actor="bench").token


def autoanalyze_as_autovacuum() -> list[str]:
    """ANALYZE every table of the bench's database that autovacuum would
    analyze now (PostgreSQL only); return their names.

    A production server runs autovacuum, which analyzes a table once the
    rows changed since its last analysis exceed ``autovacuum_analyze_threshold``
    plus ``autovacuum_analyze_scale_factor`` of its size (50 + 10% by
    default). The development servers of this machine class run with
    autovacuum off, so the bench applies the same rule itself, with the
    server's own settings, each time it polls for progress.

    Without it the pipeline's tables went the whole run without statistics,
    which cost twice. Analyzed once while empty (until commit a79a994), they stayed
    "empty" and the foreign-key checks scanned them whole for every insert.
    Never analyzed (a79a994's fix), the planner took every equality for
    matching 0.5% of a table, and so looked receipts' deliveries up by
    provider reference with a sequential scan of the whole delivery table,
    and the receipts seen before with one of the receipt table, once per
    receipt batch: ~8 ms each at 20,000 deliveries, growing with the run
    (found with EXPLAIN ANALYZE; fixed in commit 796b413).
    """
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.relid::regclass::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8 "
            "+ current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0)"
        )
        tables = [row[0] for row in cursor.fetchall()]
        for table in tables:  # names as PostgreSQL quotes them (regclass)
            cursor.execute(f"ANALYZE {table}")
    return tables


def sink_maildir(*, run_id: str, workdir: Path, notices: int, ceiling_messages: int) -> Path:
    """Where the simulated relay keeps its mail: in memory (``/dev/shm``) when
    it has room, else beside the run's other data.

    The sink stands in for a third party's relay; its storage is not ours to
    measure, and on this machine's disk creating files slows down several
    times for minutes after a mass delete (a previous run's clean-up), which
    made the ceiling swing by 2x from one run to the next. The evidence, the
    database and the broker stay on disk.
    """
    shared = Path("/dev/shm")  # noqa: S108 - a run-specific folder, removed afterwards
    needed = (notices + 2 * ceiling_messages) * MAIL_BYTES_PER_NOTICE * DISK_MARGIN
    if shared.is_dir() and os.access(shared, os.W_OK) and shutil.disk_usage(shared).free > needed:
        return shared / f"cakra-bench-{run_id}-sink"
    return workdir / "sink"


# The bench's key goes through its quotas (cakra.api.quota) like any key, so
# their cost is measured, but with limits far above what the driver can send:
# the bench measures throughput, not where a quota would cut in.
BENCH_API_KEY_LIMITS = {"RATE_PER_SECOND": 1_000_000, "BURST": 1_000_000, "MAX_IN_FLIGHT": 10_000}


def processes_start(
    *, config: BenchConfig, ports: dict[str, int], workdir: Path, maildir: Path, api_key_prefix: str
) -> ProcessGroup:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CAKRA_DATA_DIR": str(settings.DATA_DIR),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CAKRA_SMTP_HOST": "127.0.0.1",
        "CAKRA_SMTP_PORT": str(ports["smtp"]),
        "CAKRA_SMTP_SECURITY": "none",
        "CAKRA_SINK_SMTP_PORT": str(ports["smtp"]),
        "CAKRA_SINK_HTTP_PORT": str(ports["sink_http"]),
        "CAKRA_SINK_MAILDIR": str(maildir),
        "CAKRA_PORTAL_BASE_URL": f"http://127.0.0.1:{ports['web']}",
        "PORT": str(ports["web"]),
        "CAKRA_LOG_LEVEL": "WARNING",
        "CAKRA_API_KEY_LIMITS_JSON": json.dumps({api_key_prefix: BENCH_API_KEY_LIMITS}),
    }
    if not env["DATABASE_URL"]:
        env.pop("DATABASE_URL")
    python = sys.executable
    commands = {
        "sink": [python, "-m", "cakra.cli", "sink"],
        "web": [
            python, "-m", "gunicorn", "cakra.config.wsgi:application",
            "--bind", f"127.0.0.1:{ports['web']}",
            "--workers", str(config.web_workers),
            "--timeout", "300",
            "--log-level", "warning",
        ],
        "worker": [
            python, "-m", "celery", "--app", "cakra.config.celery", "worker",
            "--queues", ",".join(sorted({*settings.CAKRA_ENABLED_CHANNELS, "evidence", "celery"})),
            "--concurrency", str(config.worker_concurrency),
            "--prefetch-multiplier", "8",
            "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING",
        ],
    }  # fmt: skip
    group = ProcessGroup()
    for name, command in commands.items():
        log_path = workdir / f"{name}.log"
        group.logs[name] = log_path
        with log_path.open("wb") as log_file:
            group.processes[name] = subprocess.Popen(  # noqa: S603 - fixed argument lists
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
    _wait_for(lambda: _accepts(ports["smtp"]), timeout=30, what="the SMTP sink")
    _wait_for(lambda: _accepts(ports["web"]), timeout=60, what="the web server")
    _wait_for(lambda: b"ready" in group.logs["worker"].read_bytes() or _worker_ready(), timeout=60, what="worker")
    return group


def _worker_ready() -> bool:
    from cakra.config.celery import app

    with contextlib.suppress(Exception):
        return bool(app.control.ping(timeout=0.5))
    return False


# The bare client's message: the size of a real notice email (text ~2.8 KB,
# HTML ~6.6 KB, ~11.7 KB signed) and ordinary prose, so that encoding,
# signing, transfer and storage cost what they cost for the pipeline's.
CEILING_SENTENCE = "Kendaraan Anda tercatat melanggar lalu lintas; periksa keaslian surat di portal resmi. "
CEILING_TEXT_CHARS = 2800
CEILING_HTML_CHARS = 6600
_ceiling_adapter: Any = None


def _ceiling_process_start(port: int, ready: Any) -> None:
    """Once per process of the bare client, before the clock starts: Django,
    the adapter (DKIM key loaded) and an open SMTP session; then it waits for
    the other processes, so that all of them send at once."""
    import django

    django.setup()
    global _ceiling_adapter  # noqa: PLW0603 - one adapter per pool process
    from cakra.delivery.channels.email import SmtpEmailAdapter

    logging.getLogger().setLevel(logging.WARNING)  # one line per message would swamp the run's output
    options = {**settings.CAKRA_EMAIL, "HOST": "127.0.0.1", "PORT": port, "SECURITY": "none"}
    _ceiling_adapter = SmtpEmailAdapter(options=options)
    _ceiling_adapter.send(_ceiling_message(-1 - os.getpid()))
    ready.wait(timeout=120)


def _ceiling_message(n: int) -> Any:
    from cakra.delivery.channels.base import OutboundMessage, SenderIdentity

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
        sender=SenderIdentity(address="etle@bench.korlantas.example.go.id", display_name="ETLE Bench"),
    )


def _ceiling_send(args: tuple[int, int]) -> tuple[int, float, float]:
    """One process's share of the bare client's messages: (sent, start, end) by the wall clock."""
    first, count = args
    started = time.time()
    for n in range(first, first + count):
        _ceiling_adapter.send(_ceiling_message(n))
    return count, started, time.time()


def loopback_ceiling(*, messages: int, processes: int, smtp_port: int) -> float:
    """Messages per second a bare client (the same adapter: rendering aside,
    the same MIME, DKIM and SMTP code, over reused sessions; no database, no
    queue) gets from the sink, with as many processes as the worker has.

    Timed from the first process's first message to the last one's last:
    process start-up, Django set-up and the first connection are excluded,
    as the pipeline's worker has them behind it too.
    """
    per = max(1, messages // processes)
    jobs = [(i * per, per) for i in range(processes)]
    # Forked children must not share this process's database connections.
    connections.close_all()
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(processes)
    with ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=_ceiling_process_start, initargs=(smtp_port, ready)
    ) as pool:
        # The pool starts its processes (and runs the initializer) as jobs
        # arrive; each job reads its own clock after that.
        results = list(pool.map(_ceiling_send, jobs))
    sent = sum(count for count, _, _ in results)
    return sent / (max(end for _, _, end in results) - min(start for _, start, _ in results))


def photo_fragments(pool: list[bytes]) -> list[bytes]:
    """Each photo of the pool as the JSON string of its base64 (quotes included), encoded once per run.

    Every batch body refers to these: a 290 KB photo is ~390 KB of JSON text,
    and encoding it again for each of the run's captures was most of the
    driver's CPU.
    """
    return [json.dumps(base64.b64encode(photo).decode("ascii")).encode("ascii") for photo in pool]


def intake_batches(*, notices: int, batch_size: int, fragments: list[bytes], run_id: str) -> Iterator[list[bytes]]:
    """The batch bodies of the run, each as the pieces it is sent in (a JSON
    document once joined): each item's own fields, serialised here, and the
    shared, already encoded text of its photo, never copied into the body."""
    captured = (timezone.localtime() - timedelta(hours=1)).isoformat()
    rng = random.Random(run_id)  # noqa: S311 - load shape, not security
    evidence_open = ', "evidence": [{"kind": "vehicle", "content_base64": '
    evidence_close = "}]}"
    for start in range(0, notices, batch_size):
        parts: list[bytes] = []
        between = '{"violations": ['
        for i in range(start, min(notices, start + batch_size)):
            fields = {
                "capture_id": f"BENCH-{run_id}-{i}",
                "camera_id": f"BENCH-{i % 50:03d}",
                "captured_at": captured,
                "location": "Jl. Jend. Sudirman, Jakarta",
                "plate": plate_for_index(i),
                "article": ARTICLES[rng.randrange(len(ARTICLES))],
            }
            # The item's fields, its object left open for the evidence.
            parts.append((between + json.dumps(fields)[:-1] + evidence_open).encode())
            parts.append(fragments[i % len(fragments)])
            between = evidence_close + ", "
        parts.append((evidence_close + "]}").encode())
        yield parts


def intake_run(*, config: BenchConfig, port: int, token: str, pool: list[bytes], run_id: str) -> Counter[str]:
    fragments = photo_fragments(pool)
    totals: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()

    connections: list[HTTPConnection] = []

    def connect() -> HTTPConnection:
        conn = HTTPConnection("127.0.0.1", port, timeout=600)
        with lock:
            connections.append(conn)
        return conn

    def post(body: list[bytes]) -> None:
        if not hasattr(local, "conn"):
            local.conn = connect()
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            # Given, so that http.client sends the pieces as they are (not chunked).
            "Content-Length": str(sum(len(part) for part in body)),
        }
        for attempt in range(5):
            try:
                local.conn.request("POST", "/api/v1/violations/batch", body=body, headers=headers)
                response = local.conn.getresponse()
                payload = response.read()
                break
            except (OSError, ConnectionError):
                local.conn.close()
                local.conn = connect()
                time.sleep(0.5 * (attempt + 1))
        else:
            with lock:
                totals["batch_failed"] += 1
            return
        with lock:
            if response.status != 200:  # noqa: PLR2004
                totals[f"batch_http_{response.status}"] += 1
                return
            answer = json.loads(payload)
            totals["created"] += answer.get("created", 0)
            totals["replayed"] += answer.get("replayed", 0)
            totals["rejected"] += answer.get("rejected", 0)

    # At most two batches per thread exist at a time, and a batch holds only
    # its items' own fields (the photos' text is shared): the driver's memory
    # does not grow with --notices.
    in_flight = threading.BoundedSemaphore(config.intake_threads * 2)

    def post_and_release(body: list[bytes]) -> None:
        try:
            post(body)
        finally:
            in_flight.release()

    with ThreadPoolExecutor(max_workers=config.intake_threads) as executor:
        for body in intake_batches(
            notices=config.notices, batch_size=config.batch_size, fragments=fragments, run_id=run_id
        ):
            in_flight.acquire()
            executor.submit(post_and_release, body)
    for conn in connections:
        conn.close()
    return totals


def _final_count(*, region: Region, since: datetime, receipts: bool, expected: int) -> int:
    """Deliveries of notices issued since ``since`` that reached a final state.

    Polled each second, so counted on the (status, updated_at) index alone:
    the exact count joins every delivery to its notice, a cost that grows
    with the run and was charged to the pipeline's database CPU.
    Deliveries of other work in the same database can only make the cheap
    count high, so the exact one confirms it before the run is declared over.
    """
    final = final_filter(receipts=receipts)
    done = Delivery.objects.filter(updated_at__gte=since).filter(final).count()
    if done < expected:
        return done
    return Delivery.objects.filter(notice__region=region, notice__issued_at__gte=since).filter(final).count()


def final_filter(*, receipts: bool) -> Q:
    statuses = list(FINAL_STATUSES) + ([] if receipts else [Delivery.Status.SENT])
    return Q(status__in=statuses)


def sink_duplicates(maildir: Path) -> tuple[int, int]:
    """(messages, duplicates) among the bench's recipients, by Message-ID."""
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
                seen[str(headers.get("Message-ID", ""))] += 1
    total = sum(seen.values())
    return total, total - len(seen)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _ceiling(config: BenchConfig, *, smtp_port: int) -> float:
    messages = min(config.ceiling_messages, max(200, config.notices))
    return loopback_ceiling(messages=messages, processes=config.worker_concurrency, smtp_port=smtp_port)


def bench_run(config: BenchConfig, *, log: Callable[[str], None]) -> dict[str, Any]:  # noqa: PLR0915
    """One measured sequence: seed, start the system, measure the ceiling, drive, collect."""
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(settings.DATA_DIR) / f"bench-{run_id}"
    workdir.mkdir(parents=True)
    receipts = bool(getattr(settings, "CAKRA_SINK", {}).get("RECEIPT_URL"))
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    log(f"bench {run_id}: {config.notices:,} notices on {connection.vendor} + {broker}")
    pool = photo_pool()
    log(f"  evidence pool: {len(pool)} photos, mean {statistics.mean(len(p) for p in pool) / 1024:.0f} KB")
    disk_check(notices=config.notices, pool=pool)
    token = registry_seed(notices=config.notices, log=log)
    ports = {
        "web": config.web_port or free_port(),
        "smtp": config.smtp_port or free_port(),
        "sink_http": config.sink_http_port or free_port(),
    }
    maildir = sink_maildir(
        run_id=run_id, workdir=workdir, notices=config.notices, ceiling_messages=config.ceiling_messages
    )
    if not config.keep:
        # Memory is not freed by a reboot-less machine: removed at exit even if the run fails.
        atexit.register(shutil.rmtree, maildir, ignore_errors=True)
    # The token is cakra_<prefix>_<secret> (cakra.api.services.apikey_create).
    api_key_prefix = token.split("_")[1]
    group = processes_start(config=config, ports=ports, workdir=workdir, maildir=maildir, api_key_prefix=api_key_prefix)
    peak_rss = 0.0
    driver_peak = 0.0
    stop_sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_rss, driver_peak
        while not stop_sampling.wait(1.0):
            peak_rss = max(peak_rss, group.rss_mb())
            driver_peak = max(driver_peak, _own_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        log("  measuring the loopback ceiling (bare client, no database, no queue)…")
        ceiling = _ceiling(config, smtp_port=ports["smtp"])
        log(f"  loopback ceiling: {ceiling:.0f} messages/s")
        region = Region.objects.get(code=REGION_CODE)
        cpu_before = {**group.cpu_seconds(), **_servers_cpu_seconds(), "driver": _proc_cpu_seconds(os.getpid())}
        started = time.monotonic()
        started_at = timezone.now()
        intake_thread_result: dict[str, Counter[str]] = {}
        intake = threading.Thread(
            target=lambda: intake_thread_result.setdefault(
                "totals", intake_run(config=config, port=ports["web"], token=token, pool=pool, run_id=run_id)
            )
        )
        intake.start()
        timeout = config.timeout_seconds or max(300.0, config.notices / 20)
        deadline = started + timeout
        done = 0
        last_report = 0.0
        while time.monotonic() < deadline:
            autoanalyze_as_autovacuum()
            done = _final_count(region=region, since=started_at, receipts=receipts, expected=config.notices)
            now = time.monotonic()
            if now - last_report >= 10:  # noqa: PLR2004
                last_report = now
                log(f"  {now - started:6.0f}s  {done:,}/{config.notices:,} notices delivered")
            if done >= config.notices and not intake.is_alive():
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
        intake.join(timeout=60)
        cpu_after = {**group.cpu_seconds(), **_servers_cpu_seconds(), "driver": _proc_cpu_seconds(os.getpid())}
        # Once more after the pipeline, and the higher figure counts: the
        # first measurement can fall in a slow spell of the disk (creating
        # files is several times slower for minutes after a mass delete,
        # such as the previous run's clean-up), which would flatter the ratio.
        ceiling_after = _ceiling(config, smtp_port=ports["smtp"])
        log(f"  loopback ceiling after the run: {ceiling_after:.0f} messages/s")
        ceilings = (ceiling, ceiling_after)
        ceiling = max(ceilings)
    finally:
        stop_sampling.set()
        group.stop()
    totals = intake_thread_result.get("totals", Counter())
    notices = Notice.objects.filter(region=region, issued_at__gte=started_at)
    rows = Delivery.objects.filter(notice__in=notices).values_list("notice__issued_at", "delivered_at", "sent_at")
    latencies = []
    for issued, delivered, sent in rows:
        confirmed = delivered if receipts else sent
        if confirmed is not None:
            latencies.append((confirmed - issued).total_seconds() * 1000)
    issued_count = notices.count()
    final_count = Delivery.objects.filter(notice__in=notices).filter(final_filter(receipts=receipts)).count()
    multi_sent = (
        DeliveryAttempt.objects.filter(delivery__notice__in=notices, outcome=DeliveryAttempt.Outcome.SENT)
        .values("delivery")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    mail_total, mail_duplicates = sink_duplicates(maildir)
    messages = final_count
    result = {
        "notices": config.notices,
        "seconds": round(seconds, 1),
        "notices_per_s": round(final_count / seconds, 1) if seconds else 0.0,
        "messages_per_s": round(messages / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.50)),
        "p99_ms": round(percentile(latencies, 0.99)),
        "lost": config.notices - final_count,
        "duplicates": mail_duplicates + multi_sent,
        "peak_rss_mb": round(peak_rss),
        "driver_peak_rss_mb": round(driver_peak),
        "db": connection.vendor,
        "broker": broker,
        "loopback_ceiling_per_s": round(ceiling, 1),
        "loopback_ceilings_measured": [round(value, 1) for value in ceilings],
        "ceiling_ratio": round(messages / seconds / ceiling, 3) if seconds and ceiling else 0.0,
        "confirmed_by": "delivery receipts" if receipts else "relay acceptance (sent)",
        "intake": dict(totals),
        "issued": issued_count,
        "mail_received": mail_total,
        "evidence_mean_kb": round(statistics.mean(len(p) for p in pool) / 1024),
        # Where the time goes: CPU seconds per component during the measured run.
        "cpu_seconds": {
            name: round(cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0), 1) for name in sorted(cpu_after)
        },
        "cpu_count": os.cpu_count(),
    }
    if not config.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(maildir, ignore_errors=True)
    return result
