"""Repository-level traces: a `pytest` batch job traces each top-level call into the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tracer_testutil import interpreter

REPO_ROOT = Path(__file__).resolve().parents[2]

PACKAGE = {
    "mypkg/__init__.py": "from mypkg.core import Box, add, fail, hold, nap, recurse, spin, total\n\nVERSION = add(0, 1)\n",
    "mypkg/core.py": """
        import time


        def add(a, b):
            c = a + b
            return c


        def total(xs, *, start=0):
            acc = start
            for x in xs:
                acc = add(acc, x)
            return acc


        class Box:
            def __init__(self, items):
                self.items = list(items)

            def size(self):
                return len(self.items)


        def fail(msg):
            raise ValueError(msg)


        def recurse(n):
            return recurse(n + 1)


        def nap(seconds):
            time.sleep(seconds)
            return seconds


        def spin():
            n = 0
            while True:
                n += 1


        def hold(started, release):
            started.set()
            release.wait(30)
            return "held"
        """,
    "mypkg/tests/test_inside.py": """
        from mypkg import add


        def test_inside():
            assert add(2, 2) == 4
        """,
    "tests/test_core.py": """
        import pytest

        import mypkg


        def helper(x):
            return mypkg.add(x, x)


        def test_add():
            assert mypkg.add(1, 2) == 3


        def test_total():
            assert mypkg.total([1, 2, 3], start=10) == 16
            assert helper("a") == "aa"


        def test_box():
            assert mypkg.Box([1, 2]).size() == 2


        def test_fail():
            with pytest.raises(ValueError):
                mypkg.fail("nope")


        def test_broken():
            assert mypkg.add(1, 1) == 3
        """,
    "slow/test_slow.py": """
        import time

        import mypkg


        def test_slow():
            assert mypkg.add(1, 1) == 2
            time.sleep(600)
        """,
    "interrupt/test_interrupt.py": """
        import sys

        import pytest

        import mypkg


        def test_first():
            assert mypkg.add(1, 2) == 3


        def test_recursion_limit():
            with pytest.raises(RecursionError):
                mypkg.recurse(0)


        def test_after_recursion():
            assert mypkg.add(3, 4) == 7


        def test_trace_off():
            sys.settrace(None)
            assert mypkg.add(5, 6) == 11


        def test_after_trace_off():
            assert mypkg.add(7, 8) == 15
        """,
    "hang/conftest.py": """
        import time

        import pytest


        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            yield
            if call.when == "call" and item.name == "test_slow_report":
                time.sleep(2.5)  # the deadline passes in pytest's report hooks, outside any phase
        """,
    "hang/test_hang.py": """
        import ctypes
        import os
        import signal
        import threading
        import time

        import mypkg


        def test_before():
            assert mypkg.add(1, 2) == 3


        def test_sleeps():
            assert mypkg.add(2, 2) == 4
            time.sleep(600)


        def test_spins_in_the_package():
            mypkg.spin()


        def test_ignores_its_deadline():
            while True:
                try:
                    time.sleep(600)
                except BaseException:
                    pass


        def test_exits():
            assert mypkg.add(5, 5) == 10
            os._exit(3)


        def test_segfault():
            ctypes.string_at(0)


        def test_slow_report():
            assert mypkg.add(1, 1) == 3


        def test_another_threads_call():
            worker = threading.Thread(target=mypkg.nap, args=(2.5,))
            worker.start()
            try:
                threading.Event().wait()  # the deadline interrupts this wait, not the worker's call
            finally:
                worker.join()  # (not the interrupted wait: that can leave join() unable to wait)


        def test_own_short_timer():
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # replaces the deadline's timer: not the deadline
            time.sleep(0.3)
            assert mypkg.add(2, 3) == 5


        def test_after():
            assert mypkg.add(7, 8) == 15
        """,
    "last/test_last.py": """
        import os

        import mypkg


        def test_first():
            print("x" * 5000)
            assert mypkg.add(1, 2) == 3


        def test_exits_last():
            os._exit(3)
        """,
    "threads/test_threads.py": """
        import threading

        import mypkg


        def test_overlap():
            started, release = threading.Event(), threading.Event()
            worker = threading.Thread(target=mypkg.hold, args=(started, release))
            worker.start()
            started.wait(30)
            assert mypkg.add(1, 2) == 3  # while the worker's call is being recorded
            release.set()
            worker.join()
        """,
    "usercode/test_usercode.py": """
        import time

        import pytest

        import mypkg


        def test_replaced_clocks(monkeypatch):
            calls = []
            monkeypatch.setattr(time, "perf_counter", lambda: calls.append("perf_counter") or 1.0)
            monkeypatch.setattr(time, "monotonic", lambda: calls.append("monotonic") or 1.0)
            assert mypkg.total([1, 2]) == 3
            assert calls == []


        class Loud(Exception):
            calls = []

            def __getattribute__(self, name):
                Loud.calls.append(name)
                return Exception.__getattribute__(self, name)


        class Bad:
            def __radd__(self, other):
                raise Loud("bad")


        def test_an_exception_that_logs_its_attributes():
            with pytest.raises(Loud):
                mypkg.total([1, Bad()])
            assert Loud.calls == []
        """,
    "srcproj/pytest.ini": "[pytest]\npythonpath = src\n",
    "srcproj/src/srcpkg/__init__.py": """
        def double(x):
            return 2 * x
        """,
    "srcproj/tests/test_src.py": """
        import srcpkg


        def test_double():
            assert srcpkg.double(4) == 8
        """,
    "project/data.txt": "42\n",
    "project/tests/test_cwd.py": """
        import mypkg


        def test_reads_a_file_of_the_project():
            with open("data.txt") as f:  # relative: the project folder is the working directory
                assert mypkg.add(int(f.read()), 1) == 43
        """,
    "project/tests/test_ignored.py": """
        def test_never_collected():
            raise AssertionError("--ignore did not apply")
        """,
    "other/test_other.py": """
        import json

        import pytest


        def test_json():
            assert json.loads("1") == 1
        """,
}


def make_repo(root: Path) -> None:
    for rel, text in PACKAGE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def run_jobs(
    root: Path,
    jobs: list,
    python: str = sys.executable,
    backend: str = "auto",
    path: tuple = (),
    extra: tuple = (),
) -> dict:
    (root / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    pythonpath = os.pathsep.join([str(REPO_ROOT), *map(str, path)])
    env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    # This venv's many pytest plugins cost a second per run and are not what is tested here.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run(
        [
            python,
            "-m",
            "tracer",
            "batch",
            "jobs.jsonl",
            "--out",
            "out.jsonl",
            "--timeout",
            "60",
            "--backend",
            backend,
            *extra,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in (root / "out.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert row["program_id"] not in rows
        rows[row["program_id"]] = row
    return rows


def check_rows(rows: dict, job: str) -> None:
    t = job + "::tests/test_core.py::"
    calls = {
        pid: (r["entrypoint"], r["input"], r["status"], r["return_value"])
        for pid, r in rows.items()
    }
    assert calls[t + "test_add::0"] == ("add", "1, 2", "ok", "3")
    assert calls[t + "test_total::0"] == ("total", "[1, 2, 3], start=10", "ok", "16")
    # helper() is test code: its call into the package is the top-level one.
    assert calls[t + "test_total::1"] == ("add", "'a', 'a'", "ok", "'aa'")
    assert calls[t + "test_box::0"][0] == "Box.__init__"
    assert calls[t + "test_box::1"] == ("Box.size", "Box(items=[1, 2])", "ok", "2")
    assert calls[t + "test_fail::0"][:3] == ("fail", "'nope'", "exception")
    assert rows[t + "test_fail::0"]["exception_type"] == "ValueError"
    assert calls[t + "test_broken::0"] == ("add", "1, 1", "ok", "2")
    # Nested calls are events of the top-level trace, not traces of their own.
    total_trace = rows[t + "test_total::0"]
    assert [e["function"] for e in total_trace["events"] if e["kind"] == "call"] == [
        "total",
        "add",
        "add",
        "add",
    ]
    assert total_trace["events"][0]["depth"] == 0 and total_trace["events"][0]["frame_id"] == 0
    assert not any(pid.startswith(t + "test_total::2") for pid in rows)
    # The job's own row comes last and carries pytest's outcome and report.
    ids = list(rows)
    assert ids.index(job) == max(i for i, pid in enumerate(ids) if pid.startswith(job + "::")) + 1
    assert rows[job]["status"] == "ok" and rows[job]["return_value"] == "1"
    assert "1 failed" in rows[job]["stdout"]


def test_pytest_job_traces_each_top_level_call(tmp_path: Path) -> None:
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(
        tmp_path,
        [
            {"program_id": "named", "mode": "pytest", "file": "tests", "package": "mypkg"},
            {"program_id": "inferred", "mode": "pytest", "file": "tests"},
            {"program_id": "inside", "mode": "pytest", "file": "mypkg/tests", "package": ["mypkg"]},
            {"program_id": "missing", "mode": "pytest", "file": "tests", "package": "no_such_pkg"},
            {"program_id": "stdlib-only", "mode": "pytest", "file": "other"},
            {"program_id": "slow", "mode": "pytest", "file": "slow", "timeout_s": 1},
        ],
    )
    check_rows(rows, "named")
    check_rows(rows, "inferred")
    # Test code inside the package is not the package: its calls into mypkg are traced.
    assert rows["inside::mypkg/tests/test_inside.py::test_inside::0"]["input"] == "2, 2"
    assert rows["missing"]["status"] == "error" and "no_such_pkg" in rows["missing"]["tracer_error"]
    assert (
        rows["stdlib-only"]["status"] == "error"
        and "give `package`" in rows["stdlib-only"]["tracer_error"]
    )
    # A pytest job past its deadline is killed; the calls traced before that are kept.
    assert rows["slow"]["status"] == "timeout"
    assert rows["slow::slow/test_slow.py::test_slow::0"]["return_value"] == "2"
    # Importing the package (VERSION = add(0, 1) at import time) is not a test's call.
    assert not any("::<" in pid for pid in rows)


def check_interrupted(rows: dict, backend: str) -> None:
    """One test cannot end the recording for the tests after it: a RecursionError at the limit
    inside a traced call, or a test that removes the trace function."""
    t = "job::interrupt/test_interrupt.py::"
    assert rows[t + "test_first::0"]["return_value"] == "3"
    stopped = rows[t + "test_recursion_limit::0"]
    assert (stopped["status"], stopped["truncated_reason"]) == ("error", "events_lost"), stopped["tracer_error"]
    assert "recording stopped" in stopped["tracer_error"]
    assert rows[t + "test_after_recursion::0"]["return_value"] == "7"
    assert rows[t + "test_after_trace_off::0"]["return_value"] == "15"
    if backend == "monitoring":  # sys.settrace(None) does not touch sys.monitoring
        assert rows[t + "test_trace_off::0"]["return_value"] == "11"
    job = rows["job"]
    assert (job["status"], job["truncated"], job["truncated_reason"]) == ("ok", True, "events_lost")
    assert job["tracer_error"] is None


def test_recording_starts_again_at_the_next_test(tmp_path: Path) -> None:
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "job", "mode": "pytest", "file": "interrupt", "package": "mypkg"}],
                    backend="settrace")  # fmt: skip
    check_interrupted(rows, "settrace")


HANG_JOB = {"program_id": "hang", "mode": "pytest", "file": "hang", "package": "mypkg", "test_timeout_s": 2}


def check_lost_tests(rows: dict) -> None:
    """A test past `test_timeout_s` fails and pytest goes on; one that ignores it, or ends the
    process (`os._exit`, a segfault), is lost, and pytest runs again without the tests before it
    and that one: every other test is traced, each call once."""
    t = "hang::hang/test_hang.py::"
    assert rows[t + "test_before::0"]["return_value"] == "3"
    assert rows[t + "test_sleeps::0"]["return_value"] == "4"
    spun = rows[t + "test_spins_in_the_package::0"]
    assert (spun["entrypoint"], spun["status"], spun["exception_message"]) == (
        "spin", "timeout", "ran past test_timeout_s=2"
    )
    assert rows[t + "test_exits::0"]["return_value"] == "10"
    # The deadline interrupts the test's own thread; another thread's call goes on and returns.
    napped = rows[t + "test_another_threads_call::0"]
    assert (napped["entrypoint"], napped["status"], napped["return_value"]) == ("nap", "ok", "2.5")
    assert rows[t + "test_after::0"]["return_value"] == "15"
    tests = ("test_before", "test_sleeps", "test_spins_in_the_package", "test_exits", "test_slow_report",
             "test_another_threads_call", "test_own_short_timer", "test_after")  # fmt: skip
    assert [pid for pid in rows if pid.startswith(t)] == [t + name + "::0" for name in tests]
    summary = rows["hang"]
    assert (summary["status"], summary["return_value"]) == ("ok", "1")
    assert (summary["truncated"], summary["truncated_reason"]) == (True, "events_lost")
    out = summary["stdout"]
    for lost, how in [
        ("test_ignores_its_deadline", "ran past test_timeout_s=2 and did not stop; killed"),
        ("test_exits", "crashed: exited with code 3"),
        ("test_segfault", "crashed: killed by signal 11 (SIGSEGV)"),
    ]:
        assert f"\nworldtrace: pytest's process ended in test hang/test_hang.py::{lost} ({how}" in out, out
        assert f"worldtrace: pytest's process ended in test hang/test_hang.py::{lost} " in summary["stderr"]
    # The last pytest ran the tests after the lost ones. A deadline that passed in a report hook
    # failed the next phase of the test (its teardown), not the session (INTERNALERROR).
    assert "INTERNALERROR" not in out and "2 failed, 2 passed, 6 deselected" in out
    assert "ERROR at teardown of test_slow_report" in out


def test_one_test_cannot_end_the_job(tmp_path: Path) -> None:
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [HANG_JOB])
    check_lost_tests(rows)
    # A re-run writes nothing new; one killed before the job's row finishes it without duplicates.
    out_path = tmp_path / "out.jsonl"
    lines = out_path.read_text().splitlines(keepends=True)
    out_path.write_text("".join(lines[:2]))
    again = run_jobs(tmp_path, [HANG_JOB])
    assert list(again) == list(rows)


def test_a_lost_last_test_and_the_output_cap(tmp_path: Path) -> None:
    """The last test lost: pytest then runs nothing (exit code 5), and the row still says tests
    failed (1). The notes on lost tests outlive the output cap."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    job = {"program_id": "last", "mode": "pytest", "file": "last", "argv": ["-s"], "package": "mypkg"}
    rows = run_jobs(tmp_path, [job], extra=("--max-output-bytes", "3000"))
    assert rows["last::last/test_last.py::test_first::0"]["return_value"] == "3"
    summary = rows["last"]
    assert (summary["status"], summary["return_value"], summary["output_truncated"]) == ("ok", "1", True)
    note = "worldtrace: pytest's process ended in test last/test_last.py::test_exits_last (crashed: exited with code 3"
    assert note in summary["stdout"] and note in summary["stderr"]


def test_the_deadline_waits_while_a_trace_is_written() -> None:
    """A deadline that passes while the recorder writes a trace (in a callback, just after a
    call returned) is raised just after, into the test, not into the recorder, which would lose
    the trace of a call that returned."""
    code = textwrap.dedent(
        """
        import os, signal
        from tracer.pytest_mode import CallRecorder, TestTimeout, _TestDeadline
        from tracer.render import Renderer

        recorder = CallRecorder(Renderer(100, 10, 3), lambda f: False, 0, print, None)
        deadline = recorder.deadline = _TestDeadline(60, recorder)
        deadline.arm()
        deadline.enter_phase()
        deadline.held += 1  # the recorder is writing a trace
        deadline.due = 0.0  # the deadline has come (not a timer of the test's own)
        os.kill(os.getpid(), signal.SIGALRM)  # handled at the next bytecode: not raised
        assert deadline.pending
        deadline.release()
        try:
            signal.pause()  # the deadline, raised just after the recorder is done
        except TestTimeout as exc:
            print("raised:", exc)
        deadline.leave_phase()
        deadline.disarm()
        assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "raised: the test ran past its deadline\n"


def test_a_pytest_job_runs_in_its_cwd(tmp_path: Path) -> None:
    """`cwd`: pytest runs in the project folder, as the project's own `cd ROOT && python -m pytest
    tests --ignore=tests/x.py` does (relative paths in options and in the tests resolve there)."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [
        {"program_id": "cwd", "mode": "pytest", "file": "tests", "argv": ["--ignore=tests/test_ignored.py"],
         "package": "mypkg", "cwd": str(tmp_path / "project")},
        {"program_id": "nowhere", "mode": "pytest", "file": "tests", "package": "mypkg", "cwd": str(tmp_path / "no")},
    ])  # fmt: skip
    assert rows["cwd"]["status"] == "ok" and rows["cwd"]["return_value"] == "0", rows["cwd"]["stdout"]
    assert rows["cwd::tests/test_cwd.py::test_reads_a_file_of_the_project::0"]["return_value"] == "43"
    assert rows["nowhere"]["status"] == "error" and "cannot run in `cwd`" in rows["nowhere"]["tracer_error"]


def test_a_call_holds_only_its_own_threads_events(tmp_path: Path) -> None:
    """A call into the package made by another thread while a call is being recorded is not
    part of that call's trace (nor a trace of its own: one call is recorded at a time)."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "job", "mode": "pytest", "file": "threads", "package": "mypkg"}])
    held = rows["job::threads/test_threads.py::test_overlap::0"]
    assert (held["entrypoint"], held["return_value"]) == ("hold", "'held'")
    assert {e["function"] for e in held["events"]} == {"hold"}
    assert len({e["thread_id"] for e in held["events"]}) == 1
    assert "job::threads/test_threads.py::test_overlap::1" not in rows


def test_the_recorder_runs_none_of_the_tests_code(tmp_path: Path) -> None:
    """The recorder reads its clocks as they were imported, never a test's fakes of them (a
    monkeypatch of time.perf_counter that hands out planned values would see extra calls), and
    tells a memory error by the exception's type (``isinstance`` asks others for ``__class__``)."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "job", "mode": "pytest", "file": "usercode", "package": "mypkg"}])
    assert rows["job"]["return_value"] == "0", rows["job"]["stdout"]
    t = "job::usercode/test_usercode.py::"
    assert rows[t + "test_replaced_clocks::0"]["return_value"] == "3"
    assert rows[t + "test_an_exception_that_logs_its_attributes::0"]["status"] == "exception"


def test_a_package_that_pytest_makes_importable(tmp_path: Path) -> None:
    """A src layout that only pytest's `pythonpath` ini setting puts on sys.path."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "src", "mode": "pytest", "file": "tests", "package": "srcpkg",
                                "cwd": str(tmp_path / "srcproj")}])  # fmt: skip
    assert rows["src"]["status"] == "ok", rows["src"]["tracer_error"]
    assert rows["src::tests/test_src.py::test_double::0"]["return_value"] == "8"


def test_pytest_job_resume_writes_only_missing_traces(tmp_path: Path) -> None:
    make_repo(tmp_path)
    job = {"program_id": "named", "mode": "pytest", "file": "tests", "package": "mypkg"}
    first = run_jobs(tmp_path, [job])
    out = tmp_path / "out.jsonl"
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]))  # as if killed after three traces, before the job's row
    second = run_jobs(tmp_path, [job])
    assert list(second) == list(first)


def test_installed_package_and_a_checkout_that_shadows_it(tmp_path: Path) -> None:
    """As in a repository image: the package is installed (dist-packages) and its checkout has the
    tests. Whichever copy the tests import is the one traced."""
    site = tmp_path / "site" / "dist-packages"
    for rel in ("mypkg/__init__.py", "mypkg/core.py"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(PACKAGE[rel]))
    installed = tmp_path / "installed"  # tests only: they import the installed copy
    (installed / "tests").mkdir(parents=True)
    (installed / "tests" / "test_core.py").write_text(
        textwrap.dedent(PACKAGE["tests/test_core.py"])
    )
    checkout = tmp_path / "checkout"  # tests at the top, next to a copy of the package
    make_repo(checkout)
    (checkout / "test_top.py").write_text(
        "import mypkg\n\n\ndef test_top():\n    assert mypkg.add(2, 3) == 5\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    rows = run_jobs(
        run,
        [
            {
                "program_id": "installed",
                "mode": "pytest",
                "file": str(installed / "tests"),
                "package": "mypkg",
            },
            {
                "program_id": "checkout",
                "mode": "pytest",
                "file": str(checkout / "test_top.py"),
                "package": "mypkg",
            },
            {"program_id": "inferred", "mode": "pytest", "file": str(checkout / "test_top.py")},
        ],
        path=(site,),
    )
    add = rows[f"installed::{installed.name}/tests/test_core.py::test_add::0"]
    assert add["input"] == "1, 2" and add["events"][0]["file"].startswith(str(site))
    for job in ("checkout", "inferred"):
        top = rows[f"{job}::{checkout.name}/test_top.py::test_top::0"]  # node ids: from the rootdir
        assert top["return_value"] == "5" and top["events"][0]["file"].startswith(
            str(checkout / "mypkg")
        )


def test_max_events_is_a_budget_per_call_for_line_events_too(tmp_path: Path) -> None:
    """Every event of a call counts against --max-events, lines included (they once bypassed
    it: a loop in the package made a trace of unbounded size); the next call has its own."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "named", "mode": "pytest", "file": "tests", "package": "mypkg"}],
                    extra=("--max-events", "5"))  # fmt: skip
    calls = {pid: r for pid, r in rows.items() if pid.startswith("named::")}
    assert calls and all(r["n_events"] == len(r["events"]) <= 5 for r in calls.values())
    total = calls["named::tests/test_core.py::test_total::0"]
    assert total["truncated"] is True and total["truncated_reason"] == "max_events"
    assert total["return_value"] == "16" and total["status"] == "ok"
    add = calls["named::tests/test_core.py::test_add::0"]
    assert add["truncated"] is False and [e["kind"] for e in add["events"]] == ["call", "line", "line", "return"]


def test_a_suite_that_replaces_the_timer_and_thread_functions_keeps_its_deadlines(tmp_path: Path) -> None:
    """The per-test deadline was armed through signal.setitimer and threading.current_thread as
    the tests left them: a suite that replaced them (for good, or a monkeypatch in a fixture of
    wider scope) had its fakes called by the runner, and its tests ran without a deadline."""
    pytest.importorskip("pytest")
    make_repo(tmp_path)
    (tmp_path / "mocks").mkdir()
    (tmp_path / "mocks" / "test_mocks.py").write_text(textwrap.dedent("""
        import signal, threading, time
        import mypkg

        CALLS = []
        real_current_thread = threading.current_thread

        def test_replaces_them():
            signal.setitimer = lambda *args: CALLS.append(("setitimer", args))
            threading.current_thread = lambda: CALLS.append("current_thread") or real_current_thread()
            assert mypkg.add(1, 2) == 3

        def test_the_fakes_are_not_called_by_the_runner():
            assert mypkg.add(2, 2) == 4
            assert CALLS == []

        def test_runs_past_its_deadline():
            time.sleep(5)
        """))
    job = {"program_id": "mocks", "mode": "pytest", "file": "mocks", "package": "mypkg", "test_timeout_s": 1}
    summary = run_jobs(tmp_path, [job])["mocks"]
    assert summary["status"] == "ok" and summary["return_value"] == "1", summary["stdout"]
    assert "1 failed, 2 passed" in summary["stdout"], summary["stdout"]
    assert "FAILED mocks/test_mocks.py::test_runs_past_its_deadline" in summary["stdout"], summary["stdout"]


def test_a_call_trace_with_more_events_than_max_events_is_not_written(tmp_path: Path) -> None:
    """The tests run in the child and can write to its report channel: a trace of more events
    than --max-events is not the recorder's, and is dropped (one within the limit is a trace
    like any other that the job's child sends)."""
    pytest.importorskip("pytest")
    (tmp_path / "forge").mkdir()
    (tmp_path / "forge" / "test_forge.py").write_text(textwrap.dedent("""
        import os
        from tracer._batch_child import RESULT_FD

        def send(pid, n):  # no call into the package (textwrap): no trace of the recorder's
            events = ", ".join(["{}"] * n)
            message = '{"kind": "trace", "trace": {"program_id": "%s", "status": "ok", "events": [%s]}}' % (pid, events)
            os.write(RESULT_FD, message.encode() + b"\\n")

        def test_forge():
            send("job::forge/test_forge.py::test_forge::0", 5)
            send("job::forge/test_forge.py::test_forge::1", 6)
        """))
    rows = run_jobs(tmp_path, [{"program_id": "job", "mode": "pytest", "file": "forge", "package": "textwrap"}],
                    extra=("--max-events", "5"))  # fmt: skip
    assert rows["job"]["status"] == "ok" and rows["job"]["return_value"] == "0", rows["job"]["stdout"]
    assert len(rows["job::forge/test_forge.py::test_forge::0"]["events"]) == 5
    assert "job::forge/test_forge.py::test_forge::1" not in rows


def _pure_python_pytest(folder: Path) -> Path:
    """A folder that lends this venv's pytest to another CPython: pytest and its dependencies
    are pure Python, so symlinks to them on PYTHONPATH are enough (no install, no network)."""
    import importlib

    folder.mkdir()
    for name in ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        source = Path(module.__file__ or "")
        target = source.parent if source.name == "__init__.py" else source
        (folder / target.name).symlink_to(target)
        for info in target.parent.glob(f"{name.lstrip('_')}-*.dist-info"):  # pytest reads versions
            if not (folder / info.name).exists():
                (folder / info.name).symlink_to(info)
    return folder


@pytest.mark.multipython
@pytest.mark.parametrize("version", ["3.13", "3.15"])
def test_pytest_job_with_the_monitoring_backend(tmp_path: Path, version: str) -> None:
    """Repository-level traces through the monitoring backend's general path (pytest mode's
    recorder), under pyenv's 3.13 and the image's 3.15 borrowing this venv's pure-Python pytest."""
    python, path = interpreter(version), (_pure_python_pytest(tmp_path / "lent-pytest"),)
    make_repo(tmp_path)
    rows = run_jobs(tmp_path, [{"program_id": "named", "mode": "pytest", "file": "tests", "package": "mypkg"},
                               {"program_id": "job", "mode": "pytest", "file": "interrupt", "package": "mypkg"},
                               HANG_JOB],
                    python=python, backend="monitoring", path=path)  # fmt: skip
    check_rows(rows, "named")
    check_interrupted(rows, "monitoring")
    check_lost_tests(rows)
    assert {r["backend"] for r in rows.values()} == {"monitoring"}


@pytest.mark.multipython
def test_a_pytest_suite_runs_on_a_mortal_heap(tmp_path: Path) -> None:
    """On 3.12+ the fork server's heap is immortal for programs (docs/batch.md "Cost"); a pytest
    job's child runs a whole suite, so there is nothing to gain, and a crash the heap caused would
    lose a test (pytest jobs are not rerun): once pytest is loaded, the heap stays mortal."""
    python, path = interpreter("3.13"), (_pure_python_pytest(tmp_path / "lent-pytest"),)
    (tmp_path / "heapcheck").mkdir()
    (tmp_path / "heapcheck" / "__init__.py").write_text("def refs(obj):\n    import sys\n    return sys.getrefcount(obj)\n")
    (tmp_path / "test_heap.py").write_text(
        "import os\nfrom heapcheck import refs\n\ndef test_mortal():\n    assert refs(os.path.join) < 2 ** 30\n"
    )
    rows = run_jobs(tmp_path, [{"program_id": "suite", "mode": "pytest", "file": "test_heap.py", "package": "heapcheck"}],
                    python=python, path=path)  # fmt: skip
    assert rows["suite"]["status"] == "ok" and rows["suite"]["return_value"] == "0", rows["suite"]["stdout"]
    record = json.loads((tmp_path / "out.jsonl.runs.jsonl").read_text().splitlines()[-1])
    assert record["immortal_heap"] == {"on": False, "reason": "pytest jobs run on a mortal heap (one fork per suite)",
                                       "turned_off": None}
