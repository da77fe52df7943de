"""notebooks/inspect_traces.ipynb runs top to bottom under `pytest --nbmake` (a fresh kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harvest.inspect.sample import SAMPLE_PROGRAMS, write_sample_shards

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inspect_traces.ipynb"


def _run_notebook(shards: Path | None) -> None:
    pytest.importorskip("nbmake")
    pytest.importorskip("ipykernel")
    env = {k: v for k, v in os.environ.items() if k != "WORLDTRACE_SHARDS"}
    if shards is not None:
        env["WORLDTRACE_SHARDS"] = str(shards)
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=300", "-q", "-p", "no:cacheprovider",
         str(NOTEBOOK)],
        capture_output=True, text=True, timeout=600, env=env, cwd=NOTEBOOK.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def _samples() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("worldtrace-sample-*"))


def test_inspect_notebook_runs_under_nbmake() -> None:
    before = _samples()
    _run_notebook(None)  # the bundled sample, traced in a temporary folder
    assert _samples() - before == set()  # that folder is gone again


def test_inspect_notebook_runs_on_shards_without_its_favourite_programs(tmp_path: Path) -> None:
    """WORLDTRACE_SHARDS from any harvest: the notebook picks a trace that is there."""
    programs = [p for p in SAMPLE_PROGRAMS if p["id"] not in ("hanoi", "fact")]
    write_sample_shards(programs, tmp_path / "shards", rows_per_shard=4)
    _run_notebook(tmp_path / "shards")
    assert any((tmp_path / "shards").glob("*.parquet"))  # your own shards are left alone
