"""What an inline (bytecode-instrumentation) recorder could cost, next to the monitoring backend.

The tracer's issue sets, for the monitoring backend on 3.13, a median of 15x untraced. This
benchmark measures the two floors that decide whether any design gets there, side by side in one
run, on three of benchmarks/tracer_workloads.py's workloads:

* ``inline``: the workload written out by hand the way an instrumenting backend would rewrite its
  code: before every line, one tuple appended to a buffer, holding the line's number and the
  values the previous line stored (references, not renderings), and for a subscript store or an
  ``append`` on a list the operation itself (so the list's state can be replayed later instead of
  being copied). No callback, no frame lookup, no rendering: what the interpreter itself would run
  if a backend inserted those instructions (``LOAD_CONST append; LOAD_FAST ...; BUILD_TUPLE;
  CALL``). It is a floor for the recording while the program runs, not a recorder: the values are
  rendered later, at the same cost as now;
* ``monitoring``: worldtrace's monitoring backend, recording and the JSON text of the events (what
  the batch child writes), and ``encode``, the JSON text alone (``Recorder.events_json`` on the
  recorded events): work that every design has to do per event in pure Python once the program
  has run; and ``columns``, the cheapest serialisation of the same events we found: the buffered
  tuples zipped into columns (code objects as ids) and written by ``marshal``, all in C, no
  per-event Python code. It is a floor for any format, not the stream's: its bytes would still
  have to become the documented JSON Lines (or Arrow) somewhere.

    python benchmarks/inline_floor.py          # under the interpreter to measure (3.12+)
"""

from __future__ import annotations

import argparse
import gc
import marshal
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tracer_workloads import WORKLOADS_SOURCE  # noqa: E402  (beside this script)

# Each workload of tracer_workloads.py, instrumented by hand: R is the buffer's append.
INSTRUMENTED = '''
def fib(n, R):
    R((0, n))
    R((2,))
    if n < 2:
        R((3,))
        R((-1, n))
        return n
    R((4,))
    r = fib(n - 1, R) + fib(n - 2, R)
    R((-1, r))
    return r


def sieve(n, R):
    R((1, n))
    flags = [True] * (n + 1)
    R((2, flags, len(flags)))
    primes = []
    R((3, primes))
    for i in range(2, n + 1):
        R((4, i))
        if flags[i]:
            R((5,))
            primes.append(i)
            R((6, primes, "append", i))
            for k in range(i * i, n + 1, i):
                R((7, k))
                flags[k] = False
                R((6, flags, k, False))
    r = len(primes)
    R((-1, r))
    return r


def collatz(n, R):
    R((1, n))
    longest = 0
    R((2, longest))
    for start in range(1, n):
        R((3, start))
        x = start
        R((4, x))
        steps = 0
        R((5, steps))
        while x != 1:
            R((6,))
            x = x // 2 if x % 2 == 0 else 3 * x + 1
            R((7, x))
            steps += 1
            R((5, steps))
        R((8,))
        longest = max(longest, steps)
        R((2, longest))
    R((-1, longest))
    return longest
'''

WORKLOADS = [("fib", 17), ("sieve", 2000), ("collatz", 200)]
REPS = 15


def _best(fn, reps: int = REPS) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    if sys.version_info < (3, 12):
        sys.exit("inline_floor.py compares with the monitoring backend: run it under Python 3.12+")
    folder = tempfile.mkdtemp(prefix="wt-inline-")
    path = os.path.join(folder, "workloads.py")
    with open(path, "w") as f:
        f.write(WORKLOADS_SOURCE)
    plain: dict = {}
    exec(compile(WORKLOADS_SOURCE, path, "exec"), plain)
    inline: dict = {}
    exec(compile(INSTRUMENTED, os.path.join(folder, "instrumented.py"), "exec"), inline)

    print(f"Python {sys.version.split()[0]}: ratios to the untraced workload, CPU time, fastest of {REPS}")
    print(f"  {'workload':10} {'untraced ms':>11} {'events':>7} {'records':>7} {'inline':>8} {'monitoring':>10} {'encode':>8} {'columns':>8}")
    for name, arg in WORKLOADS:
        row = _measure(path, plain[name], inline[name], arg)
        print(f"  {name:10} {row['untraced'] * 1e3:11.3f} {row['events']:7d} {row['records']:7d} "
              + " ".join(f"{row[k] / row['untraced']:{w}.1f}x" for k, w in
                         (("inline", 7), ("monitoring", 9), ("encode", 7), ("columns", 7))))
    print("  inline: one tuple appended per line (values by reference); monitoring: the backend's recording and\n"
          "  the events' JSON text; encode: that JSON text alone; columns: the events zipped into columns and\n"
          "  marshalled, in C")


def _measure(path: str, fn, fn_inline, arg) -> dict:
    """Fastest CPU seconds of the workload untraced, inline-recorded and traced, interleaved
    round by round (load changes on a shared machine hit all alike), and of the encodings."""
    from tracer.backends.monitoring import MonitoringBackend
    from tracer.recorder import Recorder
    from tracer.render import Renderer
    from tracer.scope import Scope

    assert fn_inline(arg, [].append) == fn(arg)
    last: dict = {}

    def run_inline() -> None:
        buf: list = []
        fn_inline(arg, buf.append)
        last["buffer"] = buf

    def run_monitoring() -> None:
        rec = Recorder(Renderer(), Scope(path), max_events=0)
        backend = MonitoringBackend(rec)
        backend.start()
        try:
            fn(arg)
        finally:
            backend.stop()
        rec.events_json()
        last["recorder"] = rec

    best = dict.fromkeys(("untraced", "inline", "monitoring"), float("inf"))
    for _ in range(REPS):
        best["untraced"] = min(best["untraced"], _best(lambda: fn(arg), 3))
        best["inline"] = min(best["inline"], _best(run_inline, 1))
        best["monitoring"] = min(best["monitoring"], _best(run_monitoring, 1))
    rec = last["recorder"]
    assert rec.error is None, rec.error
    best["encode"] = _best(rec.events_json)
    best["columns"] = _best(lambda: _columns(rec.events))
    return {**best, "events": len(rec.events), "records": len(last["buffer"])}


def _columns(events: list) -> bytes:
    kinds, linenos, codes, fids, tids, depths, deltas, args = zip(*events)
    return marshal.dumps((kinds, linenos, list(map(id, codes)), fids, tids, depths, deltas, args))


if __name__ == "__main__":
    main()
