"""The one way a fine is written."""

from __future__ import annotations

from cakra.enforcement.fines import rupiah


def test_indonesian_grouping_is_the_default():
    assert rupiah(500000) == "Rp500.000"
    assert rupiah(1250000) == "Rp1.250.000"
    assert rupiah(0) == "Rp0"


def test_english_pages_group_with_commas():
    assert rupiah(500000, english=True) == "Rp500,000"
