"""Behaviour as data (tests/tracer/cases.py) on the host interpreter, per backend."""

from __future__ import annotations

import pytest
from tracer_cases import CASES, check_case

from tracer.api import trace_call


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict, backend: str) -> None:
    trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"], backend=backend)
    assert check_case(case, trace) == []
    assert trace["backend"] == backend
