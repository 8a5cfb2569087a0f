"""One measured run, phase after phase; channel-agnostic (each channel plugs in through ``channels``).

Seed (:mod:`.seeding`), start the system (:mod:`.supervision`), measure each
channel's ceiling (:mod:`.ceiling`), drive the intake (:mod:`.driver`) while
watching the database until every notice's delivery is final (with faults
injected, :mod:`.faults`, when asked), then collect the figures
(:mod:`.measurement`). Method: docs/performance.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import Error as DatabaseLibraryError
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from cakra.audit.models import AuditEvent
from cakra.audit.selectors import audit_verify_chain
from cakra.delivery.dispatch import RETRY_BACKOFF_MAX_SECONDS
from cakra.delivery.models import Delivery
from cakra.enforcement.models import Notice, Region
from cakra.ops.bench.channels import bench_channels
from cakra.ops.bench.channels.base import BenchChannel, ChannelRun, RunPlace
from cakra.ops.bench.channels.phone import fallbacks_expected
from cakra.ops.bench.config import REGION_CODE, BenchConfig
from cakra.ops.bench.driver import intake_run
from cakra.ops.bench.faults import FaultInjector, FaultPlan, FaultReport, fault_schedule
from cakra.ops.bench.measurement import (
    deliveries_sent_twice,
    deliveries_succeeded,
    deliveries_tally,
    fallbacks_audited,
    fallbacks_by_status,
    final_count,
    final_filter,
    latencies_ms,
    messages_by_channel,
    percentile,
)
from cakra.ops.bench.photos import photo_pool
from cakra.ops.bench.seeding import disk_check, registry_seed
from cakra.ops.bench.statistics import autoanalyze_as_autovacuum
from cakra.ops.bench.supervision import (
    ProcessGroup,
    free_port,
    own_rss_mb,
    proc_cpu_seconds,
    processes_start,
    servers_cpu_seconds,
)

PROGRESS_EVERY_SECONDS = 10
# A batch the server failed under faults is posted again up to this many times.
FAULT_SERVER_ERROR_RETRIES = 30
STRANDED_MARGIN_SECONDS = 5.0
LEASE_EXPIRED_ACTION = "delivery.lease_expired"


def _per_channel(plan: Sequence[str], rates: Sequence[float]) -> str:
    return ", ".join(f"{name} {rate:.0f}" for name, rate in zip(plan, rates, strict=True))


def _ceilings(runs: Sequence[ChannelRun], config: BenchConfig) -> list[float]:
    messages = min(config.ceiling_messages, max(200, config.notices))
    return [run.ceiling(messages=messages, processes=config.worker_concurrency) for run in runs]


def _timeout(config: BenchConfig, faults: FaultPlan | None) -> float:
    if config.timeout_seconds:
        return config.timeout_seconds
    timeout = max(300.0, config.notices / 20)
    if faults is not None:
        # Room for what the faults strand to come back: a sending lease, a
        # lost retry (its longest countdown plus the margin) and two sweeps.
        sweep = float(cast("float", settings.CELERY_BEAT_SCHEDULE["delivery-sweep-stuck"]["schedule"]))
        timeout += faults.lease_seconds + RETRY_BACKOFF_MAX_SECONDS + faults.lease_seconds + 2 * sweep
    return timeout


class _Watch:
    """The driver's view of the database, polled each second.

    Under faults its connection may be among those terminated (the poll then
    reconnects), and it notes the deliveries left in ``sending`` for longer
    than ``stranded_after`` seconds: a live worker records a chunk's outcome
    well within that, so they belong to a chunk a fault cut off.
    """

    def __init__(
        self, *, region: Region, since: datetime, final: Q, expected: int, stranded_after: float | None
    ) -> None:
        self.region = region
        self.since = since
        self.final = final
        self.expected = expected
        self.stranded_after = stranded_after
        self.stranded: set[str] = set()
        self.done = 0

    def poll(self) -> int:
        try:
            autoanalyze_as_autovacuum()
            self.done = final_count(region=self.region, since=self.since, final=self.final, expected=self.expected)
            if self.stranded_after is not None:
                older = timezone.now() - timedelta(seconds=self.stranded_after)
                sending = Delivery.objects.filter(status=Delivery.Status.SENDING, updated_at__lt=older)
                self.stranded.update(str(pk) for pk in sending.values_list("id", flat=True))
        except DatabaseLibraryError:
            if self.stranded_after is None:
                raise
            connection.close()  # terminated by a fault: the next poll opens another
        return self.done


def _stranded_after(faults: FaultPlan) -> float:
    # A chunk's time with its provider is capped at a tenth of the sending
    # lease (cakra.delivery.sending.send_time_budget); the margin covers
    # recording its outcome on a loaded machine.
    return faults.lease_seconds / 10 + STRANDED_MARGIN_SECONDS


@dataclass
class _Setup:
    """What the run prepared before anything started."""

    run_id: str
    workdir: Path
    channels: list[BenchChannel]
    runs: list[ChannelRun]
    pool: list[bytes]
    token: str
    ports: dict[str, int]

    @property
    def confirms(self) -> dict[str, bool]:
        return {channel.name: run.confirms for channel, run in zip(self.channels, self.runs, strict=True)}

    @property
    def plan(self) -> tuple[str, ...]:
        return tuple(channel.name for channel in self.channels)

    @property
    def final(self) -> Q:
        return final_filter(confirms=self.confirms, last_step=len(self.channels))


@dataclass
class _Driven:
    """What happened between the first intake request and the last final delivery."""

    started_at: datetime
    seconds: float
    totals: Counter[str]
    cpu_before: dict[str, float]
    cpu_after: dict[str, float]
    ceilings_before: list[float] = field(default_factory=list)
    ceilings_after: list[float] = field(default_factory=list)
    fault_report: FaultReport = field(default_factory=FaultReport)
    stranded: set[str] = field(default_factory=set)
    # What each channel's simulator received, by delivery id (asked before they stop).
    received: dict[str, Counter[str]] = field(default_factory=dict)


class _MemorySampler:
    """The peak resident memory of the system's processes and of the driver, each second."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.peak_rss = 0.0
        self.driver_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.peak_rss = max(self.peak_rss, self.group.rss_mb())
            self.driver_peak = max(self.driver_peak, own_rss_mb())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _setup(config: BenchConfig, *, log: Callable[[str], None]) -> _Setup:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(settings.DATA_DIR) / f"bench-{run_id}"
    workdir.mkdir(parents=True)
    channels = bench_channels(config.channels)
    plan = tuple(channel.name for channel in channels)
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    log(f"bench {run_id}: {config.notices:,} notices on {connection.vendor} + {broker}, plan {' -> '.join(plan)}")
    pool = photo_pool()
    log(f"  evidence pool: {len(pool)} photos, mean {statistics.mean(len(p) for p in pool) / 1024:.0f} KB")
    disk_check(notices=config.notices, pool=pool, channels=channels)
    token = registry_seed(notices=config.notices, channels=channels, log=log)
    names = ["web", *(name for channel in channels for name in channel.port_names)]
    ports = {name: config.ports.get(name) or free_port() for name in names}
    place = RunPlace(
        run_id=run_id,
        workdir=workdir,
        notices=config.notices,
        ceiling_messages=config.ceiling_messages,
        keep=config.keep,
        plan=plan,
    )
    runs = [channel.run(place=place, ports=ports) for channel in channels]
    return _Setup(run_id=run_id, workdir=workdir, channels=channels, runs=runs, pool=pool, token=token, ports=ports)


def bench_run(config: BenchConfig, *, log: Callable[[str], None], faults: FaultPlan | None = None) -> dict[str, Any]:
    """One measured sequence: seed, start the system, measure the ceiling, drive, collect.

    With ``faults`` the scheduler runs too (the sweeper takes back what the
    faults strand), the faults are injected while the pipeline runs, the
    ceiling is not measured, and the result adds what the faults did.
    """
    setup = _setup(config, log=log)
    group = processes_start(
        config=config,
        channels=setup.plan,
        web_port=setup.ports["web"],
        workdir=setup.workdir,
        # The token is cakra_<prefix>_<secret> (cakra.api.services.apikey_create).
        api_key_prefix=setup.token.split("_")[1],
        simulators=setup.runs,
        scheduler=faults is not None,
        env_extra=faults.env() if faults is not None else None,
    )
    sampler = _MemorySampler(group)
    sampler.start()
    try:
        driven = _drive(config, setup=setup, group=group, faults=faults, log=log)
        driven.received = {
            channel.name: run.received() for channel, run in zip(setup.channels, setup.runs, strict=True)
        }
    finally:
        sampler.stop()
        group.stop()
    if faults is not None:
        connection.close()  # a fault may have ended it after the last poll
    result = _collect(config, setup=setup, driven=driven, sampler=sampler, faults=faults)
    if not config.keep:
        shutil.rmtree(setup.workdir, ignore_errors=True)
        for run in setup.runs:
            run.remove()
    return result


def _drive(
    config: BenchConfig,
    *,
    setup: _Setup,
    group: ProcessGroup,
    faults: FaultPlan | None,
    log: Callable[[str], None],
) -> _Driven:
    """Post the intake and watch until every notice's delivery is final (or the deadline)."""
    ceilings_before: list[float] = []
    if faults is None:
        log("  measuring the loopback ceiling (bare client, no database, no queue)…")
        ceilings_before = _ceilings(setup.runs, config)
        log(f"  loopback ceiling: {_per_channel(setup.plan, ceilings_before)} messages/s")
    region = Region.objects.get(code=REGION_CODE)
    cpu_before = {**group.cpu_seconds(), **servers_cpu_seconds(), "driver": proc_cpu_seconds(os.getpid())}
    started = time.monotonic()
    started_at = timezone.now()
    intake_thread_result: dict[str, Counter[str]] = {}
    retries = FAULT_SERVER_ERROR_RETRIES if faults is not None else 0
    intake = threading.Thread(
        target=lambda: intake_thread_result.setdefault(
            "totals",
            intake_run(
                config=config,
                port=setup.ports["web"],
                token=setup.token,
                pool=setup.pool,
                run_id=setup.run_id,
                server_error_retries=retries,
            ),
        )
    )
    intake.start()
    injector = _faults_start(faults, group=group, log=log) if faults is not None else None
    try:
        watch = _Watch(
            region=region,
            since=started_at,
            final=setup.final,
            expected=config.notices,
            stranded_after=_stranded_after(faults) if faults is not None else None,
        )
        deadline = started + _timeout(config, faults)
        last_report = 0.0
        while time.monotonic() < deadline:
            done = watch.poll()
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                log(f"  {now - started:6.0f}s  {done:,}/{config.notices:,} notices delivered")
            if done >= config.notices and not intake.is_alive():
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
    finally:
        fault_report = injector.finish() if injector is not None else FaultReport()
        if fault_report.not_applied:
            log(f"  faults: not applied before the run ended: {fault_report.not_applied}")
    intake.join(timeout=60)
    cpu_after = {**group.cpu_seconds(), **servers_cpu_seconds(), "driver": proc_cpu_seconds(os.getpid())}
    driven = _Driven(
        started_at=started_at,
        seconds=seconds,
        totals=intake_thread_result.get("totals", Counter()),
        cpu_before=cpu_before,
        cpu_after=cpu_after,
        ceilings_before=ceilings_before,
        fault_report=fault_report,
        stranded=watch.stranded,
    )
    if faults is None:
        # Once more after the pipeline, and the higher figure counts: the
        # first measurement can fall in a slow spell of the disk (creating
        # files is several times slower for minutes after a mass delete,
        # such as the previous run's clean-up), which would flatter the ratio.
        driven.ceilings_after = _ceilings(setup.runs, config)
        log(f"  loopback ceiling after the run: {_per_channel(setup.plan, driven.ceilings_after)} messages/s")
    return driven


def _collect(
    config: BenchConfig, *, setup: _Setup, driven: _Driven, sampler: _MemorySampler, faults: FaultPlan | None
) -> dict[str, Any]:
    """The result line: the same keys for every run without faults.

    ``messages_per_s`` counts every channel's messages (a notice that fell
    back is two or three); ``notices_per_s`` the notices settled. ``lost``:
    notices without a final outcome plus messages recorded as handed over
    that no simulator received; ``duplicates``: copies a simulator received
    beyond the first of a delivery (one notice on one channel), plus
    deliveries with two successful attempts.
    """
    confirms = setup.confirms
    region = Region.objects.get(code=REGION_CODE)
    notices = Notice.objects.filter(region=region, issued_at__gte=driven.started_at)
    latencies = latencies_ms(notices, confirms=confirms)
    final = Delivery.objects.filter(notice__in=notices).filter(setup.final).count()
    received: Counter[str] = Counter()
    for counts in driven.received.values():
        received.update(counts)
    seconds = driven.seconds
    messages = messages_by_channel(notices)
    sent_twice = deliveries_sent_twice(notices)
    tally = deliveries_tally(
        expected=config.notices, final=final, succeeded=deliveries_succeeded(notices), received=received
    )
    result: dict[str, Any] = {
        "notices": config.notices,
        "seconds": round(seconds, 1),
        "notices_per_s": round(final / seconds, 1) if seconds else 0.0,
        "messages_per_s": round(messages.total() / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.50)),
        "p99_ms": round(percentile(latencies, 0.99)),
        "lost": tally.lost,
        "duplicates": tally.duplicates + sent_twice,
        "peak_rss_mb": round(sampler.peak_rss),
        "driver_peak_rss_mb": round(sampler.driver_peak),
        "db": connection.vendor,
        "broker": settings.CELERY_BROKER_URL.split(":", 1)[0],
    }
    if faults is None:
        result |= _ceiling_result(setup=setup, driven=driven, messages=messages)
    result |= {
        "plan": list(setup.plan),
        "channels": _channels_result(setup=setup, driven=driven, messages=messages, with_ceilings=faults is None),
        "fallbacks": dict(fallbacks_audited(region_code=REGION_CODE, since=driven.started_at)),
        "fallbacks_by_status": dict(fallbacks_by_status(notices, plan=setup.plan)),
        "fallbacks_expected": dict(fallbacks_expected(config.notices, plan=setup.plan)),
        "deliveries": {
            "unfinished": tally.unfinished,
            "unreceived": tally.unreceived,
            "received_more_than_once": tally.duplicated,
            "sent_twice_by_attempts": sent_twice,
        },
        "confirmed_by": _confirmed_by(confirms),
        "intake": dict(driven.totals),
        "issued": notices.count(),
        # Every simulator's messages of the run (the name is from when email was the only channel).
        "mail_received": sum(received.values()),
        "evidence_mean_kb": round(statistics.mean(len(p) for p in setup.pool) / 1024),
        # Where the time goes: CPU seconds per component during the measured run.
        "cpu_seconds": {
            name: round(driven.cpu_after.get(name, 0.0) - driven.cpu_before.get(name, 0.0), 1)
            for name in sorted(driven.cpu_after)
        },
        "cpu_count": os.cpu_count(),
    }
    if faults is not None:
        result |= _fault_result(
            faults=faults,
            report=driven.fault_report,
            notices=notices,
            expected=config.notices,
            final=final,
            received=received,
            stranded=driven.stranded,
        )
    return result


def _ratio(messages: int, seconds: float, ceiling: float) -> float:
    return round(messages / seconds / ceiling, 3) if seconds and ceiling else 0.0


def _ceiling_result(*, setup: _Setup, driven: _Driven, messages: Counter[str]) -> dict[str, Any]:
    """The first channel's ceiling and its own messages' ratio to it (with one
    channel, the run's); every channel's ceilings apart when there are several
    (and each channel's ratio in ``channels``)."""
    before, after = driven.ceilings_before, driven.ceilings_after
    ceiling = max(before[0], after[0])
    seconds = driven.seconds
    result: dict[str, Any] = {
        "loopback_ceiling_per_s": round(ceiling, 1),
        "loopback_ceilings_measured": [round(before[0], 1), round(after[0], 1)],
        "ceiling_ratio": _ratio(messages[setup.plan[0]], seconds, ceiling),
    }
    if len(setup.channels) > 1:
        result["loopback_ceilings_by_channel"] = {
            channel.name: [round(first, 1), round(second, 1)]
            for channel, first, second in zip(setup.channels, before, after, strict=True)
        }
    return result


def _channels_result(
    *, setup: _Setup, driven: _Driven, messages: Counter[str], with_ceilings: bool
) -> dict[str, dict[str, Any]]:
    """Per channel: its messages and their rate over the whole run, what its
    simulator received, and (without faults) its own ceiling and the ratio.
    In a run of several channels a fallback channel's rate is its share of
    the plan's traffic, not its capacity (``cakra bench --channel`` measures that)."""
    seconds = driven.seconds
    channels: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(setup.plan):
        sent = messages[name]
        entry: dict[str, Any] = {
            "messages": sent,
            "messages_per_s": round(sent / seconds, 1) if seconds else 0.0,
            "received": sum(driven.received.get(name, Counter()).values()),
        }
        if with_ceilings:
            before, after = driven.ceilings_before[index], driven.ceilings_after[index]
            entry |= {
                "ceiling_per_s": round(max(before, after), 1),
                "ceilings_measured": [round(before, 1), round(after, 1)],
                "ceiling_ratio": _ratio(sent, seconds, max(before, after)),
            }
        channels[name] = entry
    return channels


def _confirmed_by(confirms: dict[str, bool]) -> str:
    if all(confirms.values()):
        return "delivery receipts"
    if not any(confirms.values()):
        return "relay acceptance (sent)"
    return ", ".join(
        f"{name}: {'delivery receipts' if confirming else 'relay acceptance (sent)'}"
        for name, confirming in confirms.items()
    )


def _faults_start(faults: FaultPlan, *, group: ProcessGroup, log: Callable[[str], None]) -> FaultInjector:
    schedule = fault_schedule(faults)
    injector = FaultInjector(
        schedule=schedule,
        worker_pid=group.processes["worker"].pid,
        database_settings=connection.settings_dict,
        log=log,
    )
    injector.start()
    log(f"  faults: seed {faults.seed}, {len(schedule)} events from {schedule[0].at:.1f}s to {schedule[-1].at:.1f}s")
    return injector


def _fault_result(
    *,
    faults: FaultPlan,
    report: FaultReport,
    notices: Any,
    expected: int,
    final: int,
    received: Counter[str],
    stranded: set[str],
) -> dict[str, Any]:
    """What the faults did and what they cost: lost and duplicated messages,
    deliveries brought back, and whether the audit chain still verifies."""
    succeeded = deliveries_succeeded(notices)
    tally = deliveries_tally(expected=expected, final=final, succeeded=succeeded, received=received)
    lease_expired = set(
        AuditEvent.objects.filter(action=LEASE_EXPIRED_ACTION, object_type="delivery").values_list(
            "object_id", flat=True
        )
    )
    chain = audit_verify_chain()
    audit: dict[str, Any] = {"ok": chain.ok, "events": chain.checked, "chains": chain.chains}
    if not chain.ok:
        audit |= {"broken_chain": chain.broken_chain, "broken_seq": chain.broken_seq, "reason": chain.reason}
    return {
        "kills": report.kills,
        "lost": tally.lost,
        # Copies a recipient got beyond the first, by delivery id (the
        # Message-ID is derived from it), as the simulators received them.
        "duplicates": tally.duplicates,
        "recovered": len((lease_expired | stranded) & succeeded),
        "audit_chain": audit,
        "faults": {
            "seed": faults.seed,
            "kills_planned": faults.kills,
            "kills_missed": report.kills_missed,
            "broker_restarts": report.broker_restarts,
            "database_connections_terminated": report.database_connections_terminated,
            "lease_seconds": faults.lease_seconds,
            "not_applied": report.not_applied,
            "errors": report.errors,
        },
        "deliveries": {
            "unfinished": tally.unfinished,
            "unreceived": tally.unreceived,
            "received_more_than_once": tally.duplicated,
            "lease_expired": len(lease_expired),
            "stranded_in_sending": len(stranded),
            "sent_twice_by_attempts": deliveries_sent_twice(notices),
        },
    }
