"""One measured run, phase after phase; channel-agnostic (each channel plugs in through ``channels``).

Seed (:mod:`.seeding`), start the system (:mod:`.supervision`), measure each
channel's ceiling (:mod:`.ceiling`), drive the intake (:mod:`.driver`) while
watching the database until every notice's delivery is final, then collect
the figures (:mod:`.measurement`). Method: docs/performance.md.
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
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from cakra.delivery.models import Delivery
from cakra.enforcement.models import Notice, Region
from cakra.ops.bench.channels import bench_channels
from cakra.ops.bench.channels.base import BenchChannel, ChannelRun, RunPlace
from cakra.ops.bench.config import REGION_CODE, BenchConfig
from cakra.ops.bench.driver import intake_run
from cakra.ops.bench.measurement import (
    copies_beyond_first,
    deliveries_sent_twice,
    final_count,
    final_filter,
    latencies_ms,
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


def _ceilings(runs: Sequence[ChannelRun], config: BenchConfig) -> list[float]:
    messages = min(config.ceiling_messages, max(200, config.notices))
    return [run.ceiling(messages=messages, processes=config.worker_concurrency) for run in runs]


def _timeout(config: BenchConfig) -> float:
    return config.timeout_seconds or max(300.0, config.notices / 20)


class _Watch:
    """The driver's view of the database, polled each second."""

    def __init__(self, *, region: Region, since: datetime, final: Q, expected: int) -> None:
        self.region = region
        self.since = since
        self.final = final
        self.expected = expected

    def poll(self) -> int:
        autoanalyze_as_autovacuum()
        return final_count(region=self.region, since=self.since, final=self.final, expected=self.expected)


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
    channels = bench_channels()
    broker = settings.CELERY_BROKER_URL.split(":", 1)[0]
    log(f"bench {run_id}: {config.notices:,} notices on {connection.vendor} + {broker}")
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
    )
    runs = [channel.run(place=place, ports=ports) for channel in channels]
    return _Setup(run_id=run_id, workdir=workdir, channels=channels, runs=runs, pool=pool, token=token, ports=ports)


def bench_run(config: BenchConfig, *, log: Callable[[str], None]) -> dict[str, Any]:
    """One measured sequence: seed, start the system, measure the ceiling, drive, collect."""
    setup = _setup(config, log=log)
    group = processes_start(
        config=config,
        web_port=setup.ports["web"],
        workdir=setup.workdir,
        # The token is cakra_<prefix>_<secret> (cakra.api.services.apikey_create).
        api_key_prefix=setup.token.split("_")[1],
        simulators=setup.runs,
    )
    sampler = _MemorySampler(group)
    sampler.start()
    try:
        driven = _drive(config, setup=setup, group=group, log=log)
    finally:
        sampler.stop()
        group.stop()
    result = _collect(config, setup=setup, driven=driven, sampler=sampler)
    if not config.keep:
        shutil.rmtree(setup.workdir, ignore_errors=True)
        for run in setup.runs:
            run.remove()
    return result


def _drive(config: BenchConfig, *, setup: _Setup, group: ProcessGroup, log: Callable[[str], None]) -> _Driven:
    """Post the intake and watch until every notice's delivery is final (or the deadline)."""
    log("  measuring the loopback ceiling (bare client, no database, no queue)…")
    ceilings_before = _ceilings(setup.runs, config)
    log(f"  loopback ceiling: {ceilings_before[0]:.0f} messages/s")
    region = Region.objects.get(code=REGION_CODE)
    cpu_before = {**group.cpu_seconds(), **servers_cpu_seconds(), "driver": proc_cpu_seconds(os.getpid())}
    started = time.monotonic()
    started_at = timezone.now()
    intake_thread_result: dict[str, Counter[str]] = {}
    intake = threading.Thread(
        target=lambda: intake_thread_result.setdefault(
            "totals",
            intake_run(
                config=config,
                port=setup.ports["web"],
                token=setup.token,
                pool=setup.pool,
                run_id=setup.run_id,
            ),
        )
    )
    intake.start()
    watch = _Watch(
        region=region, since=started_at, final=final_filter(confirms=setup.confirms), expected=config.notices
    )
    deadline = started + _timeout(config)
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
    intake.join(timeout=60)
    cpu_after = {**group.cpu_seconds(), **servers_cpu_seconds(), "driver": proc_cpu_seconds(os.getpid())}
    driven = _Driven(
        started_at=started_at,
        seconds=seconds,
        totals=intake_thread_result.get("totals", Counter()),
        cpu_before=cpu_before,
        cpu_after=cpu_after,
        ceilings_before=ceilings_before,
    )
    # Once more after the pipeline, and the higher figure counts: the
    # first measurement can fall in a slow spell of the disk (creating
    # files is several times slower for minutes after a mass delete,
    # such as the previous run's clean-up), which would flatter the ratio.
    driven.ceilings_after = _ceilings(setup.runs, config)
    log(f"  loopback ceiling after the run: {driven.ceilings_after[0]:.0f} messages/s")
    return driven


def _collect(config: BenchConfig, *, setup: _Setup, driven: _Driven, sampler: _MemorySampler) -> dict[str, Any]:
    """The result line."""
    confirms = setup.confirms
    region = Region.objects.get(code=REGION_CODE)
    notices = Notice.objects.filter(region=region, issued_at__gte=driven.started_at)
    latencies = latencies_ms(notices, confirms=confirms)
    final = Delivery.objects.filter(notice__in=notices).filter(final_filter(confirms=confirms)).count()
    received: Counter[str] = Counter()
    for run in setup.runs:
        received.update(run.received())
    seconds = driven.seconds
    result: dict[str, Any] = {
        "notices": config.notices,
        "seconds": round(seconds, 1),
        "notices_per_s": round(final / seconds, 1) if seconds else 0.0,
        "messages_per_s": round(final / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.50)),
        "p99_ms": round(percentile(latencies, 0.99)),
        "lost": config.notices - final,
        "duplicates": copies_beyond_first(received) + deliveries_sent_twice(notices),
        "peak_rss_mb": round(sampler.peak_rss),
        "driver_peak_rss_mb": round(sampler.driver_peak),
        "db": connection.vendor,
        "broker": settings.CELERY_BROKER_URL.split(":", 1)[0],
    }
    result |= _ceiling_result(setup=setup, driven=driven, messages=final)
    result |= {
        "confirmed_by": _confirmed_by(confirms),
        "intake": dict(driven.totals),
        "issued": notices.count(),
        "mail_received": sum(received.values()),
        "evidence_mean_kb": round(statistics.mean(len(p) for p in setup.pool) / 1024),
        # Where the time goes: CPU seconds per component during the measured run.
        "cpu_seconds": {
            name: round(driven.cpu_after.get(name, 0.0) - driven.cpu_before.get(name, 0.0), 1)
            for name in sorted(driven.cpu_after)
        },
        "cpu_count": os.cpu_count(),
    }
    return result


def _ceiling_result(*, setup: _Setup, driven: _Driven, messages: int) -> dict[str, Any]:
    """The first channel's ceiling and ratio (with one channel, email today, the
    run's); every channel's ceilings apart when there are several."""
    before, after = driven.ceilings_before, driven.ceilings_after
    ceiling = max(before[0], after[0])
    seconds = driven.seconds
    result: dict[str, Any] = {
        "loopback_ceiling_per_s": round(ceiling, 1),
        "loopback_ceilings_measured": [round(before[0], 1), round(after[0], 1)],
        "ceiling_ratio": round(messages / seconds / ceiling, 3) if seconds and ceiling else 0.0,
    }
    if len(setup.channels) > 1:
        result["loopback_ceilings_by_channel"] = {
            channel.name: [round(first, 1), round(second, 1)]
            for channel, first, second in zip(setup.channels, before, after, strict=True)
        }
    return result


def _confirmed_by(confirms: dict[str, bool]) -> str:
    if all(confirms.values()):
        return "delivery receipts"
    if not any(confirms.values()):
        return "relay acceptance (sent)"
    return ", ".join(
        f"{name}: {'delivery receipts' if confirming else 'relay acceptance (sent)'}"
        for name, confirming in confirms.items()
    )
