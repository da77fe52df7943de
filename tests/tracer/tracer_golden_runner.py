"""Run the tracer test programs / behaviour cases inside one interpreter; print JSON.

``python tracer_golden_runner.py golden BACKEND`` prints ``{name: normalised trace}`` for every
program in programs/; ``python tracer_golden_runner.py check BACKEND`` prints the failures of the
behaviour cases in tracer_cases.py. Stdlib only (runs under CPython 3.8-3.13 with
PYTHONPATH = repo root), so the tests can drive it under every pyenv interpreter.
"""

from __future__ import annotations

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tracer_cases import CASES, check_case  # noqa: E402

from tracer.api import Limits, trace_call, trace_script  # noqa: E402

PROGRAMS = [
    ("comprehensions", "main", "4"),
    ("generators", "main", ""),
    ("exceptions", "main", "['1', 'x', '3']"),
    ("objects", "main", ""),
    ("recursion", "main", "4"),
    ("threads", "main", ""),
    ("coroutines", "main", "2"),
    ("values", "main", ""),
    ("control_flow", "main", "3"),
    ("script_mode", None, ["alpha", "beta"]),
]

VOLATILE = ("wall_time_s", "python_version", "tracer_version", "backend", "backend_reason")
# Thread objects carry OS thread ids in their instance dict.
_THREAD_IDS = re.compile(r"(_ident|_native_id)=\d+")


def normalise(trace: dict) -> dict:
    """Drop what varies between runs and machines (times, versions, absolute paths)."""
    out = {k: v for k, v in trace.items() if k not in VOLATILE}
    events = []
    for e in trace["events"]:
        e = dict(e)
        e["file"] = os.path.basename(e["file"])
        e["locals"] = {k: (_THREAD_IDS.sub(r"\1=N", v) if v else v) for k, v in e["locals"].items()}
        events.append(e)
    out["events"] = events
    return out


def golden(backend: str) -> dict:
    results = {}
    for name, entry, arg in PROGRAMS:
        path = os.path.join(HERE, "programs", name + ".py")
        if entry is None:
            trace = trace_script(path, arg, backend=backend)
        else:
            trace = trace_call(path, entry, arg, backend=backend)
        results[name] = normalise(trace)
    return results


def _trace_function(fn, arg, backend: str, max_events: int, include=()) -> list:
    """Events of ``fn(arg)`` traced in this process (the same code object every time)."""
    from tracer.backends.select import choose_backend
    from tracer.recorder import Recorder
    from tracer.render import Renderer
    from tracer.scope import Scope

    rec = Recorder(Renderer(), Scope(fn.__code__.co_filename, include), max_events)
    tracer = choose_backend(backend)[0](rec)
    tracer.start()
    try:
        fn(arg)
    finally:
        tracer.stop()
    return rec.event_dicts()


def check_retrace(backend: str) -> list:
    """The same function traced again after a trace of it stopped early: complete again (the
    backend must re-enable what it switched off when the first trace stopped)."""
    source = "def f(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n"
    namespace: dict = {}
    exec(compile(source, os.path.join(HERE, "retrace_program.py"), "exec"), namespace)
    fn = namespace["f"]
    complete = _trace_function(fn, 10, backend, 0)
    cut = _trace_function(fn, 10, backend, 6)
    again = _trace_function(fn, 10, backend, 0)
    problems = []
    if len(cut) != 6:
        problems.append(f"the cut trace has {len(cut)} events, not 6")
    if again != complete:
        problems.append(f"retraced: {len(again)} events, first trace: {len(complete)}")
    # Code left out of one trace's scope (its events switched off) is in the next one's.
    helper: dict = {}
    exec(compile("def g(x):\n    return x + 1\n", "/elsewhere/helper_program.py", "exec"), helper)
    namespace["g"] = helper["g"]
    exec(compile("def h(n):\n    return g(n)\n", os.path.join(HERE, "retrace_program.py"), "exec"), namespace)
    without = _trace_function(namespace["h"], 1, backend, 0)
    with_g = _trace_function(namespace["h"], 1, backend, 0, include=("/elsewhere/*",))
    functions = [e["function"] for e in with_g if e["kind"] == "call"]
    if [e["function"] for e in without if e["kind"] == "call"] != ["h"] or functions != ["h", "g"]:
        problems.append(f"calls with g out of scope, then in: {functions!r}")
    return problems


# A program that replaces builtins while it runs (as a test suite's monkeypatch does) with spies
# that log each call: the recorder keeps the builtins it was imported with (tracer/_builtins.py),
# so the program sees only its own calls, traced exactly as untraced.
PATCHED_BUILTINS_SOURCE = """\
import builtins
import dataclasses
import enum
from collections import deque, namedtuple
from fractions import Fraction

Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Color(enum.Enum):
    RED = 1

PATCHED = ("__import__", "isinstance", "issubclass", "len", "repr", "type", "id", "getattr",
           "hasattr", "iter", "next", "str", "sorted", "hash", "callable", "vars", "min", "max",
           "print", "open", "dict", "list", "tuple", "set", "frozenset", "int", "object")


def f(xs):
    saved = dict(builtins.__dict__)
    seen = []

    def spy(name):
        real = saved[name]

        def fake(*args, **kwargs):
            seen.append(name)
            if seen.__len__() > 100:
                raise RuntimeError("something other than the program called its builtins")
            return real(*args, **kwargs)
        return fake
    for name in PATCHED:
        setattr(builtins, name, spy(name))
    try:
        xs.append(len(xs))
        table = {"xs": xs, "n": len(xs)}
        import json
        text = repr(table)
        values = [Point(1, 2), Color.RED, ValueError("bad", 3), Fraction(1, 3), deque([1]), Pair(1, 2)]
        values.append(i for i in xs)
    finally:
        builtins.__dict__.update(saved)
    return seen, text
"""


def check_patched_builtins(backend: str) -> list:
    namespace: dict = {}
    exec(compile(PATCHED_BUILTINS_SOURCE, "patched_builtins.py", "exec"), namespace)
    seen, _ = result = namespace["f"]([1])
    untraced = repr(result)
    trace = trace_call("patched_builtins.py", "f", "[1]", source=PATCHED_BUILTINS_SOURCE, backend=backend)
    problems = []
    if trace["status"] != "ok" or trace["return_value"] != untraced:
        problems.append(f"traced: {trace['status']} {trace['return_value']!r} ({trace['tracer_error']}), "
                        f"untraced: {untraced!r}")
    fakes = sum(1 for e in trace["events"] if e["kind"] == "call" and e["function"].endswith("fake"))
    if fakes != len(seen):  # the program's own calls (its own and its constructors')
        problems.append(f"{fakes} calls of the spies recorded, the program made {len(seen)}")
    return problems


def check(backend: str) -> dict:
    failures = {}
    retrace = check_retrace(backend)
    if retrace:
        failures["retrace_after_truncation"] = retrace
    patched = check_patched_builtins(backend)
    if patched:
        failures["program_patches_builtins"] = patched
    for case in CASES:
        limits = Limits(max_events=case["max_events"]) if "max_events" in case else None
        trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"], backend=backend,
                           limits=limits)
        problems = check_case(case, trace)
        if problems:
            failures[case["name"]] = problems
    return failures


def main() -> None:
    mode, backend = sys.argv[1], sys.argv[2]
    result = golden(backend) if mode == "golden" else check(backend)
    sys.stdout.write(json.dumps(result, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
