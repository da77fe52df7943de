"""The tracer over the real corpora (../shared/corpora), one subprocess per interpreter.

* differential: all CRUXEval programs under both backends on 3.12 and 3.13 give identical
  traces, and the rendered return value equals the rendering of ``eval(expected output)``.
* no behaviour change: CRUXEval and MBPP programs give the same result, exception and
  stdout traced (each backend) and untraced.
"""

from __future__ import annotations

import json

import pytest
from tracer_testutil import TRACER_TESTS, corpora_dir, host_python, pyenv_pythons, run_in

PYTHONS = pyenv_pythons()
RUNNER = str(TRACER_TESTS / "tracer_corpus_runner.py")


def _report(python: str, mode: str, corpus: str) -> dict:
    proc = run_in(python, RUNNER, mode, str(corpora_dir() / f"{corpus}.jsonl"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_cruxeval_differential(version: str, cruxeval: list) -> None:
    if version not in PYTHONS:
        pytest.skip(f"CPython {version} not found by pyenv")
    report = _report(PYTHONS[version], "differential", "cruxeval")
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
@pytest.mark.parametrize("corpus", ["cruxeval", "mbpp"])
def test_no_behaviour_change_313(corpus: str, request) -> None:
    request.getfixturevalue(corpus)
    if "3.13" not in PYTHONS:
        pytest.skip("CPython 3.13 not found by pyenv")
    report = _report(PYTHONS["3.13"], "nochange", corpus)
    assert report["problems"] == [], json.dumps(report["problems"][:5], indent=1)


@pytest.mark.multipython
@pytest.mark.parametrize("corpus", ["cruxeval", "mbpp"])
def test_line_analysis_matches_full_rescans(corpus: str, request) -> None:
    """Re-reading only what each line can change gives exactly the full-rescan events."""
    request.getfixturevalue(corpus)
    if "3.13" not in PYTHONS:
        pytest.skip("CPython 3.13 not found by pyenv")
    report = _report(PYTHONS["3.13"], "fullscan", corpus)
    assert report["problems"] == [], json.dumps(report["problems"][:3], indent=1)
