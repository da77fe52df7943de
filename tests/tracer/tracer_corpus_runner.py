"""Run a corpus under the tracer inside one interpreter and report disagreements as JSON.

Used by the tracer tests as ``python tracer_corpus_runner.py MODE CORPUS.jsonl`` under each
CPython from pyenv (PYTHONPATH = repo root); stdlib only, so it runs on 3.8-3.13.

Modes:
  differential  every CRUXEval row under each available backend: identical events, and the
                rendered return value equals the rendering of ``eval(expected output)``.
  nochange      CRUXEval/MBPP rows traced and untraced: same result, exception and stdout.
  fullscan      CRUXEval/MBPP rows traced with the per-line bytecode analysis and with
                WORLDTRACE_FULL_SCAN semantics (every local re-rendered at every line):
                identical events, so the analysis never misses a change.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings

from tracer.api import Limits, trace_call, trace_script
from tracer.env import PYBEHAVIOR
from tracer.render import Renderer


def _backends() -> list:
    return ["settrace", "monitoring"] if PYBEHAVIOR.has_sys_monitoring else ["settrace"]


def _strip(trace: dict) -> dict:
    out = dict(trace)
    for key in ("wall_time_s", "backend", "backend_reason"):
        out.pop(key, None)
    return out


def differential(rows: list) -> dict:
    problems = []
    backends = _backends()
    renderer = Renderer()
    for row in rows:
        pid = row["id"]
        traces = {}
        for b in backends:
            traces[b] = trace_call(f"{pid}.py", "f", row["input"], source=row["code"], program_id=pid, backend=b)
        first = traces[backends[0]]
        if first["status"] != "ok":
            problems.append({"id": pid, "problem": "status", "status": first["status"],
                             "detail": first["tracer_error"] or first["exception_message"]})
        try:
            expected = renderer.render(eval(row["output"]))
        except Exception as exc:  # a row whose expected output does not evaluate here
            expected = f"<eval failed: {exc}>"
        for b in backends:
            if traces[b]["return_value"] != expected:
                problems.append({"id": pid, "problem": "return_value", "backend": b,
                                 "got": traces[b]["return_value"], "expected": expected})
        for b in backends[1:]:
            a, c = _strip(first), _strip(traces[b])
            if a != c:
                diff = [k for k in a if a[k] != c.get(k)]
                detail = None
                if "events" in diff:
                    for i, (ea, ec) in enumerate(zip(a["events"], c["events"])):
                        if ea != ec:
                            detail = {"index": i, backends[0]: ea, b: ec}
                            break
                    else:
                        detail = {"len": [len(a["events"]), len(c["events"])]}
                problems.append({"id": pid, "problem": "backends differ", "keys": diff, "detail": detail})
    return {"python": sys.version.split()[0], "backends": backends, "rows": len(rows), "problems": problems}


def _untraced_call(row: dict) -> tuple:
    ns: dict = {"__name__": "prog"}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            exec(compile(row["code"], "prog.py", "exec", dont_inherit=True), ns)
            value = eval(compile("f(" + row["input"] + "\n)", "<input>", "eval", dont_inherit=True), ns)
            outcome = ("ok", Renderer().render(value))
        except BaseException as exc:
            outcome = ("exception", type(exc).__name__)
    return outcome, buf.getvalue()


def _mbpp_script(row: dict) -> str:
    return "\n".join([row.get("test_setup_code") or "", row["code"].replace("\r\n", "\n")] + list(row["test_list"])) + "\n"


def _untraced_script(source: str) -> tuple:
    ns: dict = {"__name__": "__main__"}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            exec(compile(source, "prog.py", "exec", dont_inherit=True), ns)
            outcome = ("ok", None)
        except BaseException as exc:
            outcome = ("exception", type(exc).__name__)
    return outcome, buf.getvalue()


# Programs that take longer than this untraced are compared once, not per backend
# (their cost is their own, not the tracer's).
SLOW_S = 1.0


def nochange(rows: list) -> dict:
    problems = []
    slow = []
    limits = Limits(max_events=5000)
    for row in rows:
        is_crux = "input" in row
        pid = str(row.get("id", row.get("task_id")))
        started = time.perf_counter()
        if is_crux:
            expected, out = _untraced_call(row)
        else:
            source = _mbpp_script(row)
            expected, out = _untraced_script(source)
        backends = _backends()
        if time.perf_counter() - started > SLOW_S:
            slow.append(pid)
            backends = backends[-1:]
        for b in backends:
            if is_crux:
                t = trace_call(f"prog_{pid}.py", "f", row["input"], source=row["code"], backend=b, limits=limits)
                got = (t["status"], t["return_value"] if t["status"] == "ok" else t["exception_type"])
            else:
                t = trace_script(f"prog_{pid}.py", source=source, backend=b, limits=limits)
                got = (t["status"], None if t["status"] == "ok" else t["exception_type"])
            if got != expected or t["stdout"] != out:
                problems.append({"id": pid, "backend": b, "traced": list(got), "untraced": list(expected),
                                 "stdout_same": t["stdout"] == out, "tracer_error": t["tracer_error"]})
    return {"python": sys.version.split()[0], "backends": _backends(), "rows": len(rows), "problems": problems,
            "slow": slow}


def fullscan(rows: list) -> dict:
    from tracer import recorder

    problems = []
    limits = Limits(max_events=3000)
    for row in rows:
        is_crux = "input" in row
        pid = str(row.get("id", row.get("task_id")))
        traces = []
        for full in (False, True):
            recorder.FULL_SCAN = full
            try:
                if is_crux:
                    t = trace_call(f"fs_{pid}.py", "f", row["input"], source=row["code"], limits=limits)
                else:
                    t = trace_script(f"fs_{pid}.py", source=_mbpp_script(row), limits=limits)
            finally:
                recorder.FULL_SCAN = False
            traces.append(t["events"])
        if traces[0] != traces[1]:
            for i, (a, b) in enumerate(zip(traces[0], traces[1])):
                if a != b:
                    problems.append({"id": pid, "index": i, "analysed": a, "full_scan": b})
                    break
            else:
                problems.append({"id": pid, "lengths": [len(traces[0]), len(traces[1])]})
    return {"python": sys.version.split()[0], "rows": len(rows), "problems": problems}


def main() -> None:
    warnings.simplefilter("ignore")  # the corpora's own SyntaxWarnings etc. are not under test
    mode, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if len(sys.argv) > 3:
        rows = rows[: int(sys.argv[3])]
    report = {"differential": differential, "nochange": nochange, "fullscan": fullscan}[mode](rows)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
