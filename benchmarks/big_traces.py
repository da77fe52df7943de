"""What the pipeline around the tracer costs for big traces (tens of thousands of events each).

Prints, for one program whose trace has tens of thousands of events, measured in one run on this machine:
- the traced call in-process (`trace_call(events_as_json=True)`: recording and the JSON text),
- the batch runner (`python -m tracer batch`): CPU per program of the forked child and of the
  runner (with its fork server), from the run record,
- the host side of a unit: reading the runner's stream and writing the Parquet shard,
and each as a ratio to the in-process traced call (the tracer's own work).

    .venv/bin/python benchmarks/big_traces.py [--programs 12] [--n 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tracer_workloads import WORKLOADS_SOURCE  # noqa: E402  (beside this script)

# The benchmark's own workloads (benchmarks/tracer_workloads.py), fib and sieve in one call.
SOURCE = WORKLOADS_SOURCE + "\n\ndef f(n):\n    return fib(n) + sieve(400 * n)\n"


def in_process(n: int, reps: int) -> tuple[float, int]:
    """Fastest CPU seconds of one traced call in this process, and its event count."""
    from tracer.api import trace_call

    best, events = float("inf"), 0
    for _ in range(reps):
        t0 = time.process_time()
        trace = trace_call("big.py", "f", str(n), source=SOURCE, events_as_json=True)
        best = min(best, time.process_time() - t0)
        events = trace["n_events"]
    return best, events


def batch(folder: Path, programs: int, n: int) -> tuple[dict, Path]:
    jobs, out = folder / "jobs.jsonl", folder / "stream.jsonl"
    with jobs.open("w") as f:
        for i in range(programs):
            f.write(json.dumps({"program_id": f"big{i}", "source": SOURCE, "entrypoint": "f", "input": str(n)}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "tracer", "batch", str(jobs), "--out", str(out), "--timeout", "120"]
    subprocess.run(cmd, check=True, env=env, cwd=folder)
    with open(f"{out}.runs.jsonl") as f:
        record = json.loads(f.readlines()[-1])
    return record, out


def host_side(folder: Path, stream: Path, programs: int) -> float:
    """CPU seconds per trace to read the stream and write the shard, as a unit does."""
    import pyarrow as pa

    from harvest.inputs import Program
    from harvest.plan import HarvestSettings, plan_units
    from harvest.shard_io import write_unit_shard
    from harvest.unit import gc_paused, read_stream, unique_rows

    pa.array([0])  # pyarrow imports pandas on its first array: a per-process cost, not per trace
    ids = [row["program_id"] for row in read_stream(stream)]
    unit = plan_units([Program(program_id=i, mode="call", source=SOURCE, entrypoint="f", input="") for i in ids],
                      HarvestSettings(image="local", sandbox="local", programs_per_unit=len(ids)))[0]
    t0 = time.process_time()
    with gc_paused():
        write_unit_shard(folder / "shards", unit, unique_rows(stream))
    return (time.process_time() - t0) / programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=12, help="programs in the batch")
    parser.add_argument("--n", type=int, default=12, help="the program's argument (the trace grows with it)")
    parser.add_argument("--reps", type=int, default=5, help="in-process repetitions (fastest kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wt-big-") as tmp:
        folder = Path(tmp)
        (folder / "shards").mkdir()
        traced, events = in_process(args.n, args.reps)
        record, stream = batch(folder, args.programs, args.n)
        host = host_side(folder, stream, args.programs)
    child = record["child_cpu_ms_per_program"] / 1000
    runner = record["runner_cpu_ms_per_program"] / 1000
    print(f"Python {record['python_version']}, backend {record['backend']}, {events} events per trace, "
          f"{args.programs} programs")
    rows = [
        ("traced call in-process (recording + JSON)", traced),
        ("batch child (fork, limits, traced call, report)", child),
        ("batch runner and fork server", runner),
        ("host: stream -> Parquet shard", host),
        ("whole pipeline (child + runner + host)", child + runner + host),
    ]
    for what, seconds in rows:
        print(f"  {what:<50} {1000 * seconds:8.1f} ms  {1e6 * seconds / events:6.2f} us/event  "
              f"{seconds / traced:5.2f}x the traced call")


if __name__ == "__main__":
    main()
