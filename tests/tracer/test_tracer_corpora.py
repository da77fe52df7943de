"""The tracer over the real corpora (../shared/corpora), one subprocess per interpreter.

* differential: all CRUXEval programs under both backends on 3.12-3.15 give identical
  traces, and the rendered return value equals the rendering of ``eval(expected output)``.
* no behaviour change: CRUXEval and MBPP programs give the same result, exception and
  stdout traced (each backend) and untraced.
"""

from __future__ import annotations

import json

import pytest
from tracer_testutil import TRACER_TESTS, corpora_dir, host_python, interpreter, run_in

RUNNER = str(TRACER_TESTS / "tracer_corpus_runner.py")


def _report(python: str, mode: str, corpus: str) -> dict:
    proc = run_in(python, RUNNER, mode, str(corpora_dir() / f"{corpus}.jsonl"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.12", "3.13", "3.14", "3.15"])
def test_cruxeval_differential(version: str, cruxeval: list) -> None:
    report = _report(interpreter(version), "differential", "cruxeval")
    assert report["rows"] == len(cruxeval)
    assert report["backends"] == ["settrace", "monitoring"]
    assert report["problems"] == [], json.dumps(report["problems"][:5], indent=1)


@pytest.mark.parametrize("corpus", ["cruxeval", "mbpp"])
def test_no_behaviour_change_host(corpus: str, request) -> None:
    rows = request.getfixturevalue(corpus)
    report = _report(host_python(), "nochange", corpus)
    assert report["rows"] == len(rows)
    assert report["problems"] == [], json.dumps(report["problems"][:5], indent=1)


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.13", "3.14", "3.15"])
@pytest.mark.parametrize("corpus", ["cruxeval", "mbpp"])
def test_no_behaviour_change_newer_pythons(corpus: str, version: str, request) -> None:
    request.getfixturevalue(corpus)
    report = _report(interpreter(version), "nochange", corpus)
    assert report["problems"] == [], json.dumps(report["problems"][:5], indent=1)


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.13", "3.14", "3.15"])
@pytest.mark.parametrize("corpus", ["cruxeval", "mbpp"])
def test_line_analysis_matches_full_rescans(corpus: str, version: str, request) -> None:
    """Re-reading only what each line can change gives exactly the full-rescan events."""
    request.getfixturevalue(corpus)
    report = _report(interpreter(version), "fullscan", corpus)
    assert report["problems"] == [], json.dumps(report["problems"][:3], indent=1)
