"""Shard fixtures for the publish tests: the bundled sample programs traced locally (no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harvest.inspect.sample import SAMPLE_PROGRAMS, write_sample_shards


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two shards (6 traces, 5 programs) with its manifest and a run manifest."""
    out = tmp_path_factory.mktemp("shards")
    write_sample_shards(SAMPLE_PROGRAMS, out, rows_per_shard=3)
    (out / "harvest-run.json").write_text(
        '{"format": "worldtrace.harvest-run/1", "run_id": "test-run", "versions": {"tracer": "0.1.0"}}\n'
    )
    return out
