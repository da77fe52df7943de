"""What the program does while the tracer is at work: its signal handlers' exceptions reach it,
and a trace that lost events (the program replaced the trace function, the recursion limit hit a
callback) says so. Run under every pyenv CPython with each backend it has."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from tracer_testutil import backends_for, pyenv_pythons, run_in

PYTHONS = pyenv_pythons()
COMBOS = [(v, b) for v in sorted(PYTHONS) for b in backends_for(v)]
pytestmark = pytest.mark.skipif(not COMBOS, reason="no CPython 3.8-3.13 found by pyenv")

# A signal handler raises an ordinary exception; it almost always fires inside a tracer callback
# (that is where a traced program spends its time). Before: swallowed as a tracer failure, and
# the program spun forever.
SIGNAL = """\
    import signal

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm()

    def spin():
        n = 0
        while True:
            n += 1

    def f(x):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            spin()
        except Alarm:
            return "caught", x
    """

RECURSION = """\
    def r(n):
        return r(n + 1)

    def f(x):
        try:
            r(0)
        except RecursionError:
            out = "RE"
        return out, x + 1
    """

RECURSION_RENDERING = """\
    def r(n, acc):
        acc = acc + [n, {"k": [n]}]
        return r(n + 1, acc[-3:])

    def pad(k):
        if k:
            return pad(k - 1)
        try:
            r(0, [])
        except RecursionError:
            return "RE"

    def f(x):
        return pad(PAD)
    """

SETTRACE_OFF = """\
    import sys

    def g(x):
        return x * 2

    def f(x):
        sys.settrace(None)
        a = g(x)
        return a + 1
    """


def _trace(version: str, backend: str, source: str, tmp_path: Path) -> dict:
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(source))
    try:
        proc = run_in(PYTHONS[version], "-m", "tracer", "call", str(prog), "f", "--input", "1", "--backend", backend,
                      timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the traced program did not finish (an exception meant for it was swallowed?)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("version, backend", COMBOS, ids=[f"{v}-{b}" for v, b in COMBOS])
def test_a_signal_handlers_exception_reaches_the_program(version: str, backend: str, tmp_path: Path) -> None:
    trace = _trace(version, backend, SIGNAL, tmp_path)
    assert (trace["status"], trace["return_value"], trace["tracer_error"]) == ("ok", "('caught', 1)", None)
    # Where the exception arrived inside a callback, recording stopped there and the trace says so
    # (between two callbacks, in the program's own code, it is an ordinary exception: complete).
    assert trace["truncated_reason"] in ("interrupted", "events_lost", None)
    assert trace["events"][-1]["kind"] == "return" or trace["truncated"]


@pytest.mark.parametrize("version, backend", COMBOS, ids=[f"{v}-{b}" for v, b in COMBOS])
def test_events_lost_at_the_recursion_limit_are_flagged(version: str, backend: str, tmp_path: Path) -> None:
    trace = _trace(version, backend, RECURSION, tmp_path)
    assert (trace["status"], trace["return_value"]) == ("ok", "('RE', 2)")
    assert trace["truncated"] and trace["truncated_reason"] == "events_lost"
    assert trace["tracer_error"] is None


@pytest.mark.parametrize("version, backend", COMBOS, ids=[f"{v}-{b}" for v, b in COMBOS])
def test_a_recursion_error_inside_a_callback_goes_to_the_program(version: str, backend: str, tmp_path: Path) -> None:
    """Wherever the limit is hit in the tracer's own code (rendering a list, at several depths),
    the program gets its RecursionError, as untraced: neither swallowed (on 3.8 the program then
    recursed on into "Cannot recover from stack overflow") nor an opaque rendering."""
    for pad in range(4):
        trace = _trace(version, backend, RECURSION_RENDERING.replace("PAD", str(pad)), tmp_path)
        assert (trace["status"], trace["return_value"], trace["tracer_error"]) == ("ok", "'RE'", None)
        assert trace["truncated_reason"] == "events_lost"
        rendered = [v for e in trace["events"] for v in (e["locals"] or {}).values() if v]
        assert not any(v.endswith(" object>") for v in rendered)


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_a_program_that_turns_settrace_off_gets_a_flagged_trace(version: str, tmp_path: Path) -> None:
    trace = _trace(version, "settrace", SETTRACE_OFF, tmp_path)
    assert (trace["status"], trace["return_value"]) == ("ok", "3")
    assert trace["truncated"] and trace["truncated_reason"] == "events_lost"
