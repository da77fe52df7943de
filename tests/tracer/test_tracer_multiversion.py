"""The tracer under every CPython 3.8-3.13 that pyenv lists and 3.14-3.15 in the catalog's images
(tracer_testutil.versions_under_test), with each backend it supports.

Each (interpreter, backend) runs the behaviour cases and the golden programs in one
subprocess. Both backends of one interpreter are compared against the same golden file
(tests/tracer/golden/<X.Y>/<name>.json), so the goldens also prove the backends agree.
``monitoring-general`` is the monitoring backend without its inlined hot path
(WORLDTRACE_MONITORING_GENERAL=1: every event through the general Recorder methods, as in
pytest mode), held to the same goldens. Regenerate with WORLDTRACE_REGEN_GOLDEN=1.
"""

from __future__ import annotations

import json
import os

import pytest
from tracer_testutil import (
    TRACER_TESTS,
    backends_for,
    corpora_dir,
    interpreter,
    run_in,
    versions_under_test,
)

GOLDEN = TRACER_TESTS / "golden"
REGEN = os.environ.get("WORLDTRACE_REGEN_GOLDEN") == "1"
VERSIONS = versions_under_test()
COMBOS = [(v, b) for v in VERSIONS for b in backends_for(v)]
COMBOS += [(v, "monitoring-general") for v in VERSIONS if "monitoring" in backends_for(v)]

pytestmark = pytest.mark.multipython


def _run(version: str, mode: str, backend: str) -> dict:
    extra_env = {"WORLDTRACE_MONITORING_GENERAL": "1"} if backend == "monitoring-general" else {}
    backend = backend.replace("-general", "")
    proc = run_in(interpreter(version), str(TRACER_TESTS / "tracer_golden_runner.py"), mode, backend, timeout=300,
                  extra_env=extra_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.skipif(not COMBOS, reason="no CPython 3.8-3.13 found by pyenv")
@pytest.mark.parametrize("version, backend", COMBOS, ids=[f"{v}-{b}" for v, b in COMBOS])
def test_behaviour_cases(version: str, backend: str) -> None:
    assert _run(version, "check", backend) == {}


@pytest.mark.skipif(not COMBOS, reason="no CPython 3.8-3.13 found by pyenv")
@pytest.mark.parametrize("version, backend", COMBOS, ids=[f"{v}-{b}" for v, b in COMBOS])
def test_golden_traces(version: str, backend: str) -> None:
    results = _run(version, "golden", backend)
    folder = GOLDEN / version
    if REGEN and backend == "settrace":
        folder.mkdir(parents=True, exist_ok=True)
        for name, trace in results.items():
            (folder / f"{name}.json").write_text(json.dumps(trace, indent=1, ensure_ascii=True) + "\n")
    mismatched = []
    for name, trace in results.items():
        path = folder / f"{name}.json"
        if not path.exists():
            pytest.fail(f"no golden file {path} (run with WORLDTRACE_REGEN_GOLDEN=1)")
        if json.loads(path.read_text()) != trace:
            mismatched.append(name)
    assert mismatched == [], f"traces differ from {folder} (regenerate with WORLDTRACE_REGEN_GOLDEN=1 if intended)"


@pytest.mark.skipif(not VERSIONS, reason="no CPython 3.8-3.13 found by pyenv")
@pytest.mark.parametrize("version", VERSIONS)
def test_bytecode_walker_agrees_with_dis(version: str) -> None:
    """codeinfo reads lines, opcodes and names straight from the bytecode (dis is too costly
    in a freshly forked batch child); on every code object of the test programs, the tracer
    itself and the corpora present, it must say what dis says."""
    corpora = [str(p) for p in (corpora_dir() / "cruxeval.jsonl", corpora_dir() / "mbpp.jsonl") if p.exists()]
    proc = run_in(interpreter(version), str(TRACER_TESTS / "tracer_bytecode_check.py"), *corpora, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["checked"] > 100
    assert report["problems"] == [], report["problems"]
