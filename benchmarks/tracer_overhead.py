"""Tracer overhead: traced/untraced time per workload, backend and Python version.

Run: ``python benchmarks/tracer_overhead.py [--pythons 3.12,3.13] [--newer-pythons] [--reps N] [--quick]``

For every CPython 3.8-3.13 that pyenv lists (plus the running interpreter, and with
``--newer-pythons`` 3.14 and 3.15 in the catalog images base-py314/base-py315, through
``docker run``: the process time measured is the container's own), a child
process times seven small CPU-bound workloads untraced and traced, side by side, and
prints the ratio traced/untraced for:

* ``monitoring`` / ``settrace``: worldtrace's backends (complete traces, default budgets,
  events converted to the stream's dicts, i.e. what ``trace_call`` returns);
* ``mon-record``: the monitoring backend while the program runs, events still buffered
  (the conversion to dicts is the difference to ``monitoring``);
* ``mon-floor``: sys.monitoring callbacks that do nothing, on the same code objects: what
  any recorder built on sys.monitoring pays before it records anything;
* ``plain-settrace``: a minimal settrace recorder that ``repr()``s every local at every line;
* ``pysnooper`` and ``hunter`` (hunter's VarsSnooper) where they are importable (the host
  venv, 3.11), as recorders of line-level locals;
* ``out-of-scope``: the workload, 20 times in one trace, called from traced code but itself
  outside the scope (the fixed cost of one trace is printed apart, below the table).

Times are CPU time of the measuring process (``time.process_time``), the fastest of repeated
runs (on a shared machine other jobs only ever add time: the minimum is the steadiest estimate,
as ``timeit`` does), with the untraced runs and worldtrace's recorders interleaved round by round
so that load changes hit them alike; the summary rows take the median/geomean/max across
workloads.

Stdlib only in the child (peers are optional), so it runs under any 3.8-3.15.
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from tracer_workloads import WORKLOADS_SOURCE  # beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The in-scope copy of the workloads lives in its own temporary folder (the scope is the
# program's file and its folder); the out-of-scope copy in another one.
WORKDIR = tempfile.mkdtemp(prefix="wt-bench-")
WORKLOADS_FILE = os.path.join(WORKDIR, "inscope", "workloads.py")
OUTSIDE_FILE = os.path.join(WORKDIR, "outside", "workloads.py")

WORKLOADS = [
    ("fib", 17),
    ("bubble_sort", 60),
    ("word_count", 300),
    ("sieve", 2000),
    ("matmul", 12),
    ("string_build", 3000),
    ("collatz", 200),
]


PEERS = ("plain-settrace", "pysnooper", "hunter")
OUT_OF_SCOPE_REPEAT = 20


def _repeat(fn, arg, times: int, _ignored=None) -> None:
    for _ in range(times):
        fn(arg)
PEER_CAP_S = 20.0

# -- the child: time everything inside one interpreter ------------------------------------


def _load(path: str, source: str) -> dict:
    import linecache

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(source)
    linecache.checkcache(path)
    namespace: dict = {"__name__": os.path.basename(path)[:-3]}
    exec(compile(source, path, "exec", dont_inherit=True), namespace)
    return namespace


# CPU time of this process, not wall time: on a shared machine a long traced run is
# preempted far more often than a sub-millisecond untraced one, which would inflate ratios.
_clock = time.process_time


class _Overrun(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Overrun()


def _time(fn, reps: int, cap_s: float = 0) -> float:
    """Fastest CPU time of ``reps`` calls; with ``cap_s``, one call stops at the cap and its
    elapsed time is returned negated (a lower bound: the table prints it as ">N")."""
    samples = []
    for _ in range(reps):
        gc.collect()  # every run starts from the same collector state, whatever ran before
        t0 = _clock()
        if cap_s:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, cap_s)
            try:
                fn()
            except _Overrun:
                sys.settrace(None)
                return -(_clock() - t0)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            fn()
        samples.append(_clock() - t0)
    return min(samples)


def _floor_runner(program_file: str):
    """The floor of any sys.monitoring recorder: PY_START/LINE/PY_RETURN callbacks that do
    nothing, enabled on the in-scope code objects only (3.12+)."""
    mon = sys.monitoring
    ev = mon.events

    def start(code, offset):
        if code.co_filename != program_file:
            return mon.DISABLE
        mon.set_local_events(4, code, ev.LINE | ev.PY_RETURN)
        return None

    def run(fn, arg):
        mon.use_tool_id(4, "floor")
        mon.register_callback(4, ev.PY_START, start)
        mon.register_callback(4, ev.LINE, lambda code, line: None)
        mon.register_callback(4, ev.PY_RETURN, lambda code, offset, value: None)
        mon.set_events(4, ev.PY_START)
        try:
            fn(arg)
        finally:
            mon.set_events(4, 0)
            mon.set_local_events(4, fn.__code__, 0)
            mon.free_tool_id(4)
            mon.restart_events()
        return 0

    return run


def _worldtrace_runner(backend_name: str, program_file: str, convert: bool = True):
    from tracer.backends.select import choose_backend
    from tracer.recorder import Recorder
    from tracer.render import Renderer
    from tracer.scope import Scope

    backend_cls, _ = choose_backend(backend_name)

    def run(fn, arg):
        rec = Recorder(Renderer(), Scope(program_file), max_events=0)
        b = backend_cls(rec)
        b.start()
        try:
            fn(arg)
        finally:
            b.stop()
        assert rec.error is None, rec.error
        return len(rec.event_dicts()) if convert else len(rec.events)

    return run


def _plain_settrace_runner(program_file: str):
    def run(fn, arg):
        records = []

        def local(frame, event, a):
            records.append((event, frame.f_lineno, [(k, repr(v)) for k, v in frame.f_locals.items()]))
            return local

        def glob(frame, event, a):
            if frame.f_code.co_filename == program_file:
                return local(frame, event, a)
            return None

        sys.settrace(glob)
        try:
            fn(arg)
        finally:
            sys.settrace(None)
        return len(records)

    return run


def _pysnooper_runner():
    try:
        import pysnooper
    except ImportError:
        return None

    def run(fn, arg):
        sink = io.StringIO()
        snooped = pysnooper.snoop(output=sink, depth=1, color=False)(fn)
        # Recursive workloads call the undecorated global: patch it for the run.
        g = fn.__globals__
        g[fn.__name__] = snooped
        try:
            snooped(arg)
        finally:
            g[fn.__name__] = fn
        return sink.tell()

    return run


def _hunter_runner(program_file: str):
    try:
        import hunter
    except ImportError:
        return None

    def run(fn, arg):
        sink = io.StringIO()
        hunter.trace(hunter.Q(filename=program_file, action=hunter.VarsSnooper(stream=sink)))
        try:
            fn(arg)
        finally:
            hunter.stop()
        return sink.tell()

    return run


def child(reps: int, peer_reps: int) -> dict:
    sys.path.insert(0, REPO)
    from tracer.env import PYBEHAVIOR, PYTHON_VERSION

    ns = _load(WORKLOADS_FILE, WORKLOADS_SOURCE)
    outside = _load(OUTSIDE_FILE, WORKLOADS_SOURCE)
    recorders = {}
    if PYBEHAVIOR.has_sys_monitoring:
        recorders["monitoring"] = (_worldtrace_runner("monitoring", WORKLOADS_FILE), reps)
        recorders["mon-record"] = (_worldtrace_runner("monitoring", WORKLOADS_FILE, convert=False), reps)
        recorders["mon-floor"] = (_floor_runner(WORKLOADS_FILE), reps)
    recorders["settrace"] = (_worldtrace_runner("settrace", WORKLOADS_FILE), reps)
    recorders["plain-settrace"] = (_plain_settrace_runner(WORKLOADS_FILE), peer_reps)
    notes = []
    for name, factory in (("pysnooper", _pysnooper_runner), ("hunter", lambda: _hunter_runner(WORKLOADS_FILE))):
        runner = factory()
        if runner is None:
            notes.append(f"{name} not installed for Python {PYTHON_VERSION}: skipped")
        else:
            recorders[name] = (runner, peer_reps)
    results: dict = {}
    for wl, arg in WORKLOADS:
        fn = ns[wl]
        out_fn = outside[wl]
        # worldtrace's own recorders and the untraced runs are interleaved, round by round,
        # so that a change in the machine's load hits them alike; each keeps its fastest run.
        # Out of scope: the same workload compiled from a file outside the scope, which the
        # backends must leave (nearly) alone.
        # The out-of-scope runs repeat the workload OUT_OF_SCOPE_REPEAT times inside one
        # trace, so that they measure how fast code outside the scope runs, not the fixed
        # cost of starting and stopping a trace (printed apart, below the table).
        ours = [n for n in recorders if n not in PEERS]
        out_many = functools.partial(_repeat, out_fn, arg, OUT_OF_SCOPE_REPEAT)
        timed = {("in", n): functools.partial(recorders[n][0], fn, arg) for n in ours}
        timed.update({("out", n): functools.partial(recorders[n][0], out_many, None)
                      for n in ("monitoring", "settrace") if n in recorders})
        best = {key: float("inf") for key in timed}
        base = out_base = float("inf")
        for _ in range(reps):
            base = min(base, _time(functools.partial(fn, arg), 4))
            out_base = min(out_base, _time(functools.partial(out_many, None), 2))
            for key, call in timed.items():
                best[key] = min(best[key], _time(call, 1))
        row = {"untraced_s": base}
        for name, (runner, n) in recorders.items():
            if name in PEERS:
                # The peers can be 10,000x slower: cap them (the ratio is then a lower bound).
                row[name] = _time(functools.partial(runner, fn, arg), n, PEER_CAP_S) / base
            else:
                row[name] = best[("in", name)] / base
        for name in ("monitoring", "settrace"):
            if ("out", name) in best:
                row["out-of-scope/" + name] = best[("out", name)] / out_base
        results[wl] = row
    for name in ("monitoring", "settrace"):
        if name in recorders:
            empty = min(_time(functools.partial(recorders[name][0], outside["fib"], 0), 1) for _ in range(reps * 3))
            notes.append(f"fixed cost of one {name} trace (start, stop, result) in this process: {empty * 1e6:.0f} us")
    shutil.rmtree(WORKDIR, ignore_errors=True)
    return {"python": PYTHON_VERSION, "results": results, "notes": notes}


# -- the parent: one child per interpreter, then a table ---------------------------------


def _pythons(selected: str | None, newer: bool) -> dict:
    found = {}
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    versions = os.path.join(root, "versions")
    if os.path.isdir(versions):
        for entry in sorted(os.listdir(versions)):
            parts = entry.split(".")
            if len(parts) >= 2 and parts[0] == "3" and parts[1].isdigit() and 8 <= int(parts[1]) <= 13:
                exe = os.path.join(versions, entry, "bin", f"python3.{parts[1]}")
                if os.path.exists(exe):
                    found[f"3.{parts[1]}"] = exe
    here = "{}.{}".format(*sys.version_info[:2])
    found[here] = sys.executable  # the running interpreter (e.g. the venv with the peers)
    if newer:
        from images.interpreter import NEWER_PYTHONS, image_python

        for version, image in NEWER_PYTHONS.items():
            if not selected or version in selected.split(","):
                found[version] = str(image_python(image, read_only=[REPO], writable=[tempfile.gettempdir()]))
    if selected:
        wanted = set(selected.split(","))
        found = {v: p for v, p in found.items() if v in wanted}
    return dict(sorted(found.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))))


def _cell(ratio: float) -> str:
    """A ratio column; negative ratios are lower bounds (the run hit the peer cap)."""
    if ratio < 0:
        return " " + f">{-ratio:.0f}x".rjust(16)
    return f" {ratio:15.1f}x"


def _geomean(values: list) -> float:
    import math

    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pythons", help="comma-separated versions, e.g. 3.12,3.13 (default: all found)")
    parser.add_argument("--newer-pythons", action="store_true",
                        help="also CPython 3.14 and 3.15 of the images base-py314/base-py315 (needs Docker)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per traced measurement")
    parser.add_argument("--peer-reps", type=int, default=1, help="repetitions for the slow peers")
    parser.add_argument("--quick", action="store_true", help="reps=3 (a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.reps = 3
    if args.child:
        sys.stdout.write(json.dumps(child(args.reps, args.peer_reps)) + "\n")
        return 0
    reports = []
    for version, exe in _pythons(args.pythons, args.newer_pythons).items():
        env = dict(os.environ, PYTHONPATH=REPO)
        proc = subprocess.run(
            [exe, os.path.abspath(__file__), "--child", "--reps", str(args.reps), "--peer-reps", str(args.peer_reps)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            print(f"Python {version}: benchmark failed:\n{proc.stderr[-2000:]}")
            continue
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for rep in reports:
        results = rep["results"]
        columns = [c for c in next(iter(results.values())) if c != "untraced_s"]
        print(f"\nPython {rep['python']}  (traced/untraced per workload, fastest of the repetitions; untraced in ms)")
        print(f"  {'workload':<14} {'untraced':>9}" + "".join(f" {c[:16]:>16}" for c in columns))
        for wl, row in results.items():
            print(f"  {wl:<14} {row['untraced_s'] * 1000:9.2f}" + "".join(_cell(row[c]) for c in columns))
        summaries = (
            ("median", lambda vals: statistics.median(vals)),
            ("geomean", _geomean),
            ("max", max),
        )
        for label, fn in summaries:
            cells = []
            for c in columns:
                vals = [r[c] for r in results.values()]
                bound = any(v < 0 for v in vals)
                value = fn([abs(v) for v in vals])
                cells.append(_cell(-value if bound else value))
            print(f"  {label:<14} {'':>9}" + "".join(cells))
        for note in rep["notes"]:
            print("  note: " + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
