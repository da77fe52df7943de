"""Tracer test fixtures (the helpers live in tracer_testutil.py)."""

from __future__ import annotations

from tracer_testutil import backend  # noqa: F401  (fixture)
