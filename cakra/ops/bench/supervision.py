"""The system under test as child processes: started, watched (CPU, memory) and stopped.

Web (gunicorn), the Celery worker, the scheduler when the run needs the
sweeper, and every channel's simulator run as real processes, each in a
session of its own; this module also reads what they cost from ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from django.conf import settings

from cakra.config.celery import app as celery_app
from cakra.ops.bench.config import STOP_GRACE_SECONDS, BenchConfig
from cakra.ops.processes import process_groups_stop

# The bench's key goes through its quotas (cakra.api.quota) like any key, so
# their cost is measured, but with limits far above what the driver can send:
# the bench measures throughput, not where a quota would cut in.
BENCH_API_KEY_LIMITS = {"RATE_PER_SECOND": 1_000_000, "BURST": 1_000_000, "MAX_IN_FLIGHT": 10_000}
PROVIDERS_VARIABLE = "CAKRA_PROVIDERS_JSON"


class Simulator(Protocol):
    """A provider's simulator as a process of the system under test (a channel's run, channels/base.py)."""

    # Environment for every process of the system under test: the adapter's
    # settings pointing at the simulator, and the simulator's own. A
    # ``CAKRA_PROVIDERS_JSON`` (changes to its providers' entries) is merged
    # with the other simulators' by provider name.
    env: Mapping[str, str]
    # The simulator's processes by name, as argument lists run with ``env``.
    processes: Mapping[str, Sequence[str]]

    def wait_ready(self) -> None:
        """Return once the simulator takes messages; raise if it does not in time."""


@dataclass
class ProcessGroup:
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def _trees(self) -> dict[str, list[int]]:
        alive = {name: process.pid for name, process in self.processes.items() if process.poll() is None}
        trees = process_trees(alive.values())
        return {name: trees[pid] for name, pid in alive.items()}

    def rss_mb(self) -> float:
        return sum(rss_kb(pid) for tree in self._trees().values() for pid in tree) / 1024

    def cpu_seconds(self) -> dict[str, float]:
        return {name: round(sum(proc_cpu_seconds(pid) for pid in tree), 1) for name, tree in self._trees().items()}

    def stop(self) -> None:
        process_groups_stop(self.processes.values(), grace_seconds=STOP_GRACE_SECONDS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, children that exited included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3; utime, stime, cutime, cstime are 14-17.
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_children() -> dict[int, list[int]]:
    """Every process's children, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_trees(roots: Iterable[int]) -> dict[int, list[int]]:
    """Each root with all its descendants, from one scan of /proc."""
    children = process_children()
    trees = {}
    for root in roots:
        found, stack = [], [root]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, []))
        trees[root] = found
    return trees


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1])


def servers_cpu_seconds() -> dict[str, float]:
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
            totals[role] += proc_cpu_seconds(int(entry.name))
    return totals


def own_rss_mb() -> float:
    """This process alone (the system's processes are its children)."""
    return rss_kb(os.getpid()) / 1024


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    msg = f"bench: timed out waiting for {what}"
    raise RuntimeError(msg)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def worker_ready() -> bool:
    with contextlib.suppress(Exception):
        return bool(celery_app.control.ping(timeout=0.5))
    return False


def simulators_env(simulators: Sequence[Simulator], *, base: str = "") -> dict[str, str]:
    """The simulators' environment together, their provider changes merged
    (over ``base``, the caller's own ``CAKRA_PROVIDERS_JSON``) into one."""
    env: dict[str, str] = {}
    providers: dict[str, object] = json.loads(base) if base.strip() else {}
    for simulator in simulators:
        own = dict(simulator.env)
        for name, entry in json.loads(own.pop(PROVIDERS_VARIABLE, "{}")).items():
            current = providers.get(name)
            providers[name] = {**current, **entry} if isinstance(current, dict) and isinstance(entry, dict) else entry
        env.update(own)
    if providers:
        env[PROVIDERS_VARIABLE] = json.dumps(providers)
    return env


def processes_start(
    *,
    config: BenchConfig,
    channels: Sequence[str],
    web_port: int,
    workdir: Path,
    api_key_prefix: str,
    simulators: Sequence[Simulator],
    scheduler: bool = False,
    env_extra: Mapping[str, str] | None = None,
) -> ProcessGroup:
    """Start the simulators, the web server and the worker (and the scheduler,
    when the run needs the sweeper); return once each of them takes work.

    ``channels``: the run's plan; its processes enable those channels only.
    """
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CAKRA_DATA_DIR": str(settings.DATA_DIR),
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CAKRA_PORTAL_BASE_URL": f"http://127.0.0.1:{web_port}",
        "PORT": str(web_port),
        "CAKRA_LOG_LEVEL": "WARNING",
        "CAKRA_API_KEY_LIMITS_JSON": json.dumps({api_key_prefix: BENCH_API_KEY_LIMITS}),
        "CAKRA_ENABLED_CHANNELS": ",".join(channels),
    }
    env.update(simulators_env(simulators, base=os.environ.get(PROVIDERS_VARIABLE, "")))
    env.update(env_extra or {})
    if not env["DATABASE_URL"]:
        env.pop("DATABASE_URL")
    python = sys.executable
    celery = [python, "-m", "celery", "--app", "cakra.config.celery"]
    commands: dict[str, Sequence[str]] = {}
    for simulator in simulators:
        commands.update(simulator.processes)
    commands |= {
        "web": [
            python, "-m", "gunicorn", "cakra.config.wsgi:application",
            "--bind", f"127.0.0.1:{web_port}",
            "--workers", str(config.web_workers),
            "--timeout", "300",
            "--log-level", "warning",
        ],
        "worker": [
            *celery, "worker",
            "--queues", ",".join(sorted({*channels, "evidence", "celery"})),
            "--concurrency", str(config.worker_concurrency),
            "--prefetch-multiplier", "8",
            "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING",
        ],
    }  # fmt: skip
    if scheduler:
        commands["scheduler"] = [
            *celery, "beat", "--loglevel", "WARNING", "--schedule", str(workdir / "celerybeat-schedule"),
        ]  # fmt: skip
    group = ProcessGroup()
    for name, command in commands.items():
        log_path = workdir / f"{name}.log"
        group.logs[name] = log_path
        with log_path.open("wb") as log_file:
            group.processes[name] = subprocess.Popen(  # noqa: S603 - fixed argument lists
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
    for simulator in simulators:
        simulator.wait_ready()
    wait_for(lambda: accepts(web_port), timeout=60, what="the web server")
    wait_for(lambda: b"ready" in group.logs["worker"].read_bytes() or worker_ready(), timeout=60, what="worker")
    return group
