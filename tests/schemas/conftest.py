"""Fixtures for the schemas tests: real tracer output for the CRUXEval corpus."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def cruxeval_traces(cruxeval: list[dict], tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict, str]]:
    """(stream object, program source) for every CRUXEval program, traced by the real tracer."""
    api = pytest.importorskip("tracer.api", reason="the tracer (tracer/api.py) is not available")
    folder = tmp_path_factory.mktemp("cruxeval")
    traces = []
    for row in cruxeval:
        path = folder / f"{row['id']}.py"
        path.write_text(row["code"], encoding="utf-8")
        trace = api.trace_call(str(path), "f", row["input"], program_id=row["id"])
        # The stream is JSON: keep exactly what a JSON Lines round trip gives.
        traces.append((json.loads(json.dumps(trace)), row["code"]))
    return traces
