"""The batch runner's immortal warm heap (Python 3.12+): its children's page faults and CPU, on and off.

Run: ``python benchmarks/fork_server_heap.py [--pythons 3.12,3.13] [--newer-pythons] [--runs 2]``

For every CPython 3.12+ that pyenv lists (with ``--newer-pythons`` also 3.14 and 3.15 in the
catalog images, through tests' way of running them, images/interpreter.py), the batch runner
traces CRUXEval's 800 programs (``../shared/corpora`` or $WORLDTRACE_CORPORA) with its fork
server's heap immortal (the default) and mortal (``WORLDTRACE_IMMORTAL_HEAP=0``), the two
alternated ``--runs`` times, and prints the programs' page faults and CPU per program from the
runs' records (docs/batch.md "Cost"), the ratio of the medians, and whether the traces were the
same (``wall_time_s`` aside).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from tracer_overhead import _pythons  # noqa: E402  (the same interpreters as the overhead benchmark)

from harvest.inputs import load_programs  # noqa: E402

FIELDS = ("child_faults_per_program", "child_cpu_ms_per_program", "runner_cpu_ms_per_program", "programs_per_s")


def corpus_jobs(folder: Path) -> Path:
    """CRUXEval's rows as batch jobs (as the harvest makes them), in a file of `folder`."""
    root = Path(os.environ.get("WORLDTRACE_CORPORA", REPO.parent / "shared" / "corpora"))
    source = root / "cruxeval.jsonl"
    if not source.exists():
        raise SystemExit(f"corpus {source} not found (set WORLDTRACE_CORPORA)")
    jobs = folder / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(program.job()) + "\n" for program in load_programs([source])), encoding="utf-8")
    return jobs


def run_batch(python: str, jobs: Path, out: Path, immortal: bool) -> tuple[dict, dict]:
    """One batch run; (its run record, its traces by program id without their wall times)."""
    for stale in out.parent.glob(out.name + "*"):
        stale.unlink()
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONHASHSEED="0", WORLDTRACE_IMMORTAL_HEAP="" if immortal else "0")
    done = subprocess.run(
        [python, "-m", "tracer", "batch", str(jobs), "--out", str(out), "--timeout", "10"],
        cwd=out.parent, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{python}: the batch failed: {done.stderr[-2000:]}")
    record = json.loads(Path(f"{out}.runs.jsonl").read_text().splitlines()[-1])
    traces = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        trace = json.loads(line)
        trace.pop("wall_time_s", None)
        traces[trace["program_id"]] = trace
    return record, traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", help="comma-separated versions (default: every 3.12+ found)")
    parser.add_argument("--newer-pythons", action="store_true", help="also 3.14 and 3.15 in the catalog images")
    parser.add_argument("--runs", type=int, default=2, help="alternated runs of each setting")
    args = parser.parse_args()
    pythons = {v: exe for v, exe in _pythons(args.pythons, args.newer_pythons).items() if tuple(map(int, v.split("."))) >= (3, 12)}
    if not pythons:
        raise SystemExit("no CPython 3.12+ found (pyenv, or --newer-pythons with Docker)")
    folder = Path(tempfile.mkdtemp(prefix="fork-server-heap-", dir=tempfile.gettempdir()))
    os.chmod(folder, 0o777)  # an image's python runs as the caller's uid, but be lenient
    jobs = corpus_jobs(folder)
    print(f"CRUXEval, {sum(1 for _ in jobs.open())} programs per run, {args.runs} runs of each setting alternated")
    print(f"{'python':8} {'heap':8} " + " ".join(f"{f:>28}" for f in FIELDS) + "   traces")
    for version, python in pythons.items():
        records: dict[bool, list[dict]] = {True: [], False: []}
        traces: dict[bool, dict] = {}
        for _ in range(args.runs):
            for immortal in (False, True):
                record, traces[immortal] = run_batch(python, jobs, folder / "out.jsonl", immortal)
                if immortal and not record["immortal_heap"]["on"]:
                    print(f"{version:8} immortal heap not available: {record['immortal_heap']['reason']}")
                records[immortal].append(record)
        same = "same" if traces[True] == traces[False] else "DIFFER"
        medians = {k: {f: statistics.median(r[f] for r in v) for f in FIELDS} for k, v in records.items()}
        for immortal in (False, True):
            label = "immortal" if immortal else "mortal"
            print(f"{version:8} {label:8} " + " ".join(f"{medians[immortal][f]:>28.3f}" for f in FIELDS)
                  + (f"   {same}" if immortal else ""))
        ratio = {f: medians[True][f] / medians[False][f] for f in FIELDS if medians[False][f]}
        print(f"{version:8} {'ratio':8} " + " ".join(f"{ratio.get(f, 0):>27.2f}x" for f in FIELDS))


if __name__ == "__main__":
    main()
