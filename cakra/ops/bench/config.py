"""What one bench run is asked to do, and the names every phase shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cakra.delivery.models import Delivery

REGION_CODE = "BENCH"
# Deliveries in these statuses are done whatever the channel; a channel whose
# simulator reports no receipts is also done once sent (channels/base.py).
FINAL_STATUSES = (Delivery.Status.DELIVERED, Delivery.Status.READ, Delivery.Status.FAILED_PERMANENT)
# How long the system under test gets to stop after the run.
STOP_GRACE_SECONDS = 30


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
    # The channels of the run's plan, in order; empty: the enabled ones
    # (CAKRA_ENABLED_CHANNELS). ``cakra bench --channel`` names one.
    channels: tuple[str, ...] = ()
    # Fixed ports by name ("web", or a channel simulator's, e.g. "smtp");
    # any port not named here is a free one picked at start.
    ports: Mapping[str, int] = field(default_factory=dict)
