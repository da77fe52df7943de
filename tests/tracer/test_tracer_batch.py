"""The batch runner with real processes: hostile programs, resume after SIGKILL, malformed jobs.

Every batch runs as its own interpreter (`python -c DRIVER`), as inside a container, so a bad
program can never take the test process with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from tracer_testutil import interpreter

from tracer._batch_jobs import Blobs, JobError, parse_job
from tracer._batch_output import TraceWriter, encode_line

REPO_ROOT = Path(__file__).resolve().parents[2]
STREAM_KEYS = {
    "format", "program_id", "entrypoint", "input", "status", "return_value", "exception_type",
    "exception_message", "truncated", "truncated_reason", "stdout", "stderr", "output_truncated",
    "wall_time_s", "n_events", "python_version", "backend", "backend_reason", "tracer_version",
    "limits", "tracer_error", "events",
}  # fmt: skip

# Runs one batch: argv = jobs, out, JSON config (limits and runner options).
DRIVER = textwrap.dedent(
    """
    import json, logging, sys
    from tracer.api import Limits
    from tracer.batch import run_batch
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = json.loads(sys.argv[3])
    sys.exit(run_batch(sys.argv[1], sys.argv[2], limits=Limits(**cfg["limits"]), **cfg["options"]))
    """
)


def call(pid: str, source: str, entry: str = "f", input_text: str = "", **extra: Any) -> dict:
    job = {
        "program_id": pid,
        "source": textwrap.dedent(source),
        "entrypoint": entry,
        "input": input_text,
    }
    job.update(extra)
    return job


def write_jobs(path: Path, jobs: list) -> None:
    with path.open("wb") as f:
        for job in jobs:
            if isinstance(job, dict):
                job = json.dumps(job)
            f.write((job if isinstance(job, bytes) else job.encode("utf-8")) + b"\n")


def batch_cmd(python: str, jobs: Path, out: Path, limits: dict, **options: Any) -> list:
    return [
        python,
        "-c",
        DRIVER,
        str(jobs),
        str(out),
        json.dumps({"limits": limits, "options": options}),
    ]


def batch_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONHASHSEED"] = "0"
    return env


def run_batch_process(
    tmp: Path,
    jobs: list,
    limits: dict,
    python: str = sys.executable,
    timeout: float = 120,
    **options: Any,
) -> tuple:
    """Run a batch to its end; return (rows by program id in file order, the completed process)."""
    jobs_path, out = tmp / "jobs.jsonl", tmp / "out.jsonl"
    write_jobs(jobs_path, jobs)
    proc = subprocess.run(
        batch_cmd(python, jobs_path, out, limits, **options),
        cwd=tmp,
        env=batch_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return read_rows(out), proc


def read_rows(out: Path) -> dict:
    rows: dict = {}
    with out.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            assert row["program_id"] not in rows, "duplicate program id {}".format(
                row["program_id"]
            )
            rows[row["program_id"]] = row
    return rows


GOOD = "def f(x):\n    y = x * 2\n    return y\n"

HOSTILE_JOBS = [
    call("good-first", GOOD, input_text="21"),
    call("infinite-loop", "def f():\n    n = 0\n    while True:\n        n += 1\n"),
    call(
        "swallows-timeout",
        """
        def f():
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
        """,
    ),
    call("c-level-loop", "def f():\n    return sum(range(10 ** 12))\n"),
    call(
        "memory-bomb",
        "def f():\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 20))\n",
        timeout_s=20,  # under load, 200 MB in 1 s is not a given: the limit must be what stops it
    ),
    call(
        "output-flood",
        """
        import os, sys
        def f():
            for _ in range(2000):
                print("x" * 1000)
            sys.stdout.flush()
            os.write(1, b"y" * 1_000_000)
            sys.stderr.write("e" * 100_000)
            return 1
        """,
    ),
    call("os-exit", "import os\ndef f():\n    print('bye', flush=True)\n    os._exit(3)\n"),
    call("segfault", "import ctypes\ndef f():\n    return ctypes.string_at(0)\n"),
    call(
        "write-outside-tmp",
        "def f():\n    with open('/nonexistent-dir/x', 'w') as fh:\n        fh.write('x')\n",
    ),
    call(
        "file-too-big",
        "def f(path):\n    with open(path, 'wb') as fh:\n        fh.write(b'x' * 3_000_000)\n",
        input_text="'big.bin'",
    ),
    call(
        "settrace-off",
        "import sys\ndef f(x):\n    sys.settrace(None)\n    y = x + 1\n    return y\n",
        input_text="1",
    ),
    call(
        "monitoring-off",
        """
        import sys
        def f(x):
            mon = getattr(sys, "monitoring", None)
            if mon is not None:
                for tool in range(6):
                    try:
                        mon.set_events(tool, 0)
                        mon.free_tool_id(tool)
                    except ValueError:
                        pass
            y = x + 1
            return y
        """,
        input_text="1",
    ),
    call("exception", "def f():\n    raise ValueError('boom')\n"),
    call("reads-stdin", "def f():\n    return input()\n"),
    call(
        "forks",
        """
        import os
        def f():
            pid = os.fork()
            if pid == 0:
                print("in the forked copy", flush=True)
                return "copy"
            os.waitpid(pid, 0)
            return "original"
        """,
    ),
    call(
        "daemon",
        """
        import os, time
        def f(path):
            ready_r, ready_w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                with open(path, "w") as fh:
                    fh.write(str(os.getpid()))
                os.write(ready_w, b"x")  # the pid file exists before the program returns
                time.sleep(1000)
            os.read(ready_r, 1)
            return 1
        """,
        input_text="'daemon.pid'",
    ),
    call(
        "environment",
        """
        import os, random, time
        def f():
            return [os.environ.get("TZ"), time.strftime("%Z", time.localtime(0)), random.random(), hash("abc")]
        """,
    ),
    {
        "program_id": "script",
        "source": "import sys\nprint('args', sys.argv[1:])\n",
        "argv": ["a", "b"],
    },
    call(
        "logging",
        """
        import logging, sys
        def f():
            logging.basicConfig(format="%(message)s!", stream=sys.stdout, level=logging.INFO)
            logging.info("hello")
            streams = [(s.name, s.mode) for s in (sys.stdin, sys.stdout, sys.stderr)]
            return sys.argv, streams
        """,
    ),
    call("own-timeout", "import time\ndef f():\n    time.sleep(30)\n", timeout_s=0.3),
    call(
        "kills-its-parent",  # the runner's fork server: the batch must replace it and go on
        "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n",
    ),
    call(
        "forged-report",  # a result head, then events that would inject a key into the output line
        """
        import os
        from tracer._batch_child import RESULT_FD
        def f():
            os.write(RESULT_FD, b'{"kind": "result", "trace": {"status": "ok"}, "events": "next-line"}\\n')
            os.write(RESULT_FD, b'[],"program_id":"injected"\\n')
            os._exit(0)
        """,
    ),
    call(
        "forged-utf16-events",  # a JSON array, but in UTF-16: it must not go into a UTF-8 line
        """
        import os
        from tracer._batch_child import RESULT_FD
        def f():
            os.write(RESULT_FD, b'{"kind": "result", "trace": {"status": "ok"}, "events": "next-line"}\\n')
            os.write(RESULT_FD, '[1,\\r2]'.encode('utf-16-le') + b'\\n')
            os._exit(0)
        """,
    ),
    call(
        "forged-too-many-events",  # more events than --max-events (2000 here): not the recorder's
        """
        import os
        from tracer._batch_child import RESULT_FD
        def f():
            os.write(RESULT_FD, b'{"kind": "result", "trace": {"status": "ok"}, "events": "next-line"}\\n')
            os.write(RESULT_FD, b'[' + b','.join([b'{}'] * 2001) + b']\\n')
            os._exit(0)
        """,
    ),
    call(
        "forged-too-many-inline",  # the same, with the events inside the result message
        """
        import os
        from tracer._batch_child import RESULT_FD
        def f():
            os.write(RESULT_FD, b'{"kind": "result", "trace": {"status": "ok", "events": ['
                                + b','.join([b'{}'] * 2001) + b']}}\\n')
            os._exit(0)
        """,
    ),
    call(
        "forges-a-neighbour",  # a trace of its own for the id of a program after it (not a pytest job)
        """
        import os
        from tracer._batch_child import RESULT_FD
        def f():
            os.write(RESULT_FD, b'{"kind": "trace", "trace": {"program_id": "forges-a-neighbour::victim",'
                                b' "status": "ok", "return_value": "666"}}\\n')
            return 1
        """,
    ),
    call("forges-a-neighbour::victim", GOOD, input_text="5"),
    call(
        "placeholder-output",  # output equal to the writer's placeholder for spliced events
        "import sys\ndef f():\n    sys.stdout.write('\\x00raw-json\\x00')\n    return 'é\\ud800'\n",
    ),
    call(
        "breaks-builtins",  # and leaves them broken: the child still records and reports the trace
        """
        import builtins
        def broken(*args, **kwargs):
            raise RuntimeError("the program broke this builtin")
        def f(x):
            for name in ("len", "isinstance", "issubclass", "repr", "str", "type", "id", "hash",
                         "open", "print", "__import__", "iter", "next", "getattr", "hasattr",
                         "sorted", "min", "max", "int", "dict", "list", "tuple", "range", "zip"):
                setattr(builtins, name, broken)
            y = [x, {"x": x}]
            return y
        """,
        input_text="21",
    ),
    call(
        "breaks-clocks",  # as a test's monkeypatch may: the child times and reports with its own
        "import time\ndef f():\n    time.monotonic = time.perf_counter = None\n    return 1\n",
    ),
    call("good-last", GOOD, input_text="4"),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("hostile")
    limits = {"timeout_s": 1.0, "memory_mb": 200, "max_output_bytes": 10_000, "max_events": 2000}
    rows, proc = run_batch_process(tmp, HOSTILE_JOBS, limits, max_file_bytes=1_000_000)
    return rows, proc, tmp


def test_every_job_has_exactly_one_row_in_job_order(hostile: tuple) -> None:
    rows, proc, _ = hostile
    assert proc.returncode == 0, proc.stderr
    assert list(rows) == [j["program_id"] for j in HOSTILE_JOBS]
    for row in rows.values():
        assert set(row) == STREAM_KEYS, row["program_id"]
        assert row["format"] == "worldtrace.stream/1"


def test_good_programs_are_unaffected_by_their_neighbours(hostile: tuple) -> None:
    rows = hostile[0]
    for pid, value in (("good-first", "42"), ("good-last", "8")):
        assert rows[pid]["status"] == "ok"
        assert rows[pid]["return_value"] == value
        assert [e["kind"] for e in rows[pid]["events"]] == ["call", "line", "line", "return"]


@pytest.mark.parametrize(
    "pid, status, message",
    [
        ("infinite-loop", "timeout", "timeout"),
        ("swallows-timeout", "timeout", "killed after"),
        ("c-level-loop", "timeout", "killed after"),
        ("memory-bomb", "memory", None),
        ("os-exit", "crashed", "exited with code 3"),
        ("segfault", "crashed", "SIGSEGV"),
        ("write-outside-tmp", "exception", "No such file or directory"),
        ("file-too-big", "exception", "File too large"),
        ("exception", "exception", "boom"),
        ("reads-stdin", "exception", None),
    ],
)
def test_hostile_program_gets_its_status(
    hostile: tuple, pid: str, status: str, message: str | None
) -> None:
    row = hostile[0][pid]
    assert row["status"] == status, row
    if message is not None:
        assert message in (row["exception_message"] or ""), row["exception_message"]


def test_a_program_that_breaks_the_builtins_is_still_recorded(hostile: tuple) -> None:
    row = hostile[0]["breaks-builtins"]
    assert (row["status"], row["return_value"], row["tracer_error"]) == ("ok", "[21, {'x': 21}]", None)
    assert [e["kind"] for e in row["events"]][-3:] == ["line", "line", "return"]
    assert row["events"][-2]["locals"] == {"y": "[21, {'x': 21}]"}


def test_a_program_that_breaks_the_clocks_is_still_recorded(hostile: tuple) -> None:
    row = hostile[0]["breaks-clocks"]
    assert (row["status"], row["return_value"], row["tracer_error"]) == ("ok", "1", None)


def test_a_forged_report_is_not_written_into_the_output(hostile: tuple) -> None:
    # The runner keeps a child's events as the JSON text they came as, so it must check them:
    # text that is not one JSON array could end the events early and add keys to the line.
    rows = hostile[0]
    assert "injected" not in rows
    for pid in ("forged-report", "forged-utf16-events", "forged-too-many-events", "forged-too-many-inline"):
        row = rows[pid]
        assert row["status"] == "crashed" and row["events"] == [], row


def test_a_program_cannot_write_the_row_of_a_program_after_it(hostile: tuple) -> None:
    # Only a pytest job's child adds rows (its traced calls, ID::...): the runner would skip a
    # later job whose id already has one, so another program's could stand in for its trace.
    row = hostile[0]["forges-a-neighbour::victim"]
    assert (row["status"], row["return_value"]) == ("ok", "10"), row
    assert hostile[0]["forges-a-neighbour"]["return_value"] == "1"


def test_output_equal_to_the_writers_placeholder_is_kept(hostile: tuple) -> None:
    row = hostile[0]["placeholder-output"]
    assert row["status"] == "ok", row
    assert row["stdout"] == "\x00raw-json\x00"
    assert row["return_value"] == "'é\\ud800'"
    assert [e["kind"] for e in row["events"]] == ["call", "line", "line", "return"]


def test_a_job_can_set_its_own_timeout(hostile: tuple) -> None:
    row = hostile[0]["own-timeout"]
    assert row["status"] == "timeout" and row["limits"]["timeout_s"] == 0.3
    assert hostile[0]["good-last"]["limits"]["timeout_s"] == 1.0


def test_in_process_timeout_keeps_the_partial_trace(hostile: tuple) -> None:
    row = hostile[0]["infinite-loop"]
    assert row["n_events"] > 0 and row["events"][0]["kind"] == "call"


def test_crash_keeps_the_output_written_before_it(hostile: tuple) -> None:
    assert hostile[0]["os-exit"]["stdout"] == "bye\n"


def test_output_flood_is_capped_and_the_program_finishes(hostile: tuple) -> None:
    row = hostile[0]["output-flood"]
    assert row["status"] == "ok" and row["return_value"] == "1"
    assert row["output_truncated"] is True
    assert len(row["stdout"].encode()) == 10_000 and row["stdout"].startswith("x" * 1000 + "\n")
    assert len(row["stderr"].encode()) == 10_000


def test_memory_error_is_reported_by_the_child(hostile: tuple) -> None:
    row = hostile[0]["memory-bomb"]
    assert row["exception_type"] == "MemoryError"


def test_turning_the_tracer_off_is_recorded_and_does_not_leak(hostile: tuple) -> None:
    rows = hostile[0]
    for pid in ("settrace-off", "monitoring-off"):
        assert rows[pid]["status"] in ("ok", "error"), rows[pid]
        assert rows[pid]["return_value"] in ("2", None)
    # The next program is traced normally.
    assert rows["exception"]["n_events"] > 0


def test_a_forked_copy_of_the_program_does_not_report(hostile: tuple) -> None:
    row = hostile[0]["forks"]
    assert row["status"] == "ok" and row["return_value"] == "'original'"
    assert "in the forked copy" in row["stdout"]


def test_escaped_daemon_is_killed(hostile: tuple) -> None:
    tmp = hostile[2]
    assert hostile[0]["daemon"]["status"] == "ok"
    pid = int((tmp / "daemon.pid").read_text())
    assert not _alive(pid), f"the program's setsid daemon {pid} survived the batch"


def test_environment_is_deterministic(hostile: tuple) -> None:
    import random

    row = hostile[0]["environment"]
    tz, zone, rand, _ = json.loads(row["return_value"].replace("'", '"'))
    assert tz == "UTC" and zone == "UTC"
    assert rand == random.Random(0).random()


def test_script_jobs_get_argv(hostile: tuple) -> None:
    row = hostile[0]["script"]
    assert row["status"] == "ok" and row["stdout"] == "args ['a', 'b']\n"
    assert row["entrypoint"] is None and row["input"] is None


def test_program_sees_a_fresh_interpreter(hostile: tuple) -> None:
    # The runner's logging configuration and arguments are not the program's.
    row = hostile[0]["logging"]
    assert row["stdout"] == "hello!\n"
    assert row["return_value"] == "(['program_logging.py'], [('<stdin>', 'r'), ('<stdout>', 'w'), ('<stderr>', 'w')])"


def test_killing_the_fork_server_is_the_programs_crash_only(hostile: tuple) -> None:
    rows = hostile[0]
    row = rows["kills-its-parent"]
    # The program dies with the fork server (crashed) unless it reported first: the kill is asynchronous.
    assert row["status"] in ("crashed", "ok"), row
    if row["status"] == "crashed":
        assert "fork server" in row["exception_message"]
    assert rows["good-last"]["status"] == "ok" and rows["good-last"]["return_value"] == "8"


def test_run_record_is_written(hostile: tuple) -> None:
    tmp = hostile[2]
    runs = [json.loads(line) for line in (tmp / "out.jsonl.runs.jsonl").read_text().splitlines()]
    assert runs[-1]["ran"] == len(HOSTILE_JOBS) and runs[-1]["pythonhashseed"] == "0"
    assert runs[-1]["env"]["TZ"] == "UTC"
    # where the time goes: page faults of the runner (its fork server included) and of the programs
    assert runs[-1]["runner_faults_per_program"] > 0 and runs[-1]["child_faults_per_program"] > 0
    assert runs[-1]["runner_cpu_s"] > 0 and runs[-1]["child_cpu_s"] > 0


def test_the_programs_are_noted_as_they_start(hostile: tuple) -> None:
    # OUT.started: whoever runs the batch can tell, if the runner itself dies, which program it was
    # running (its row is missing) from a runner that never got to one.
    tmp = hostile[2]
    started = [json.loads(line) for line in (tmp / "out.jsonl.started").read_text().splitlines()]
    assert started == [j["program_id"] for j in HOSTILE_JOBS]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ malformed jobs


def test_malformed_job_lines_become_error_rows(tmp_path: Path) -> None:
    jobs = [
        call("ok", GOOD, input_text="1"),
        "this is not json",
        "[1, 2]",
        json.dumps({"source": "x = 1"}),
        json.dumps({"program_id": "typo", "source": "x = 1", "entry_point": "f"}),
        json.dumps({"program_id": "no-entry", "mode": "call", "source": "x = 1"}),
        json.dumps({"program_id": "both", "source": "x = 1", "file": "x.py"}),
        json.dumps({"program_id": "bad-timeout", "source": "x = 1", "timeout_s": -1}),
        json.dumps({"program_id": "bad-input", "source": GOOD, "entrypoint": "f", "input": "1,,"}),
        json.dumps({"program_id": "no-such-entry", "source": GOOD, "entrypoint": "g"}),
        json.dumps({"program_id": "missing-file", "file": "nope.py", "entrypoint": "f"}),
        "",
        b'{"program_id": "latin-1", "source": "x = \xe9"}',
        call("ok-after", GOOD, input_text="2"),
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 5})
    assert proc.returncode == 0, proc.stderr
    expect = {
        "jobs.jsonl:2": "not valid JSON",
        "jobs.jsonl:3": "not an object",
        "jobs.jsonl:4": "program_id",
        "typo": "unknown key(s) entry_point",
        "no-entry": "needs `entrypoint`",
        "both": "exactly one of `source`",
        "bad-timeout": "positive number",
        "bad-input": "invalid input text",
        "no-such-entry": "not defined",
        "missing-file": "cannot read program",
        "jobs.jsonl:13": "not valid UTF-8",
    }
    for pid, words in expect.items():
        assert rows[pid]["status"] == "error", rows[pid]
        assert words in rows[pid]["tracer_error"], rows[pid]["tracer_error"]
    assert rows["ok"]["status"] == rows["ok-after"]["status"] == "ok"
    assert len(rows) == len(expect) + 2


def test_parse_job_names_the_problem() -> None:
    with pytest.raises(JobError, match=r"line 7 \(p\): `argv` must be a list of strings") as info:
        parse_job(json.dumps({"program_id": "p", "source": "", "argv": "a b"}), 7)
    assert info.value.program_id == "p"
    job = parse_job(
        json.dumps({"program_id": "p", "source": "def f(): pass", "entrypoint": "f"}), 1
    )
    assert job.mode == "call" and job.input == ""
    assert (
        parse_job(json.dumps({"program_id": "s", "file": "a.py", "timeout_s": 2}), 1).mode
        == "script"
    )
    assert parse_job(json.dumps({"program_id": "t", "mode": "pytest", "file": "tests", "cwd": "/p"}), 1).cwd == "/p"
    with pytest.raises(JobError, match="`cwd` is a non-empty folder, for `pytest` jobs only"):
        parse_job(json.dumps({"program_id": "c", "file": "a.py", "cwd": "/p"}), 1)
    pytest_job = {"program_id": "t", "mode": "pytest", "file": "tests", "test_timeout_s": 30}
    assert parse_job(json.dumps(pytest_job), 1).test_timeout_s == 30.0
    with pytest.raises(JobError, match="`test_timeout_s` must be a positive number, got 0"):
        parse_job(json.dumps({**pytest_job, "test_timeout_s": 0}), 1)
    with pytest.raises(JobError, match="`test_timeout_s` is for `pytest` jobs only"):
        parse_job(json.dumps({"program_id": "s", "file": "a.py", "test_timeout_s": 2}), 1)
    with pytest.raises(JobError, match="unknown key"):  # the runner's own, not a job's
        parse_job(json.dumps({**pytest_job, "skip_tests": ["tests/test_a.py::test_a"]}), 1)


def test_missing_jobs_file_or_output_folder_is_a_usage_error(tmp_path: Path) -> None:
    def run(jobs: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            batch_cmd(sys.executable, jobs, out, {}),
            env=batch_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    proc = run(tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    write_jobs(tmp_path / "jobs.jsonl", [call("a", GOOD, input_text="1")])
    proc = run(tmp_path / "jobs.jsonl", tmp_path / "no-such-folder" / "out.jsonl")
    assert proc.returncode == 2 and "cannot open the output" in proc.stderr


def test_jobs_from_files(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "prog.py").write_text(
        "from helper import double\n\ndef f(x):\n    return double(x)\n"
    )
    (tmp_path / "script.py").write_text("import sys\nprint(sys.argv)\n")
    jobs = [
        {"program_id": "call", "file": "prog.py", "entrypoint": "f", "input": "21"},
        {"program_id": "script", "file": "script.py", "argv": ["x"]},
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10})
    assert proc.returncode == 0, proc.stderr
    assert rows["call"]["return_value"] == "42"
    assert {e["function"] for e in rows["call"]["events"]} == {"f", "double"}
    assert rows["script"]["stdout"] == "['script.py', 'x']\n"


# ------------------------------------------------------------------ modules (a script's own folder)

MAIN_WITH_MODULES = textwrap.dedent(
    """\
    import os, sys
    from helper import double
    import pkg.sub
    print(double(21), pkg.sub.VALUE)
    print(os.path.basename(__file__), sys.path[0] == os.path.dirname(__file__), __file__)
    """
)
MODULES = {
    "helper.py": "def double(x):\n    y = x * 2\n    return y\n",
    "pkg/__init__.py": "",
    "pkg/sub.py": "from . import _priv\nVALUE = _priv.V + 1\n",
    "pkg/_priv.py": "V = 6\n",
}


def modules_jobs() -> list:
    return [
        {"program_id": "main", "source": MAIN_WITH_MODULES, "modules": MODULES},
        {"program_id": "without", "source": "from helper import double\n"},
        {"program_id": "abs", "source": "x = 1\n", "modules": {"/tmp/helper.py": "x = 1\n"}},
        {"program_id": "up", "source": "x = 1\n", "modules": {"../helper.py": "x = 1\n"}},
        {"program_id": "nonstr", "source": "x = 1\n", "modules": {"helper.py": 1}},
    ]


@pytest.mark.parametrize("version", [None, "3.8", "3.13", "3.15"])
def test_a_script_job_runs_next_to_its_modules(tmp_path: Path, version: str | None) -> None:
    """A harvested folder's `main.py` doing `from helper import double` failed with
    ModuleNotFoundError: only its own source travelled. A job's `modules` are written next to the
    script, which runs under its own name from that folder, as `python folder/main.py` does."""
    python = sys.executable if version is None else interpreter(version)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rows, proc = run_batch_process(tmp_path, modules_jobs(), {"timeout_s": 10}, python=python, scratch=[str(scratch)])
    assert proc.returncode == 0, proc.stderr
    main = rows["main"]
    assert main["status"] == "ok", main
    folder = scratch / "program"
    # as `cd FOLDER && python main.py` has them; before 3.9, `__file__` is the name as given
    shown = ("main.py False main.py" if version == "3.8" else f"main.py True {folder / 'main.py'}")
    assert main["stdout"] == f"42 7\n{shown}\n"
    assert not folder.exists()  # the folder goes with the program
    files = {e["file"] for e in main["events"]}  # relative: the same on every run, wherever it ran
    assert files == {"main.py", "helper.py", "pkg/__init__.py", "pkg/sub.py", "pkg/_priv.py"}
    double = [e for e in main["events"] if e["function"] == "double"]
    assert [(e["kind"], e["lineno"], e["source"]) for e in double] == [
        ("call", 1, "def double(x):"), ("line", 2, "    y = x * 2"), ("line", 3, "    return y"),
        ("return", 3, "    return y"),
    ]
    assert double[0]["locals"] == {"x": "21"} and double[-1]["arg"] == "42"
    without = rows["without"]  # a job without modules runs as before
    assert without["exception_type"] == "ModuleNotFoundError"
    assert {e["file"] for e in without["events"]} == {"program_without.py"}
    for pid, words in {"abs": "must be relative", "up": "`..` parts", "nonstr": "must be source text"}.items():
        assert rows[pid]["status"] == "error" and words in rows[pid]["tracer_error"], rows[pid]


# A student's folder: its own `random.py` and `json.py` next to the script. `python main.py`
# imports them (the script's folder comes first on sys.path); only what a new interpreter loads at
# start-up (`os`) stays the standard library's. The runner had loaded json and random before, and
# the program got those instead.
SHADOWING_MAIN = textwrap.dedent(
    """\
    import random, json, os
    print(random.choice([1, 2, 3]), json.dumps({}), os.sep)
    print(json.__file__.endswith("json.py"), os.__file__ != __file__.replace("main.py", "os.py"))
    """
)
SHADOWING_MODULES = {
    "random.py": "def choice(xs):\n    return 'mine'\n",
    "json.py": "def dumps(obj):\n    return 'my json'\n",
    "os.py": "sep = 'never imported'\n",
}


@pytest.mark.parametrize("version", [None, "3.8", "3.13", "3.15"])
def test_a_folder_module_named_like_a_loaded_one_is_imported_as_python_would(
    tmp_path: Path, version: str | None
) -> None:
    python = sys.executable if version is None else interpreter(version)
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "main.py").write_text(SHADOWING_MAIN)
    for name, text in SHADOWING_MODULES.items():
        (folder / name).write_text(text)
    untraced = subprocess.run([python, "main.py"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert untraced.returncode == 0, untraced.stderr
    assert untraced.stdout == "mine my json /\nTrue True\n", untraced.stdout  # what python does
    jobs = [{"program_id": "main", "source": SHADOWING_MAIN, "modules": SHADOWING_MODULES}]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, python=python, scratch=[str(scratch)])
    assert proc.returncode == 0, proc.stderr
    assert rows["main"]["status"] == "ok", rows["main"]
    assert rows["main"]["stdout"] == untraced.stdout
    assert {"random.py", "json.py"} <= {e["file"] for e in rows["main"]["events"]}


# A programming contest's solution: it reads its test on stdin, by every means Python has.
STDIN_SCRIPT = textwrap.dedent(
    """\
    import os, sys
    n = int(input())
    xs = [int(x) for x in sys.stdin.readline().split()]
    rest = sys.stdin.read()
    print(n, sum(xs[:n]), len(rest), sys.stdin.seekable(), os.fstat(0).st_size, os.read(0, 5))
    sys.stdin.seek(0)
    print(repr(sys.stdin.readline()))
    """
)


@pytest.mark.parametrize("version", [None, "3.8", "3.13", "3.15"])
def test_a_script_job_reads_its_stdin_as_python_reads_a_redirected_file(tmp_path: Path, version: str | None) -> None:
    """A script job could only read /dev/null: a contest solution's `input()` raised EOFError."""
    python = sys.executable if version is None else interpreter(version)
    stdin = "3\n4 9 2 7\n" + "é" * 100_000  # past a pipe's buffer, not ASCII
    (tmp_path / "solution.py").write_text(STDIN_SCRIPT)
    (tmp_path / "test.in").write_text(stdin, encoding="utf-8")
    # `python solution.py < test.in`, the redirection made by the interpreter's own process (an
    # interpreter of an image runs behind `docker run -i`, whose stdin is a pipe).
    redirect = "import os, sys; os.dup2(os.open('test.in', os.O_RDONLY), 0); os.execv(sys.executable, [sys.executable, 'solution.py'])"
    untraced = subprocess.run([python, "-c", redirect], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert untraced.returncode == 0, untraced.stderr
    assert untraced.stdout.startswith("3 15 100000 True 200010 b''\n'3\\n'"), untraced.stdout
    jobs = [
        {"program_id": "solution", "source": STDIN_SCRIPT, "stdin": stdin},
        {"program_id": "no-stdin", "source": STDIN_SCRIPT},
        {"program_id": "slow", "source": "import time\ntime.sleep(30)\n", "stdin": "1\n", "timeout_s": 0.5},
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, python=python)
    assert proc.returncode == 0, proc.stderr
    assert rows["solution"]["status"] == "ok", rows["solution"]
    assert rows["solution"]["stdout"] == untraced.stdout
    assert rows["solution"]["input"] == stdin  # the trace says what the program was given
    assert rows["no-stdin"]["exception_type"] == "EOFError" and rows["no-stdin"]["input"] is None
    assert (rows["slow"]["status"], rows["slow"]["input"]) == ("timeout", "1\n")


def test_stdin_is_for_script_jobs_and_text() -> None:
    from tracer._batch_jobs import MAX_STDIN_BYTES, JobError, parse_job

    job = parse_job(json.dumps({"program_id": "s", "source": "input()", "stdin": "x\n"}), 1)
    assert (job.stdin, job.trace_input) == ("x\n", "x\n")
    for raw, words in [
        ({"program_id": "c", "source": "def f(): pass", "entrypoint": "f", "stdin": "x"}, "`stdin` is for `script` jobs"),
        ({"program_id": "n", "source": "input()", "stdin": 3}, "`stdin` must be a string, got 3"),
        ({"program_id": "b", "source": "input()", "stdin": "é" * (MAX_STDIN_BYTES // 2 + 1)}, "longer than"),
    ]:
        with pytest.raises(JobError, match=words):
            parse_job(json.dumps(raw), 1)


def test_a_script_job_with_modules_traces_the_same_wherever_its_folder_is(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "bb"):
        scratch = tmp_path / name / "scratch"
        scratch.mkdir(parents=True)
        rows, proc = run_batch_process(tmp_path / name, modules_jobs()[:1], {"timeout_s": 10}, scratch=[str(scratch)])
        assert proc.returncode == 0, proc.stderr
        assert rows["main"]["status"] == "ok", rows["main"]
        runs.append(rows["main"]["events"])
    assert runs[0] == runs[1]


def test_parse_job_checks_modules() -> None:
    job = {"program_id": "main", "source": "import b\n"}
    parsed = parse_job(json.dumps({**job, "modules": {"b.py": "x = 1\n", "a/__init__.py": ""}}), 1)
    assert parsed.modules == (("a/__init__.py", ""), ("b.py", "x = 1\n"))
    assert parse_job(json.dumps(job), 1).modules == ()
    bad = {
        "must be an object": ["b.py"],
        "must be relative": {"/etc/b.py": ""},
        "`..` parts": {"a/../../b.py": ""},
        "empty, `.` or `..` parts": {"a//b.py": ""},
        "no NUL": {"b\0.py": ""},
        "of a .py file": {"b.txt": ""},
        "must be source text \\(a string\\), got null": {"b.py": None},
        "not text": {"b.py": "\ud800"},
        "must not hold the script itself \\(main.py": {"main.py": ""},
    }
    for words, modules in bad.items():
        with pytest.raises(JobError, match=words):
            parse_job(json.dumps({**job, "modules": modules}), 1)
    with pytest.raises(JobError, match="`modules` is for `script` jobs given as `source`"):
        parse_job(json.dumps({"program_id": "c", "source": "", "entrypoint": "f", "modules": {"b.py": ""}}), 1)
    with pytest.raises(JobError, match="`modules` is for `script` jobs given as `source`"):
        parse_job(json.dumps({"program_id": "c", "file": "c.py", "modules": {"b.py": ""}}), 1)


# ------------------------------------------------------------------ files (a script's data files)

# A course folder's script: it reads the files next to it by relative names, writes one and reads
# it back, and says where it runs.
MAIN_WITH_FILES = textwrap.dedent(
    """\
    import os, sys
    from pathlib import Path
    with open("input.txt") as f:
        print(sum(int(x) for x in f.read().split()))
    print(Path("data/words.json").read_text(encoding="utf-8").strip())
    with open(os.path.join(os.path.dirname(__file__), "data", "notes.txt")) as f:
        print(f.read().strip())
    with open("pic.bin", "rb") as f:
        print(f.read())
    with open("out.txt", "w") as f:
        f.write("written")
    print(open("out.txt").read(), sorted(os.listdir(".")))
    print(os.getcwd(), __file__, sys.path[0], sys.argv)
    """
)
FILES = {"input.txt": "3 4\n5\n", "data/words.json": '["é", "ß"]\n', "data/notes.txt": "notes\r\n"}
PIC = b"\x89PNG\r\n\x1a\n\x00\xff"


@pytest.mark.parametrize("version", [None, "3.8", "3.13", "3.15"])
def test_a_script_job_reads_its_data_files_as_cd_folder_python_runs_it(tmp_path: Path, version: str | None) -> None:
    """A harvested folder's `main.py` doing `open("input.txt")` ended in FileNotFoundError: only
    its code travelled, and it ran in the runner's working directory. A job's `files` are written
    next to the script, which runs in that folder: its output equals `cd FOLDER && python main.py`'s,
    run in the very folder the runner uses (so that the paths it prints are the same too)."""
    import base64

    python = sys.executable if version is None else interpreter(version)
    scratch = tmp_path / "scratch"
    folder = scratch / "program"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(MAIN_WITH_FILES, encoding="utf-8")
    for name, text in FILES.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(text.encode("utf-8"))
    (folder / "pic.bin").write_bytes(PIC)
    untraced = subprocess.run([python, "main.py", "x"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert untraced.returncode == 0, untraced.stderr
    assert untraced.stdout.startswith('12\n["é", "ß"]\nnotes\n' + repr(PIC) + "\nwritten ['data', 'input.txt'")
    for path in sorted(folder.rglob("*"), reverse=True):  # the runner makes the folder itself
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    pic = {"base64": base64.b64encode(PIC).decode("ascii")}
    jobs = [
        {"program_id": "main", "source": MAIN_WITH_FILES, "argv": ["x"], "files": {**FILES, "pic.bin": pic}},
        {"program_id": "without", "source": "open('input.txt')\n"},  # no files: as before
        {"program_id": "modules", "source": "import os, helper\nprint(os.getcwd())\n", "modules": {"helper.py": ""}},
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, python=python, scratch=[str(scratch)])
    assert proc.returncode == 0, proc.stderr
    main = rows["main"]
    assert main["status"] == "ok", main
    assert main["stdout"] == untraced.stdout
    assert {e["file"] for e in main["events"]} == {"main.py"}
    assert not folder.exists() and not (tmp_path / "out.txt").exists()  # written in its folder, gone with it
    assert rows["without"]["exception_type"] == "FileNotFoundError"
    # a script with modules only runs in its folder too, as `cd FOLDER && python main.py`
    assert rows["modules"]["stdout"] == f"{os.path.realpath(folder)}\n", rows["modules"]


def test_parse_job_checks_files() -> None:
    job = {"program_id": "main", "source": "open('a.txt')\n"}
    parsed = parse_job(json.dumps({**job, "files": {"b/c.csv": "x,y\n", "a.txt": "é", "p.bin": {"base64": "AP8="}}}), 1)
    assert parsed.files == (("a.txt", "é".encode()), ("b/c.csv", b"x,y\n"), ("p.bin", b"\x00\xff"))
    assert parse_job(json.dumps(job), 1).files == ()
    bad = {
        "`files` must be an object": ["a.txt"],
        "must be relative, not absolute": {"/etc/passwd": ""},
        "`..` parts": {"../a.txt": ""},
        "empty, `.` or `..` parts": {"./a.txt": ""},
        "no NUL, no backslash": {"a\\b.txt": ""},
        "must be text \\(a string\\), \\{\"base64\": TEXT\\} or \\{\"blob\": SHA256\\}, got null": {"a.txt": None},
        "got \\{\"base64\": \"AA==\", \"x\": 1\\}": {"a.txt": {"base64": "AA==", "x": 1}},
        "`base64` is not base64": {"a.txt": {"base64": "A*A="}},
        "not text \\(a lone surrogate": {"a.txt": "\ud800"},
        "`files` path \"main.py\" is also the script's own name": {"main.py": ""},
        "`files` path \"h.py\" is also a path of `modules`": {"h.py": ""},
        "\"h.py/x.txt\" is inside \"h.py\", which is a file there \\(a path of `modules`\\)": {"h.py/x.txt": ""},
        "\"a/b.txt\" is inside \"a\", which is a file there \\(a path of `files`\\)": {"a": "", "a/b.txt": ""},
        "\"main.py/x\" is inside \"main.py\", which is a file there \\(the script's own name": {"main.py/x": ""},
    }
    for words, files in bad.items():
        with pytest.raises(JobError, match=words):
            parse_job(json.dumps({**job, "modules": {"h.py": ""}, "files": files}), 1)
    with pytest.raises(JobError, match="`files` is for `script` jobs given as `source`"):
        parse_job(json.dumps({"program_id": "c", "source": "", "entrypoint": "f", "files": {"a.txt": ""}}), 1)
    with pytest.raises(JobError, match="`files` is for `script` jobs given as `source`"):
        parse_job(json.dumps({"program_id": "c", "file": "c.py", "files": {"a.txt": ""}}), 1)


SHARED = "word,count\n" + "".join(f"w{i},{i}\n" for i in range(200))
SHARED_DIGEST = hashlib.sha256(SHARED.encode()).hexdigest()
READS_SHARED = "import helper\nrows = open('table.csv').read().splitlines()\nprint(len(rows), rows[-1], helper.N)\n"


def blob_line(content: bytes, digest: str | None = None) -> dict:
    return {"blob": digest or hashlib.sha256(content).hexdigest(), "base64": base64.b64encode(content).decode()}


@pytest.mark.parametrize("version", [None, "3.8"])
def test_a_content_many_jobs_carry_is_in_the_jobs_file_once(tmp_path: Path, version: str | None) -> None:
    """A folder's data file that every one of its scripts reads was copied into each script's job:
    400 scripts reading one 1 MiB file made a 400 MiB jobs file. A blob line defines the content
    once; the jobs name it by its SHA-256, and trace exactly as with their own copies. A job that
    names a blob no line before it defines, or one whose line is refused, is an `error` row that
    says so; a blob line is no row."""
    python = sys.executable if version is None else interpreter(version)
    helper = f"N = {len(SHARED)}\n" + "# padding\n" * 60
    helper_ref = {"blob": hashlib.sha256(helper.encode()).hexdigest()}
    wrong = hashlib.sha256(b"other").hexdigest()
    jobs = [
        {"program_id": "early", "source": READS_SHARED, "modules": {"helper.py": helper}, "files": {"table.csv": {"blob": SHARED_DIGEST}}},
        blob_line(SHARED.encode()),
        blob_line(helper.encode()),
        {"program_id": "a", "source": READS_SHARED, "modules": {"helper.py": helper_ref}, "files": {"table.csv": {"blob": SHARED_DIGEST}}},
        {"program_id": "b", "source": READS_SHARED, "modules": {"helper.py": helper_ref}, "files": {"table.csv": {"blob": SHARED_DIGEST}}},
        {"program_id": "copy", "source": READS_SHARED, "modules": {"helper.py": helper}, "files": {"table.csv": SHARED}},
        blob_line(b"not the content it names", digest=wrong),
        {"program_id": "refused", "source": "print(1)\n", "files": {"x.txt": {"blob": wrong}}},
        blob_line(b"\xff\xfe"),
        {"program_id": "binary-module", "source": "import m\n", "modules": {"m.py": {"blob": hashlib.sha256(b"\xff\xfe").hexdigest()}}},
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, python=python, scratch=[str(tmp_path / "scratch")])
    assert proc.returncode == 0, proc.stderr
    assert list(rows) == ["early", "a", "b", "copy", "refused", "binary-module"]  # no row for a blob line
    assert rows["early"]["status"] == "error"
    assert f"`files` \"table.csv\" names blob {SHARED_DIGEST}: no blob line before this job defines it" in rows["early"]["tracer_error"]
    expected = f"201 w199,199 {len(SHARED)}\n"
    for pid in ("a", "b", "copy"):
        assert rows[pid]["status"] == "ok" and rows[pid]["stdout"] == expected, rows[pid]
    def events(pid: str) -> list:  # the script's file is named after its id: a.py, copy.py
        return [{**e, "file": e["file"].replace(f"{pid}.py", "SCRIPT.py")} for e in rows[pid]["events"]]

    assert events("a") == events("copy") and len(events("a")) > 5
    assert rows["refused"]["status"] == "error"
    assert "the blob line 7 that defines it is refused: its content's SHA-256 is" in rows["refused"]["tracer_error"]
    assert "`modules` \"m.py\" names a blob that is not UTF-8 text" in rows["binary-module"]["tracer_error"]

    # A re-run that skips the jobs already done still takes the blob lines the rest need.
    out = tmp_path / "out.jsonl"
    kept = [line for line in out.read_text(encoding="utf-8").splitlines() if json.loads(line)["program_id"] != "b"]
    out.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    proc = subprocess.run(batch_cmd(python, tmp_path / "jobs.jsonl", out, {"timeout_s": 10}, scratch=[str(tmp_path / "scratch")]),
                          cwd=tmp_path, env=batch_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    again = read_rows(out)
    assert again["b"]["status"] == "ok" and again["b"]["stdout"] == expected


def test_parse_job_takes_blob_lines() -> None:
    blobs = Blobs()
    assert parse_job(json.dumps(blob_line(SHARED.encode())), 3, blobs) is None
    job = {"program_id": "m", "source": "", "files": {"t.csv": {"blob": SHARED_DIGEST}}}
    assert parse_job(json.dumps(job), 4, blobs).files == (("t.csv", SHARED.encode()),)
    assert parse_job(json.dumps({"blob": "not a digest", "base64": ""}), 5, blobs) is None  # defines nothing
    refused = {
        "unknown key\\(s\\) text \\(a blob line has `blob` and `base64`\\)": {**blob_line(b"x"), "text": "x"},
        "its `base64` is not base64 text": {"blob": hashlib.sha256(b"x").hexdigest(), "base64": "A*A="},
    }
    for words, line in refused.items():
        fresh = Blobs()
        assert parse_job(json.dumps(line), 9, fresh) is None
        with pytest.raises(JobError, match="names blob .*: the blob line 9 that defines it is refused: " + words):
            parse_job(json.dumps({**job, "files": {"t.csv": {"blob": line["blob"]}}}), 10, fresh)
    # a digest that no line defines
    with pytest.raises(JobError, match="no blob line before this job defines it"):
        parse_job(json.dumps({**job, "files": {"t.csv": {"blob": "0" * 64}}}), 11, blobs)


# ------------------------------------------------------------------ resume


def test_writer_cuts_a_partial_last_line_and_knows_what_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(encode_line({"program_id": "a"}) + b'{"program_id": "b", "sta')
    writer = TraceWriter(str(out))
    writer.write({"program_id": "c", "text": "lone \udc80 surrogate"})
    writer.close()
    assert writer.done == {"a", "c"} and writer.cut_bytes > 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["program_id"] for line in lines] == ["a", "c"]
    assert json.loads(lines[1])["text"] == "lone \\x80 surrogate"


def test_resume_after_sigkill_has_every_program_once(tmp_path: Path) -> None:
    n = 40
    jobs = [
        call(
            f"p{i:02d}",
            "import time\ndef f(x):\n    time.sleep(0.03)\n    return x\n",
            input_text=str(i),
        )
        for i in range(n)
    ]
    jobs_path, out = tmp_path / "jobs.jsonl", tmp_path / "out.jsonl"
    write_jobs(jobs_path, jobs)
    cmd = batch_cmd(sys.executable, jobs_path, out, {"timeout_s": 10})
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=batch_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _count_lines(out) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition, bounded by the deadline
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = _count_lines(out)
    assert 10 <= first < n, f"the batch should have been killed part-way ({first} lines)"
    started = [json.loads(line) for line in Path(f"{out}.started").read_text().splitlines() if line]
    ids = [job["program_id"] for job in jobs]
    # Killed while it ran the first program without a row, or just before it started that one.
    assert started[:first] == ids[:first] and started[-1] in ids[first - 1 : first + 1]
    with out.open("ab") as f:  # what a write interrupted mid-line leaves behind
        f.write(b'{"program_id": "p%02d", "status": "o' % first)
    rerun = subprocess.run(
        cmd, cwd=tmp_path, env=batch_env(), capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    rows = read_rows(out)  # asserts no duplicates
    assert sorted(rows) == [f"p{i:02d}" for i in range(n)]
    assert all(
        r["status"] == "ok" and r["return_value"] == str(int(r["program_id"][1:]))
        for r in rows.values()
    )
    assert "cut off a partial last line" in rerun.stderr
    # A third run has nothing left to do.
    again = subprocess.run(
        cmd, cwd=tmp_path, env=batch_env(), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and f"0 run, {n} skipped" in again.stderr
    assert len(read_rows(out)) == n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_runner_leaves_no_program_behind(tmp_path: Path, sig: int) -> None:
    sleeper = """
        import os, time
        def f():
            with open("child.pid", "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(600)
        """
    jobs_path, out = tmp_path / "jobs.jsonl", tmp_path / "out.jsonl"
    write_jobs(jobs_path, [call("done", GOOD, input_text="1"), call("sleeper", sleeper)])
    cmd = batch_cmd(sys.executable, jobs_path, out, {"timeout_s": 600})
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=batch_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        pid_file = tmp_path / "child.pid"
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)  # polling a condition, bounded by the deadline
        child = int(pid_file.read_text())
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)  # the kernel delivers the parent-death signal asynchronously
    assert not _alive(child), f"program {child} outlived its runner ({signal.Signals(sig).name})"
    assert list(read_rows(out)) == ["done"]  # the interrupted program is redone on resume
    if sig == signal.SIGTERM:  # a clean stop: the runner killed its child and exited 128 + 15
        assert proc.returncode == 143


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------ fork bomb (needs a pids cgroup)


# controller -> (cgroup v2 file, cgroup v1 file) of its limit
CGROUP_LIMITS = {
    "pids": ("pids.max", "pids.max"),
    "memory": ("memory.max", "memory.limit_in_bytes"),
}


def make_cgroup(controller: str, limit: str) -> Path | None:
    """A fresh cgroup (v2, else v1) with `controller` limited to `limit`, or None where we cannot."""
    v2_file, v1_file = CGROUP_LIMITS[controller]
    name = f"worldtrace-test-{controller}-{os.getpid()}"
    for group, limit_file in (
        (Path("/sys/fs/cgroup") / name, v2_file),
        (Path("/sys/fs/cgroup") / controller / name, v1_file),
    ):
        if not group.parent.is_dir() or not (group.parent / "cgroup.procs").exists():
            continue
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / limit_file).write_text(limit)
        except OSError:
            group.rmdir()
            continue
        if controller == "memory":  # no swapping around the limit where the host has swap
            for name, value in (("memory.swap.max", "0"), ("memory.memsw.limit_in_bytes", limit)):
                try:
                    (group / name).write_text(value)
                except OSError:
                    pass
        return group
    return None


def run_in_cgroup(group: Path, tmp: Path, jobs: list, limits: dict) -> dict:
    """Run a batch whose runner (and so every program) lives in `group`; return its rows."""
    jobs_path, out = tmp / "jobs.jsonl", tmp / "out.jsonl"
    write_jobs(jobs_path, jobs)
    cmd = batch_cmd(sys.executable, jobs_path, out, limits)
    shell = f'echo $$ > "{group}/cgroup.procs" || exit 77; exec "$@"'
    try:
        proc = subprocess.run(["sh", "-c", shell, "sh", *cmd], cwd=tmp, env=batch_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        _remove_cgroup(group)
    if proc.returncode == 77:
        pytest.skip(f"cannot move a process into {group}: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return read_rows(out)


def test_fork_bomb_is_contained(tmp_path: Path) -> None:
    group = make_cgroup("pids", "100")
    if group is None:
        pytest.skip("cannot create a pids cgroup here (RLIMIT_NPROC does not bind root)")
    bomb = """
        import os
        def f():
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        """
    jobs = [
        call("before", GOOD, input_text="1"),
        call("fork-bomb", bomb),
        call("after", GOOD, input_text="2"),
    ]
    rows = run_in_cgroup(group, tmp_path, jobs, {"timeout_s": 1.0})
    assert rows["fork-bomb"]["status"] == "timeout"
    assert rows["before"]["return_value"] == "2" and rows["after"]["return_value"] == "4"


def test_oom_kill_by_the_cgroup_is_memory(tmp_path: Path) -> None:
    group = make_cgroup("memory", str(150 << 20))
    if group is None:
        pytest.skip("cannot create a memory cgroup here")
    hog = "def f():\n    data = bytearray(400 << 20)\n    return len(data)\n"
    jobs = [
        call("before", GOOD, input_text="1"),
        call("hog", hog),
        call("after", GOOD, input_text="2"),
    ]
    rows = run_in_cgroup(group, tmp_path, jobs, {"timeout_s": 20})  # no RLIMIT_AS: the cgroup kills
    assert rows["hog"]["status"] == "memory", rows["hog"]
    assert "out-of-memory killer" in rows["hog"]["exception_message"]
    assert rows["before"]["return_value"] == "2" and rows["after"]["return_value"] == "4"


def _remove_cgroup(group: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.05)  # the killed processes are still being released


# ------------------------------------------------------------------ other interpreters, cost


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.8", "3.13", "3.15"])
def test_batch_on_oldest_and_newest_python(tmp_path: Path, version: str) -> None:
    python = interpreter(version)
    jobs = [
        call("good", GOOD, input_text="5"),
        # Only the endless loop gets a short deadline: under load a good program on the
        # oldest interpreter can take longer than half a second.
        call("loop", "def f():\n    while True:\n        pass\n", timeout_s=0.5),
        call("exit", "import os\ndef f():\n    os._exit(4)\n"),
        call("segv", "import ctypes\ndef f():\n    return ctypes.string_at(0)\n"),
        call("mem", "def f():\n    return bytearray(1 << 30)\n"),
        call("exc", "def f():\n    return 1 / 0\n"),
        "{oops",
        call(
            "flood",
            "import os\ndef f():\n    os.write(1, b'z' * 300000)\n    print('p' * 300000)\n",
        ),
        call(
            "forks",
            "import os\ndef f():\n    pid = os.fork()\n    if pid:\n        os.waitpid(pid, 0)\n    return pid > 0\n",
        ),
        call("good2", GOOD, input_text="6"),
    ]
    by_id = {job["program_id"]: job for job in HOSTILE_JOBS}
    tracer_off = [
        by_id["settrace-off"],
        by_id["monitoring-off"],
        call("good3", GOOD, input_text="7"),
    ]
    rows, proc = run_batch_process(
        tmp_path,
        jobs + tracer_off,
        {"timeout_s": 20, "memory_mb": 200, "max_output_bytes": 1000},
        python=python,
    )
    assert proc.returncode == 0, proc.stderr
    status = {pid: row["status"] for pid, row in rows.items()}
    assert status == {
        "good": "ok", "loop": "timeout", "exit": "crashed", "segv": "crashed", "mem": "memory",
        "exc": "exception", "jobs.jsonl:7": "error", "flood": "ok", "forks": "ok", "good2": "ok",
        "settrace-off": status["settrace-off"], "monitoring-off": status["monitoring-off"],
        "good3": "ok",
    }  # fmt: skip
    # Turning the tracer off from inside (sys.monitoring on 3.13) is recorded, and contained.
    assert status["settrace-off"] in ("ok", "error") and status["monitoring-off"] in ("ok", "error")
    assert rows["good3"]["return_value"] == "14" and rows["good3"]["n_events"] == 4
    assert rows["flood"]["stdout"] == "z" * 1000 and rows["flood"]["output_truncated"]
    assert rows["forks"]["return_value"] == "True"
    assert rows["good2"]["return_value"] == "12"
    assert rows["good"]["python_version"].startswith(version + ".")


def test_fork_cost_of_trivial_programs(tmp_path: Path) -> None:
    """Benchmark-ish: prints the per-program cost next to one interpreter start per program."""
    n = 200
    source = "def f(x):\n    return x + 1\n"
    jobs = [call(f"t{i:03d}", source, input_text=str(i)) for i in range(n)]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10})
    assert proc.returncode == 0 and len(rows) == n
    run = json.loads((tmp_path / "out.jsonl.runs.jsonl").read_text().splitlines()[-1])
    # The naive alternative, measured in the same run: a fresh interpreter per program.
    (tmp_path / "prog.py").write_text(source)
    k = 5
    started = time.perf_counter()
    for i in range(k):
        one = subprocess.run([sys.executable, "-m", "tracer", "call", "prog.py", "f", "--input", str(i)],
                             cwd=tmp_path, env=batch_env(), capture_output=True, timeout=60)  # fmt: skip
        assert one.returncode == 0, one.stderr
    per_start_ms = (time.perf_counter() - started) * 1000 / k
    per_fork_ms = 1000.0 / run["programs_per_s"]
    print(
        f"\nbatch of {n} trivial programs: {run['programs_per_s']:.0f} programs/s,"
        f" {per_fork_ms:.2f} ms wall and {run['cpu_ms_per_program']:.2f} ms CPU per program"
        f" (runner {run['runner_cpu_ms_per_program']:.2f}, child {run['child_cpu_ms_per_program']:.2f}),"
        f" median fork() {run['median_fork_ms']:.3f} ms;"
        f" one interpreter start per program: {per_start_ms:.1f} ms"
        f" ({per_start_ms / per_fork_ms:.1f}x the forked batch)"
    )


def test_cruxeval_through_the_batch(tmp_path: Path, cruxeval: list) -> None:
    """Real programs through the runner: every return value as the corpus expects it."""
    import ast

    from tracer.render import Renderer

    rows_in = cruxeval[:200]
    jobs = [
        {"program_id": r["id"], "source": r["code"], "entrypoint": "f", "input": r["input"]}
        for r in rows_in
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10, "max_events": 10_000})
    assert proc.returncode == 0, proc.stderr
    renderer = Renderer()
    wrong = []
    for r in rows_in:
        row = rows[r["id"]]
        expected = renderer.render(ast.literal_eval(r["output"]))
        if row["status"] != "ok" or row["return_value"] != expected:
            wrong.append((r["id"], row["status"], row["return_value"], expected))
    assert not wrong, wrong[:5]
    run = json.loads((tmp_path / "out.jsonl.runs.jsonl").read_text().splitlines()[-1])
    print(
        f"\nCRUXEval, {len(rows_in)} programs through one batch: {run['programs_per_s']:.0f}"
        f" programs/s, {run['cpu_ms_per_program']:.2f} ms CPU per program"
    )


def test_scratch_directories_are_emptied_before_each_program(tmp_path: Path) -> None:
    # `--scratch DIR` (the sandboxes pass their /tmp and /dev/shm): what one program leaves there,
    # even in a directory it locked, is gone before the next program starts; links are removed,
    # never followed.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (scratch / "from-before-the-batch").write_text("x")
    leaves = """
        import os
        def f(d, outside):
            open(os.path.join(d, 'left'), 'w').write('x')
            os.makedirs(os.path.join(d, 'locked', 'inner'))
            open(os.path.join(d, 'locked', 'inner', 'f'), 'w').write('x')
            os.chmod(os.path.join(d, 'locked', 'inner'), 0)
            os.chmod(os.path.join(d, 'locked'), 0)
            os.symlink(outside, os.path.join(d, 'link'))
            os.symlink(os.path.dirname(outside), os.path.join(d, 'dirlink'))
            return sorted(os.listdir(d))
        """
    sees = "import os\ndef f(d):\n    return sorted(os.listdir(d))\n"
    args = f"{str(scratch)!r}, {str(outside)!r}"
    jobs = [call("sees-0", sees, input_text=repr(str(scratch))), call("leaves", leaves, input_text=args),
            call("sees-1", sees, input_text=repr(str(scratch)))]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, scratch=[str(scratch)])
    assert proc.returncode == 0, proc.stderr
    assert rows["sees-0"]["return_value"] == "[]"
    assert rows["leaves"]["return_value"] == "['dirlink', 'left', 'link', 'locked']"
    assert rows["sees-1"]["return_value"] == "[]"
    assert outside.read_text() == "keep" and scratch.is_dir() and list(scratch.iterdir()) == []


def _landlock_abi() -> int:
    from tracer._landlock import landlock_abi

    return landlock_abi()[0]


@pytest.mark.skipif(_landlock_abi() == 0, reason="the kernel has no Landlock (Linux >= 5.13)")
def test_confined_programs_write_only_in_scratch_and_cannot_signal_the_runner(tmp_path: Path) -> None:
    scratch, elsewhere = tmp_path / "scratch", tmp_path / "elsewhere"
    scratch.mkdir()
    elsewhere.mkdir()
    writes = """
        import os, subprocess
        def f(d):
            with open(os.path.join(d, 'x'), 'w') as fh:
                fh.write('x')
            os.mkdir(os.path.join(d, 'sub'))
            with open(os.devnull, 'w') as fh:
                fh.write('x')
            subprocess.run(['true'], stdout=subprocess.DEVNULL, check=True)
            return sorted(os.listdir(d))
        """
    outside = "def f(d):\n    with open(d + '/x', 'w') as fh:\n        fh.write('x')\n"
    kills = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n"
    jobs = [
        call("writes", writes, input_text=repr(str(scratch))),
        call("writes-elsewhere", outside, input_text=repr(str(elsewhere))),
        call("kills-its-parent", kills),
        call("good", GOOD, input_text="4"),
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 10}, scratch=[str(scratch)], confine=True)
    assert proc.returncode == 0, proc.stderr
    assert rows["writes"]["return_value"] == "['sub', 'x']", rows["writes"]
    assert rows["writes-elsewhere"]["exception_type"] == "PermissionError" and list(elsewhere.iterdir()) == []
    if _landlock_abi() >= 6:  # signal scoping
        row = rows["kills-its-parent"]
        assert (row["status"], row["exception_type"]) == ("exception", "PermissionError"), row
    assert rows["good"]["return_value"] == "8"
    record = json.loads((tmp_path / "out.jsonl.runs.jsonl").read_text().splitlines()[-1])
    assert record["confinement"]["landlock_abi"] == _landlock_abi()
    assert record["confinement"]["writable"][0] == str(scratch)


# The runner reads the fork server's "forked" frame late (descheduled on a loaded machine): by
# then the child has ended and its "ended" frame came in the same read.
LATE_READER = textwrap.dedent(
    """
    import socket, sys, time
    from tracer import _batch_zygote
    from tracer.api import Limits
    from tracer.batch import run_batch

    wait_for = _batch_zygote.Zygote.wait_for

    def late_wait_for(self, kind, pid=0, timeout=60.0):
        if kind == b"F":  # wait until the child's end is in the socket too
            size, deadline = 2 * _batch_zygote.FRAME.size, time.monotonic() + 30
            while len(self.sock.recv(size, socket.MSG_PEEK)) < size and time.monotonic() < deadline:
                time.sleep(0.001)
        return wait_for(self, kind, pid, timeout)

    _batch_zygote.Zygote.wait_for = late_wait_for
    sys.exit(run_batch(sys.argv[1], sys.argv[2], limits=Limits(timeout_s=1)))
    """
)


def test_a_child_whose_end_comes_with_its_fork_report_is_not_lost(tmp_path: Path) -> None:
    # Was: the frames read with the fork report were dropped, so the runner waited for an end
    # already reported: the job became a timeout, and the fork server was restarted 30 s later.
    jobs = [call("exits-at-once", "import os\nos._exit(3)\n"), call("good", GOOD, input_text="4")]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    proc = subprocess.run(
        [sys.executable, "-c", LATE_READER, "jobs.jsonl", "out.jsonl"],
        cwd=tmp_path, env=batch_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "out.jsonl")
    assert rows["exits-at-once"]["status"] == "crashed", rows["exits-at-once"]
    assert "exited with code 3" in rows["exits-at-once"]["exception_message"]
    assert rows["good"]["return_value"] == "8"
    assert "restarting it" not in proc.stderr


def test_std_streams_are_those_of_a_child_whatever_the_runners_fds_are(tmp_path: Path) -> None:
    # The fork server makes the children's std streams ahead of the forks; an io object asks its
    # fd what it is when it is made, so they must be made over what a child has (/dev/null,
    # pipes), not over the runner's own fds (here a regular file: seekable).
    probe = """
        import sys
        def f():
            print("out")
            return [(s.seekable(), s.isatty(), s.tell() if s.seekable() else None)
                    for s in (sys.stdin, sys.stdout, sys.stderr)]
        """
    write_jobs(tmp_path / "jobs.jsonl", [call(f"probe-{i}", probe) for i in range(2)])
    cfg = json.dumps({"limits": {"timeout_s": 10}, "options": {}})
    with (tmp_path / "runner-out.txt").open("w") as out, (tmp_path / "runner-in.txt").open("w+") as in_:
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, "jobs.jsonl", "out.jsonl", cfg], cwd=tmp_path, env=batch_env(),
            stdin=in_, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for row in read_rows(tmp_path / "out.jsonl").values():
        assert row["stdout"] == "out\n"
        # stdin is /dev/null (seekable, at 0), stdout and stderr are pipes
        assert row["return_value"] == "[(True, False, 0), (False, False, None), (False, False, None)]"



# A program reads reference counts: of an object of the warm runner (a function of `os`, which
# every interpreter has loaded at start-up) and of one of its own.
REFCOUNTS = textwrap.dedent(
    """\
    import os, sys
    mine = [1, 2]
    print(sys.getrefcount(os.path.join) >= 2 ** 30, sys.getrefcount(mine) < 100)
    """
)
# ... and one that works the runner's objects hard: strings of the warm heap grown in place
# (3.14's "mortal" reference counting of them, which a wrong immortal count crashes), the
# standard library's modules, exceptions, generators, garbage collections.
WARM_WORK = textwrap.dedent(
    """\
    import collections, json, os, re
    def grow(n):
        s = os.sep
        for i in range(n):
            s += os.curdir
        return s
    def words(text):
        for w in re.findall(r"[a-z]+", text):
            yield w.upper()
    counts = collections.Counter(words("a b a c " * 50))
    try:
        json.loads("{")
    except ValueError as exc:
        err = type(exc).__name__
    class Node:
        pass
    for i in range(2000):  # cycles: the collector runs, over the runner's objects too
        node = Node()
        node.me = [node, {"i": i}]
    import gc
    gc.collect()
    print(len(grow(300)), json.dumps(sorted(counts.items())), err, os.path.join("a", "b"))
    """
)


@pytest.mark.parametrize("version", [None, "3.12", "3.13", "3.14", "3.15"])
def test_the_fork_servers_heap_is_immortal_from_3_12(tmp_path: Path, version: str | None) -> None:
    """Each program's reference counting wrote to the warm runner's objects, copying their pages:
    most of a program's page faults. From 3.12 the fork server makes its heap immortal (PEP 683),
    which CPython leaves unwritten; the program's own objects stay as they are, and its traces are
    those of a mortal heap. The run record says so; WORLDTRACE_IMMORTAL_HEAP=0 turns it off."""
    python = sys.executable if version is None else interpreter(version)
    jobs = [{"program_id": "refcounts", "source": REFCOUNTS}, {"program_id": "work", "source": WARM_WORK}]
    write_jobs(tmp_path / "jobs.jsonl", jobs)
    results = {}
    for switch in ("", "0"):
        out = tmp_path / f"out{switch}.jsonl"
        proc = subprocess.run(batch_cmd(python, tmp_path / "jobs.jsonl", out, {"timeout_s": 30}), cwd=tmp_path,
                              env=dict(batch_env(), WORLDTRACE_IMMORTAL_HEAP=switch), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(Path(f"{out}.runs.jsonl").read_text().splitlines()[-1])
        results[switch] = (read_rows(out), record["immortal_heap"])
    immortal = version is not None  # the host's own Python is 3.11
    rows, record = results[""]
    assert rows["refcounts"]["stdout"] == f"{immortal} True\n", rows["refcounts"]
    assert record["on"] is immortal, record
    rows_off, record_off = results["0"]
    assert rows_off["refcounts"]["stdout"] == "False True\n", rows_off["refcounts"]
    assert record_off == {"on": False, "reason": "WORLDTRACE_IMMORTAL_HEAP=0", "turned_off": None}
    assert rows["work"]["status"] == "ok", rows["work"]
    assert rows["work"]["stdout"] == '301 [["A", 100], ["B", 50], ["C", 50]] JSONDecodeError a/b\n'
    for row in (rows["work"], rows_off["work"]):
        row.pop("wall_time_s")
    assert rows["work"] == rows_off["work"]


# Crashes (SIGSEGV) only where the runner's heap is immortal: as a CPython whose immortal objects
# the tracer got wrong would.
CRASHES_ON_IMMORTAL = textwrap.dedent(
    """\
    import os, signal, sys
    if sys.getrefcount(os.path.join) >= 2 ** 30:
        os.kill(os.getpid(), signal.SIGSEGV)
    print("ran")
    """
)
SEGFAULTS = "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n"


@pytest.mark.parametrize("version", ["3.13", "3.14"])
def test_a_crash_the_immortal_heap_caused_is_rerun_on_a_mortal_one(tmp_path: Path, version: str) -> None:
    """A program killed by a fault signal on the immortal heap runs again on a mortal one. A crash
    of its own stays its row and the next program's heap is immortal again; one that does not
    happen on the mortal heap was the heap's doing: the rerun is the row, and the heap stays
    mortal for the rest of the batch (the run record says after which program)."""
    jobs = [
        {"program_id": "own-crash", "source": SEGFAULTS},
        {"program_id": "still-immortal", "source": REFCOUNTS},
        {"program_id": "heap-crash", "source": CRASHES_ON_IMMORTAL},
        {"program_id": "now-mortal", "source": REFCOUNTS},
    ]
    rows, proc = run_batch_process(tmp_path, jobs, {"timeout_s": 30}, python=interpreter(version))
    assert proc.returncode == 0, proc.stderr
    assert rows["own-crash"]["status"] == "crashed", rows["own-crash"]
    assert rows["own-crash"]["stdout"] == "before\n"  # one run's output, not two
    assert "SIGSEGV" in rows["own-crash"]["exception_message"]
    assert rows["still-immortal"]["stdout"] == "True True\n"
    assert rows["heap-crash"]["status"] == "ok", rows["heap-crash"]
    assert rows["heap-crash"]["stdout"] == "ran\n"
    assert rows["now-mortal"]["stdout"] == "False True\n"
    record = json.loads((tmp_path / "out.jsonl.runs.jsonl").read_text().splitlines()[-1])
    assert record["immortal_heap"]["on"] is True
    assert record["immortal_heap"]["turned_off"]["after"] == "heap-crash"
    assert "heap-crash" in proc.stderr and "stays mortal" in proc.stderr


FAILING_WALK = textwrap.dedent(
    """\
    import sys
    from tracer import _batch_zygote
    from tracer.batch import run_batch

    def walk_fails():
        raise MemoryError("half-way")

    _batch_zygote.immortalize_heap = walk_fails
    sys.exit(run_batch(sys.argv[1], sys.argv[2]))
    """
)


def test_a_failed_walk_leaves_the_heap_mortal_and_the_batch_running(tmp_path: Path) -> None:
    """Making the heap immortal fails (here: out of memory): the fork server goes on with it as
    it is, mortal, instead of dying with every program it would fork."""
    write_jobs(tmp_path / "jobs.jsonl", [{"program_id": "refcounts", "source": REFCOUNTS}])
    script = tmp_path / "run.py"
    script.write_text(FAILING_WALK)
    proc = subprocess.run([interpreter("3.13"), str(script), "jobs.jsonl", "out.jsonl"], cwd=tmp_path,
                          env=batch_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = read_rows(tmp_path / "out.jsonl")["refcounts"]
    assert row["status"] == "ok" and row["stdout"] == "False True\n", row
