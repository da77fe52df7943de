"""tracer.api and ``python -m tracer``: statuses, limits, output capture, errors, JSON Lines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tracer_testutil import REPO_ROOT

from tracer import __version__
from tracer.api import Limits, full_locals, trace_call, trace_script
from tracer.jsonl import dumps_utf8

STREAM_KEYS = {
    "format", "program_id", "entrypoint", "input", "status", "return_value", "exception_type",
    "exception_message", "truncated", "truncated_reason", "stdout", "stderr", "output_truncated",
    "wall_time_s", "n_events", "python_version", "backend", "backend_reason", "tracer_version",
    "limits", "tracer_error", "events",
}
EVENT_KEYS = {"kind", "lineno", "source", "function", "file", "depth", "frame_id", "thread_id", "locals", "arg"}


def call(source: str, input_text: str = "", entry: str = "f", **kw) -> dict:
    return trace_call("prog.py", entry, input_text, source=textwrap.dedent(source), **kw)


def test_trace_has_every_stream_key(backend: str) -> None:
    t = call("def f(x):\n    return x + 1\n", "1", backend=backend)
    assert set(t) == STREAM_KEYS
    assert t["status"] == "ok" and t["return_value"] == "2"
    assert t["tracer_version"] == __version__ and t["format"] == "worldtrace.stream/1"
    assert t["program_id"] == "prog" and t["entrypoint"] == "f" and t["input"] == "1"
    assert t["n_events"] == len(t["events"]) == 3
    assert all(set(e) == EVENT_KEYS for e in t["events"])
    assert t["events"][1]["source"] == "    return x + 1"
    assert t["limits"] == Limits().to_dict()


def test_exception_status_and_message(backend: str) -> None:
    t = call("def f():\n    raise KeyError('k')\n", backend=backend)
    assert (t["status"], t["exception_type"], t["exception_message"]) == ("exception", "KeyError", "'k'")
    assert t["return_value"] is None


def test_user_exception_is_qualified_and_str_not_called(backend: str) -> None:
    t = call("""
        class Boom(Exception):
            def __str__(self):
                raise RuntimeError('user __str__ must not run')
        def f():
            raise Boom('x', 2)
    """, backend=backend)
    assert t["status"] == "exception"
    assert t["exception_type"] == "prog.Boom"
    assert t["exception_message"] == "('x', 2)"


def test_memory_error_is_memory_status(backend: str) -> None:
    t = call("def f():\n    raise MemoryError()\n", backend=backend)
    assert t["status"] == "memory"


def test_syntax_error_in_program_is_exception(backend: str) -> None:
    t = call("def f(:\n    pass\n", backend=backend)
    assert t["status"] == "exception" and t["exception_type"] == "SyntaxError"


@pytest.mark.parametrize("entry, input_text, message", [
    ("g", "", "entry point 'g' is not defined"),
    ("f", "1, (", "invalid input text"),
    ("f", "undefined_name", "NameError"),
])
def test_invalid_job_is_error(entry: str, input_text: str, message: str, backend: str) -> None:
    t = call("def f(x=0):\n    return x\n", input_text, entry=entry, backend=backend)
    assert t["status"] == "error"
    assert message in t["tracer_error"]


def test_output_captured_and_capped(backend: str) -> None:
    t = call("""
        import sys
        def f():
            print('x' * 50)
            sys.stderr.write('warn\\n')
            return 1
    """, backend=backend, limits=Limits(max_output_bytes=10))
    assert t["stdout"] == "x" * 10 and t["stderr"] == "warn\n"
    assert t["output_truncated"] is True


def test_capture_output_false_leaves_streams_alone(capsys, backend: str) -> None:
    t = call("def f():\n    print('direct')\n", backend=backend, capture_output=False)
    assert t["stdout"] == "" and capsys.readouterr().out == "direct\n"


def test_max_events_truncates_but_program_finishes(backend: str) -> None:
    t = call("""
        def f(n):
            total = 0
            for i in range(n):
                total += i
            return total
    """, "10000", backend=backend, limits=Limits(max_events=50))
    assert t["status"] == "ok" and t["return_value"] == str(sum(range(10000)))
    assert t["truncated"] is True and t["truncated_reason"] == "max_events"
    assert t["n_events"] == 50


def test_timeout_in_process_keeps_partial_trace(backend: str) -> None:
    t = call("def f():\n    n = 0\n    while True:\n        n += 1\n", backend=backend,
             limits=Limits(timeout_s=0.3, max_events=1000))
    assert t["status"] == "timeout"
    assert t["events"][0]["kind"] == "call"


@pytest.mark.parametrize(
    "body",
    [
        "rows = [[i] for i in range(150)]\n    mid = rows[75]\n    rows[75][0] = 9",
        "rows = [[[[[[[[[[0]]]]]]]]]]\n    mid = rows[0][0][0][0][0][0][0][0][0]\n    rows[0][0][0][0][0][0][0][0][0][0] = 9",
    ],
    ids=["cut-by-items", "cut-by-depth"],
)
def test_an_alias_into_what_the_rendering_left_out_is_seen(backend: str, body: str) -> None:
    # The rendering of rows leaves out (items budget, depth budget) the list `mid` shares: only the
    # "left out" mark in its ids makes the recorder re-read `mid` after the line that mutates it.
    t = call(f"def f():\n    {body}\n    return mid\n", backend=backend)
    line5 = [e for e in t["events"] if e["kind"] == "line" and e["lineno"] == 5]
    assert line5 and line5[0]["locals"].get("mid") == "[9]", t["events"][-3:]


def test_reading_a_defaultdict_held_by_an_attribute_is_a_change(backend: str) -> None:
    source = textwrap.dedent("""\
        from collections import defaultdict

        class G:
            def __init__(self):
                self.adj = defaultdict(list)

            def walk(self, u):
                for nb in self.adj[u]:
                    pass
                return len(self.adj)

        def f():
            return G().walk(1)
        """)
    t = call(source, backend=backend)
    after = [e for e in t["events"] if e["function"] == "G.walk" and e["kind"] == "line" and e["lineno"] == 10]
    assert after and after[0]["locals"].get("self") == "G(adj=defaultdict(<class 'list'>, {1: []}))", after


def test_full_locals_folds_deltas(backend: str) -> None:
    t = call("""
        def f():
            a = 1
            b = [a]
            del a
            return b
    """, backend=backend)
    states = full_locals(t["events"])
    assert states[3] == {"a": "1", "b": "[1]"}
    assert states[4] == {"b": "[1]"}


def test_tracer_failure_is_error_but_program_result_is_kept(backend: str, monkeypatch) -> None:
    from tracer import recorder

    def broken(self, act, mapping):
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(recorder.Recorder, "delta", broken)
    t = call("def f():\n    x = 2\n    return x * 21\n", backend=backend)
    assert t["status"] == "error" and "tracer bug" in t["tracer_error"]
    assert t["return_value"] == "42"
    assert sys.gettrace() is None


def test_a_program_that_leaves_the_clock_replaced(backend: str) -> None:
    # The run's wall time comes from the clock as the tracer imported it, not the program's.
    real = time.perf_counter
    try:
        t = call("import time\n\ndef f():\n    time.perf_counter = None\n    return 1\n", backend=backend)
    finally:
        time.perf_counter = real
    assert (t["status"], t["return_value"]) == ("ok", "1"), t["tracer_error"]


def test_user_code_the_tracer_reaches_cannot_raise_into_the_program(backend: str) -> None:
    # A class body's namespace from __prepare__ is the program's own mapping. A dict subclass is
    # read as a dict (its overridden methods are never called); any other mapping only through
    # its methods, and when they raise that is the tracer's failure (status error), not an
    # exception of the program, which runs on as it would untraced.
    template = textwrap.dedent("""\
        import collections.abc

        class NS(BASE):
            def __init__(self):
                self.d = {}
            def __getitem__(self, k):
                if k.startswith("__"):
                    return self.d[k]
                raise RuntimeError("boom")
            def __setitem__(self, k, v):
                self.d[k] = v
            def __delitem__(self, k):
                del self.d[k]
            def __iter__(self):
                return iter(self.d)
            def __len__(self):
                return len(self.d)
            def items(self):
                raise RuntimeError("boom")

        class Meta(type):
            @classmethod
            def __prepare__(m, name, bases):
                return NS()
            def __new__(m, name, bases, ns):
                return super().__new__(m, name, bases, dict(ns.d) if hasattr(ns, "d") else ns)

        def f():
            class C(metaclass=Meta):
                x = 1
                y = 2
            return "done"
        """)
    t = call(template.replace("BASE", "collections.abc.MutableMapping"), backend=backend)
    assert (t["status"], t["return_value"]) == ("error", "'done'")
    assert "boom" in t["tracer_error"]
    subclass = textwrap.dedent("""\
        class NS(dict):
            def __getitem__(self, k):
                if k.startswith("__"):
                    return dict.__getitem__(self, k)
                raise RuntimeError("boom")
            def items(self):
                raise RuntimeError("boom")
            def __contains__(self, k):
                raise RuntimeError("boom")
        """)
    t = call(subclass + template[template.index("class Meta"):], backend=backend)
    assert (t["status"], t["return_value"], t["tracer_error"]) == ("ok", "'done'", None)
    body = [e["locals"] for e in t["events"] if e["function"] == "f.<locals>.C"]
    assert {"x": "1"} in body, body


def test_out_of_scope_code_is_not_recorded(tmp_path: Path, backend: str) -> None:
    helper = tmp_path / "lib" / "helper.py"
    helper.parent.mkdir()
    helper.write_text("def double(x):\n    return x * 2\n")
    prog = tmp_path / "prog.py"
    prog.write_text("import json\nfrom lib.helper import double\n\ndef f():\n    return double(len(json.dumps([1])))\n")
    t = trace_call(str(prog), "f", "", backend=backend)
    assert {e["function"] for e in t["events"]} == {"f", "double"}
    t = trace_call(str(prog), "f", "", backend=backend, exclude=["*/lib/*"])
    assert {e["function"] for e in t["events"]} == {"f"}


def test_including_everything_records_the_stdlib_but_never_the_tracer(tmp_path: Path, backend: str) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent("""\
        import fractions, pathlib

        def f(n):
            p = pathlib.PurePosixPath('/tmp') / 'x'
            q = fractions.Fraction(1, n)
            return p, q
        """))
    t = trace_call(str(prog), "f", "3", backend=backend, include=["*"])
    files = {e["file"] for e in t["events"]}
    assert any("fractions" in f for f in files) and any("pathlib" in f for f in files)
    assert not [f for f in files if "/tracer/" in f]
    # The stdlib's own constructors ran in scope: their unfinished instances (self at a line of
    # __init__) are shown by their attributes, and the finished ones like their repr.
    assert t["return_value"] == "(PurePosixPath('/tmp/x'), Fraction(1, 3))"


def test_threads_are_traced(backend: str) -> None:
    t = call("""
        import threading
        def work(box):
            box.append(1)
        def f():
            box = []
            th = threading.Thread(target=work, args=(box,))
            th.start()
            th.join()
            return box
    """, backend=backend)
    work = [e for e in t["events"] if e["function"] == "work"]
    assert work and {e["thread_id"] for e in work} == {1} and work[0]["depth"] == 0


def test_threads_that_reuse_an_ended_threads_ident_get_their_own_number(backend: str) -> None:
    # CPython hands an ended thread's ident to the next thread started: six threads one after
    # the other usually share one ident, and each is a thread of its own in the trace.
    t = call("""
        import threading
        def work(i):
            return i
        def f():
            for i in range(6):
                th = threading.Thread(target=work, args=(i,))
                th.start()
                th.join()
            return 6
    """, backend=backend)
    by_thread = {}
    for e in t["events"]:
        if e["function"] == "work" and e["kind"] == "call":
            by_thread.setdefault(e["thread_id"], []).append(e["locals"]["i"])
    assert by_thread == {n: [str(n - 1)] for n in range(1, 7)}, by_thread
    assert {e["thread_id"] for e in t["events"] if e["function"] == "f"} == {0}


def test_script_mode(tmp_path: Path, backend: str) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nif sys.argv[1:] == ['bad']:\n    raise SystemExit(2)\n")
    t = trace_script(str(script), ["a"], backend=backend)
    assert t["status"] == "ok" and t["stdout"] == "['a']\n" and t["entrypoint"] is None
    assert t["events"][0]["function"] == "<module>"
    t = trace_script(str(script), ["bad"], backend=backend)
    assert t["status"] == "exception" and t["exception_type"] == "SystemExit"


def test_jsonl_escapes_lone_surrogates() -> None:
    line = dumps_utf8({"s": "ok \udcff \ud800 é"})
    assert json.loads(line.decode("utf-8"))["s"] == "ok \\xff \\ud800 é"


def test_in_process_traces_hold_valid_text_as_the_output_does(tmp_path: Path, backend: str) -> None:
    # A lone surrogate in an exception's message, or bytes that are not text on stdout, were
    # kept raw in the dict trace_call returns (not encodable as UTF-8: pyarrow, a notebook's
    # json.dumps(ensure_ascii=False) and the like failed on it); the JSON output wrote them out.
    prog = tmp_path / "prog.py"
    prog.write_text(
        "import sys\n"
        "def f():\n"
        "    sys.stdout.flush()\n"
        "    sys.stdout.buffer.write(b'out \\xff')\n"
        "    raise ValueError('bad \\ud800 text')\n"
    )
    t = trace_call(str(prog), "f", "", backend=backend)
    assert t["exception_message"] == "bad \\ud800 text"
    assert t["stdout"] == "out \\xff"
    assert [e["arg"] for e in t["events"] if e["kind"] == "exception"] == ["ValueError: bad \\ud800 text"]
    assert json.loads(dumps_utf8(t).decode("utf-8")) == json.loads(json.dumps(t))  # nothing left to escape
    assert dumps_utf8(t) == json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, cwd=str(cwd),
                          env=env, timeout=120)


def test_cli_call_and_run(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text("def f(s, n):\n    print('\\udcff'.encode('utf-8', 'surrogateescape') and 'hi')\n    return s * n\n")
    out = tmp_path / "out.jsonl"
    proc = _cli("call", str(prog), "f", "--input", "'ab', 2", "--out", str(out), "--max-events", "0",
                "--max-value-chars", "0", "--backend", "settrace", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(out.read_text(encoding="utf-8"))
    assert trace["return_value"] == "'abab'" and trace["limits"]["max_events"] == 0
    proc = _cli("call", str(prog), "f", "--input", "'c', 3", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["return_value"] for line in out.read_text().splitlines()] == ["'ccc'"]  # replaced
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint(sys.argv[1:])\n")
    proc = _cli("run", str(script), "--", "x", "--y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stdout"] == "['x', '--y']\n"


def test_cli_run_takes_options_after_the_script(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\nfor a in sys.argv[1:]:\n    print(a)\n")
    proc = _cli("run", str(script), "--backend", "settrace", "--max-events", "3", "--", "--flag", "v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert (trace["backend"], trace["n_events"], trace["truncated_reason"]) == ("settrace", 3, "max_events")
    assert trace["stdout"] == "--flag\nv\n"


def test_cli_program_writing_to_fd_1_leaves_the_json_intact(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text("import os, sys\ndef f():\n    os.write(1, b'raw\\n')\n    print('via sys')\n    return 1\n")
    proc = _cli("call", str(prog), "f", "--input", "", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)  # one JSON line, nothing else
    assert (trace["return_value"], trace["stdout"]) == ("1", "via sys\n")
    assert "raw" in proc.stderr


@pytest.mark.parametrize("stubborn", [False, True], ids=["catches-once", "catches-always"])
def test_cli_timeout_the_program_catches_is_still_a_timeout(tmp_path: Path, stubborn: bool) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(f"""\
        import time
        def f():
            while True:
                try:
                    time.sleep(30)
                except BaseException:
                    pass
                if not {stubborn}:
                    return "caught"
        """))
    proc = _cli("call", str(prog), "f", "--input", "", "--timeout", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert (trace["status"], trace["return_value"]) == ("timeout", None)
    assert trace["n_events"] > 0


def test_cli_timeout_ends_the_process_though_a_thread_of_the_program_runs_on(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent("""\
        import threading, time
        def spin():
            while True:
                time.sleep(0.01)
        def f():
            t = threading.Thread(target=spin)  # not a daemon: exit would wait for it
            t.start()
            t.join()
        """))
    proc = _cli("call", str(prog), "f", "--input", "", "--timeout", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "timeout"


def test_cli_help_and_bad_limits(tmp_path: Path) -> None:
    for sub in ("call", "run", "batch"):
        proc = _cli(sub, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "--max-events" in proc.stdout
    proc = _cli("call", "x.py", "f", "--input", "", "--max-events", "-1", cwd=tmp_path)
    assert proc.returncode != 0 and "--max-events must be >= 0" in proc.stderr


def test_cli_invalid_job_says_why_on_stderr_and_input_defaults_to_no_arguments(tmp_path: Path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text("def f():\n    return 7\n")
    out = tmp_path / "t.jsonl"
    proc = _cli("call", str(prog), "f", "--out", str(out), cwd=tmp_path)  # no --input: f()
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert json.loads(out.read_text())["return_value"] == "7"
    for args, named in (
        (("call", "nope.py", "f"), "cannot read program nope.py"),
        (("call", str(prog), "g"), "entry point 'g' is not defined"),
        (("run", "nope.py"), "cannot read program nope.py"),
    ):
        proc = _cli(*args, "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
        assert json.loads(out.read_text())["tracer_error"] in proc.stderr  # the trace says the same


def test_cli_unknown_backend_is_a_clear_error(tmp_path: Path) -> None:
    proc = _cli("call", "x.py", "f", "--input", "", "--backend", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_program_named_like_a_stdlib_module_does_not_shadow_it(tmp_path: Path, backend: str) -> None:
    prog = tmp_path / "json.py"
    prog.write_text("def f():\n    import json\n    return json.dumps([1])\n")
    t = trace_call(str(prog), "f", "", backend=backend)
    assert t["status"] == "ok" and t["return_value"] == "'[1]'"


def test_events_json_is_the_json_of_the_event_dicts() -> None:
    # Strings that JSON must escape, non-ASCII, lone surrogates, absent line numbers, deleted
    # locals: the text written straight from the tuples equals json.dumps of the dicts.
    from tracer.jsonl import text_utf8
    from tracer.recorder import Recorder
    from tracer.render import Renderer

    names = ['plain.py', 'q"uo\\te\n\t\x1f.py', 'é漢\U0001f600.py', 'undecodable\udcff.py']
    base = compile("def f():\n    pass\n", "x.py", "exec").co_consts[0]
    codes = [base.replace(co_filename=name) for name in names]
    rec = Recorder(Renderer(), lambda filename: True)
    nasty = ['', '"', '\\', '\n\r\t\b\f', '\x00\x7f', 'é', '\u2028\u2029', '\ud800', '\udc80x', "'a'"]
    for i, code in enumerate(codes * 3):
        delta = {nasty[(i + k) % len(nasty)] + str(k): (None if k == 2 else nasty[(i * 3 + k) % len(nasty)]) for k in range(i % 4)}
        arg = None if i % 3 == 0 else nasty[i % len(nasty)]
        rec.events.append(("line" if i % 2 else "call", None if i == 5 else (0 if i == 6 else i + 1), code,
                           i, i % 2, i % 5, delta if i % 7 else None, arg))
    assert text_utf8(rec.events_json()) == dumps_utf8(rec.event_dicts())
    assert json.loads(text_utf8(rec.events_json())) == json.loads(dumps_utf8(rec.event_dicts()))


@pytest.mark.parametrize("given", ["source", "file"])
def test_source_lines_are_the_compilers_lines(tmp_path: Path, backend: str, given: str) -> None:
    """Only \\n, \\r\\n and \\r end a line for the compiler: a form feed, \\x1c, \\x85 or U+2028 inside
    a line (str.splitlines breaks at them) must not shift the source text of the lines after it."""
    odd = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    line_2 = f'    s = "a\x0cb"  # {odd}'
    source = f"def f():\r{line_2}\n    t = 1\r\n    return s, t\n"
    path = tmp_path / "prog.py"
    path.write_bytes(source.encode("utf-8"))
    if given == "source":
        t = trace_call(str(path), "f", "", source=source, backend=backend)
    else:
        t = trace_call(str(path), "f", "", backend=backend)
    assert t["status"] == "ok", t["tracer_error"]
    lines = {e["lineno"]: e["source"] for e in t["events"]}
    assert lines == {1: "def f():", 2: line_2, 3: "    t = 1", 4: "    return s, t"}


def test_appends_to_a_list_over_the_character_budget_are_seen(backend: str) -> None:
    """A list longer than the character budget shows its tail: every append changes its
    rendering (a rendering cut by characters stopped changing once its head filled it)."""
    t = call("""
    def f(n):
        xs = []
        for i in range(n):
            xs.append((i, "item"))
        return len(xs)
    """, "40", backend=backend, limits=Limits(max_value_chars=100))
    shown = [e["locals"]["xs"] for e in t["events"] if "xs" in e["locals"]]
    assert len(shown) == 41 and shown[0] == "[]"
    for i, text in enumerate(shown[1:]):
        assert text.endswith(f"({i}, 'item')]") and len(text) <= 100, text
