"""What a channel gives the bench: the one interface between the bench and a channel.

A channel joins the bench with a module in this package implementing
:class:`BenchChannel` and one entry in ``cakra.ops.bench.channels.BENCH_CHANNELS``;
nothing else in the bench names a channel. Through it the channel

- **seeds** its own kind of contact point for every registered owner
  (:meth:`BenchChannel.contact_value`; channels of one kind, WhatsApp and
  SMS, give the same owner the same number, stored once), the region fields
  its messages need (:meth:`BenchChannel.region_fields`) and anything else
  the database must hold before a message can go (:meth:`BenchChannel.database_prepare`);
- **runs** its provider's simulator as one of the system's processes, with
  the settings that point the system's adapter at it (:class:`ChannelRun`);
- measures its **ceiling**: what a bare client of the same adapter gets
  from that simulator with no database and no queue
  (:meth:`ChannelRun.ceiling`, usually through ``cakra.ops.bench.ceiling``);
- **counts what its simulator received**, copies per delivery, from which
  the bench derives duplicates and messages recorded as sent that never
  arrived (:meth:`ChannelRun.received`, asked while the simulator still runs).

The run's **plan** is the channels it uses, in order (``RunPlace.plan``):
with several, a notice goes to the first and falls back along the others,
and the phone channels give some owners magic numbers that make the plan
fall back (``phone.py``); with one (``cakra bench --channel``), every owner
is an ordinary recipient of that channel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cakra.ops.bench.supervision import Simulator


@dataclass(frozen=True, kw_only=True)
class RunPlace:
    """Where and how big one bench run is, as a channel needs to know it."""

    run_id: str
    workdir: Path  # the run's folder (logs, anything that should stay on disk)
    notices: int
    ceiling_messages: int  # per ceiling measurement; measured twice in a run
    keep: bool  # leave what the run stored for inspection
    plan: tuple[str, ...]  # the run's channels in the plan's order


class ChannelRun(Simulator, Protocol):
    """One channel's part of one run, from its simulator's start to its clean-up
    (``env``, ``processes`` and ``wait_ready``: cakra.ops.bench.supervision.Simulator)."""

    # The simulator reports what became of each message (receipts): a
    # delivery is done once confirmed. Without receipts it is done once sent.
    confirms: bool

    def ceiling(self, *, messages: int, processes: int) -> float:
        """Messages per second a bare client of the channel's adapter gets from the simulator."""

    def received(self) -> Counter[str]:
        """Copies the simulator received of each of the run's deliveries, by delivery id
        (asked before the simulator stops; the ceiling's messages are not counted)."""

    def remove(self) -> None:
        """Remove what the simulator stored for this run."""


class BenchChannel(Protocol):
    """A channel as the bench uses it; one module per channel in this package."""

    name: str  # the channel's value in ``cakra.delivery.models.Channel``
    contact_kind: str  # the ``ContactPoint.Kind`` of its recipients
    port_names: tuple[str, ...]  # ports its simulator listens on, picked free unless the config fixes them
    stored_bytes_per_message: int  # what the simulator keeps per message, for the disk check

    def contact_value(self, index: int, *, plan: tuple[str, ...]) -> str:
        """The contact of the ``index``-th registered owner (an address, a number)
        in a run whose plan is ``plan``."""

    def region_fields(self) -> dict[str, object]:
        """Fields of the bench region that this channel's messages read (sender identity)."""

    def database_prepare(self) -> None:
        """Store what the channel's messages need besides the region (e.g. approved templates)."""

    def run(self, *, place: RunPlace, ports: Mapping[str, int]) -> ChannelRun:
        """Prepare the simulator's storage and settings for one run (nothing started yet)."""
