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

from tracer.api import trace_call, trace_script  # noqa: E402

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


def check(backend: str) -> dict:
    failures = {}
    for case in CASES:
        trace = trace_call(case["name"] + ".py", case["entry"], case["input"], source=case["source"], backend=backend)
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
