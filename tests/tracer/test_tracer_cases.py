"""Behaviour as data (tests/tracer/cases.py) on the host interpreter, per backend."""

from __future__ import annotations

import pytest
from tracer_cases import CASES, check_case

from tracer.api import Limits, trace_call


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict, backend: str) -> None:
    limits = Limits(max_events=case["max_events"]) if "max_events" in case else None
    trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"], backend=backend,
                       limits=limits)
    assert check_case(case, trace) == []
    assert trace["backend"] == backend
