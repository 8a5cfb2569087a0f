"""Fixtures of the API tests (helpers live in tests/api/helpers.py)."""

from __future__ import annotations
