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


def check(backend: str) -> dict:
    failures = {}
    retrace = check_retrace(backend)
    if retrace:
        failures["retrace_after_truncation"] = retrace
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
