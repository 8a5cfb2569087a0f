"""The channels the bench knows, one module each (the interface: ``base.py``).

A new channel joins with its module and one entry in ``BENCH_CHANNELS``;
the bench uses the ones ``CAKRA_ENABLED_CHANNELS`` enables, in that order,
or the one ``cakra bench --channel`` names.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from cakra.ops.bench.channels.base import BenchChannel
from cakra.ops.bench.channels.email import EmailChannel
from cakra.ops.bench.channels.sms import SmsChannel
from cakra.ops.bench.channels.whatsapp import WhatsAppChannel

BENCH_CHANNELS: tuple[BenchChannel, ...] = (WhatsAppChannel(), SmsChannel(), EmailChannel())


def bench_channels(names: Sequence[str] = ()) -> list[BenchChannel]:
    """The bench's plug-ins of ``names`` (default: the enabled channels), in that order.

    An enabled channel without one would get deliveries that nothing in the
    bench receives or counts: refused rather than measured wrong.
    """
    known = {channel.name: channel for channel in BENCH_CHANNELS}
    enabled = list(names or settings.CAKRA_ENABLED_CHANNELS)
    missing = [name for name in enabled if name not in known]
    if missing:
        msg = f"cakra bench has no plug-in for the enabled channel(s) {', '.join(missing)} (cakra/ops/bench/channels)"
        raise RuntimeError(msg)
    return [known[name] for name in enabled]
