"""LocalSandbox (the batch runner as a host subprocess) and the UnitRequest contract; no Docker needed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from harvest.errors import ConfigError, RunnerFailed, UnitDeadlineExceeded
from harvest.sandbox import UnitRequest, open_sandbox
from harvest.sandbox.local import LocalSandbox


def _request(tmp_path: Path, jobs: list[dict[str, Any]], **kw: Any) -> UnitRequest:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return UnitRequest("run1", "unit1", 0, "ignored", path, tmp_path / "out" / "stream.jsonl", **kw)


def _fake_tracer(tmp_path: Path, source: str) -> Path:
    pkg = tmp_path / "lib" / "tracer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(source)
    return pkg


def test_runs_a_unit_with_the_real_tracer_and_resumes(tmp_path: Path) -> None:
    jobs = [
        {
            "program_id": "double",
            "mode": "call",
            "source": "def f(a):\n    return a * 2\n",
            "entrypoint": "f",
            "input": "21",
        },
        {"program_id": "boom", "mode": "script", "source": "raise ValueError('no')\n"},
    ]
    req = _request(tmp_path, jobs, program_timeout_s=5)
    outcome = LocalSandbox().run_unit(req)
    assert outcome.exit_code == 0 and outcome.sandbox == "local" and outcome.container_id is None
    rows = {r["program_id"]: r for r in map(json.loads, req.output_path.read_text().splitlines())}
    assert rows["double"]["status"] == "ok" and rows["double"]["return_value"] == "42"
    assert rows["boom"]["status"] == "exception" and rows["boom"]["exception_type"] == "ValueError"
    assert rows["double"]["limits"]["memory_mb"] == req.program_memory_mb
    before = req.output_path.read_text()
    LocalSandbox().run_unit(req)  # finished programs are skipped: nothing is traced twice
    assert req.output_path.read_text() == before


def test_unit_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    tracer = _fake_tracer(
        tmp_path,
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n",
    )
    req = _request(tmp_path, [], unit_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(UnitDeadlineExceeded, match="deadline of 2 s"):
        LocalSandbox(tracer_dir=tracer).run_unit(req)
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed with its group, and reaped by init
        for _ in range(200):
            os.kill(grandchild, 0)
            time.sleep(0.05)


def test_runner_failure_raises_with_its_stderr(tmp_path: Path) -> None:
    tracer = _fake_tracer(
        tmp_path, "import sys\nprint('cannot read jobs', file=sys.stderr)\nsys.exit(2)\n"
    )
    with pytest.raises(RunnerFailed, match="cannot read jobs") as info:
        LocalSandbox(tracer_dir=tracer).run_unit(_request(tmp_path, []))
    assert info.value.exit_code == 2 and info.value.retryable


def test_each_program_starts_in_an_empty_folder(tmp_path: Path) -> None:
    # The working directory (also HOME and TMPDIR) is the unit's, emptied before every program:
    # what one program leaves there is not seen by the next.
    leaves = "import os, tempfile\nopen('here', 'w').write('x')\ntempfile.mkstemp()\nprint(len(os.listdir('.')))\n"
    sees = "import os\nprint(sorted(os.listdir('.')), sorted(os.listdir(os.environ['TMPDIR'])))\n"
    jobs = [{"program_id": "leaves", "mode": "script", "source": leaves},
            {"program_id": "sees", "mode": "script", "source": sees}]
    req = _request(tmp_path, jobs, program_timeout_s=5)
    LocalSandbox().run_unit(req)
    rows = {r["program_id"]: r for r in map(json.loads, req.output_path.read_text().splitlines())}
    assert rows["leaves"]["stdout"] == "2\n", rows["leaves"]
    assert rows["sees"]["stdout"] == "[] []\n", rows["sees"]


def test_runner_arguments(tmp_path: Path) -> None:
    req = _request(
        tmp_path,
        [],
        program_timeout_s=2.5,
        backend="settrace",
        max_events=7,
        max_value_chars=9,
        memory_mb=300,
    )
    args = req.runner_args("/out/jobs.jsonl", "/out/stream.jsonl")
    assert args == [
        "-m", "tracer", "batch", "/out/jobs.jsonl", "--out", "/out/stream.jsonl", "--timeout", "2.5",
        "--backend", "settrace", "--max-events", "7", "--max-value-chars", "9", "--memory-mb", "236",
    ]  # fmt: skip


def test_relative_paths_are_taken_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    req = UnitRequest("r", "u", 0, "i", Path("jobs.jsonl"), Path("out/u.jsonl"))
    assert (req.jobs_path, req.output_path) == (tmp_path / "jobs.jsonl", tmp_path / "out" / "u.jsonl")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unit_id": "a/b"}, "unit_id"),
        ({"run_id": ""}, "run_id"),
        ({"attempt": -1}, "attempt"),
        ({"unit_timeout_s": 0}, "unit_timeout_s"),
        ({"memory_mb": 16}, "memory_mb"),
        ({"pids": 0}, "pids"),
    ],
)
def test_bad_requests_are_rejected(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = dict(
        run_id="r", unit_id="u", attempt=0, image="i", jobs_path=tmp_path, output_path=tmp_path
    )
    fields.update(changes)
    with pytest.raises(ConfigError, match=message):
        UnitRequest(**fields)


def test_unknown_sandbox_kind() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox 'vm'"):
        open_sandbox("vm")
    assert isinstance(open_sandbox("local"), LocalSandbox)
