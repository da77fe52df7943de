"""notebooks/inspect_traces.ipynb runs top to bottom under `pytest --nbmake` (a fresh kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "inspect_traces.ipynb"


def test_inspect_notebook_runs_under_nbmake() -> None:
    pytest.importorskip("nbmake")
    pytest.importorskip("ipykernel")
    env = {k: v for k, v in os.environ.items() if k != "WORLDTRACE_SHARDS"}  # use the bundled sample
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=300", "-q", "-p", "no:cacheprovider",
         str(NOTEBOOK)],
        capture_output=True, text=True, timeout=600, env=env, cwd=NOTEBOOK.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
