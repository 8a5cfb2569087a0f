"""The fast paths' measurement runs end to end (tiny counts: no timing is judged here)."""

from __future__ import annotations

import math

import pytest

from cakra.enforcement.models import Region, Violation
from cakra.ops.fastpaths import fastpaths_measure

pytestmark = pytest.mark.django_db


def test_the_measurement_reports_three_positive_ratios_and_leaves_no_rows():
    regions, violations = Region.objects.count(), Violation.objects.count()

    ratios = fastpaths_measure(messages=4, renders=4, rows=8)

    assert set(ratios) == {"email_send_speedup", "template_render_speedup", "bulk_insert_speedup"}
    assert all(isinstance(value, float) and math.isfinite(value) and value > 0 for value in ratios.values())
    assert (Region.objects.count(), Violation.objects.count()) == (regions, violations)
