"""The clock time windows are measured by: the system clock unless a test
freezes it, and a frozen clock moves only when told, or when slept on."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from cakra import clock as cakra_clock
from tests.clock import ManualClock


def test_by_default_it_is_the_system_clock():
    before = time.time()
    moment = cakra_clock.now()

    assert moment.tzinfo is not None
    assert abs(moment - timezone.now()) < timedelta(seconds=1)
    assert before <= cakra_clock.time() <= time.time()
    assert cakra_clock.monotonic() <= time.monotonic()


def test_a_frozen_clock_moves_only_when_advanced_or_slept_on(clock: ManualClock):
    wall, steady = cakra_clock.time(), cakra_clock.monotonic()
    time.sleep(0.01)  # real time passes; the frozen clock does not
    assert (cakra_clock.time(), cakra_clock.monotonic()) == (wall, steady)

    started = time.monotonic()
    cakra_clock.sleep(30)  # what the code under test sleeps moves the clock instead of waiting
    clock.advance(1.5)

    assert time.monotonic() - started < 1
    assert cakra_clock.time() == pytest.approx(wall + 31.5)
    assert cakra_clock.monotonic() == pytest.approx(steady + 31.5)
    assert cakra_clock.now().timestamp() == pytest.approx(wall + 31.5)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
