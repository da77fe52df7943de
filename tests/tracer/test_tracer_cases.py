"""Behaviour as data (tests/tracer/cases.py) on the host interpreter, per backend."""

from __future__ import annotations

import pytest
from tracer_cases import CASES, check_case

from tracer.api import Limits, trace_call
from tracer.jsonl import RawJSON, encode_line


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict, backend: str) -> None:
    limits = Limits(max_events=case["max_events"]) if "max_events" in case else None
    trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"], backend=backend,
                       limits=limits)
    assert check_case(case, trace) == []
    assert trace["backend"] == backend


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_events_written_straight_from_the_recorder_are_the_same_line(case: dict, backend: str) -> None:
    # trace_call(events_as_json=True) (the batch child, the command line) writes the events
    # without building their dicts: the output line must be byte for byte the same.
    limits = Limits(max_events=case["max_events"]) if "max_events" in case else None
    lines = []
    for as_json in (False, True):
        trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"],
                           backend=backend, limits=limits, events_as_json=as_json)
        assert (type(trace["events"]) is RawJSON) == as_json
        trace["wall_time_s"] = 0.0
        lines.append(encode_line(trace))
    assert lines[0] == lines[1]
