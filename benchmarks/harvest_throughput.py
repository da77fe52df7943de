"""Harvest throughput on CRUXEval, end to end, against the naive one-`docker run`-per-program baseline.

Prints, from one run on this machine: traces per second of `worldtrace harvest`'s pipeline (plan →
Ray tasks → one sandbox per unit → shards), the share of the units' time spent outside the
programs' own execution, and the same corpus sample traced with one `docker run` per program, with
the same concurrency. Targets (issue 4): ≥ 100× the naive baseline and ≥ 300 traces/s on 2 cores.

    .venv/bin/python benchmarks/harvest_throughput.py [--corpus cruxeval.jsonl] [--sandbox docker] [--copies N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harvest.inputs import Program, load_programs  # noqa: E402
from harvest.plan import DEFAULT_PROGRAMS_PER_UNIT, HarvestSettings, plan_units  # noqa: E402
from harvest.runner import RayOptions, run_units, start_ray, stop_ray  # noqa: E402
from harvest.sandbox.base import DETERMINISTIC_ENV, TRACER_DIR  # noqa: E402
from harvest.unit import UnitResult  # noqa: E402


def default_corpus() -> Path:
    root = Path(os.environ.get("WORLDTRACE_CORPORA", REPO.parent / "shared" / "corpora"))
    return root / "cruxeval.jsonl"


def harvest(programs: list[Program], settings: HarvestSettings, slots: int, out: Path) -> dict:
    units = plan_units(programs, settings)
    results: list[UnitResult] = []
    failures: list[str] = []
    t0 = time.monotonic()
    start_ray(RayOptions(num_cpus=slots), settings.sandbox)
    startup = time.monotonic() - t0
    try:
        procs0 = _process_cpu()
        cpu0 = _machine_cpu()
        t1 = time.monotonic()
        run_units(units, settings, out, f"bench-{uuid.uuid4().hex[:8]}", results.append, lambda u, why: failures.append(why))
        wall = time.monotonic() - t1
        cpu1 = _machine_cpu()
        procs1 = _process_cpu()
    finally:
        stop_ray()
    if failures:
        raise SystemExit(f"units failed: {failures[:3]}")
    traces = sum(r.n_programs for r in results)
    task = sum(r.wall_time_s for r in results)
    program = sum(r.program_time_s for r in results)
    return {
        "units": len(units),
        "traces": traces,
        "wall_s": wall,
        "startup_s": startup,
        "traces_per_s": traces / wall,
        "traces_per_s_with_startup": traces / (wall + startup),
        "outside_share": 1 - program / task if task else float("nan"),
        "sandbox_s": sum(r.sandbox_time_s for r in results),
        "start_stop_s": sum(r.start_stop_s for r in results),
        "runner_cpu_s": sum(r.runner_cpu_s for r in results),
        "host_cpu_s": sum(r.host_cpu_s for r in results),
        "task_s": task,
        "program_s": program,
        "statuses": _sum([r.counts for r in results]),
        # units whose batch runner forked the programs from an immortal heap (Python 3.12+)
        "immortal_units": sum(1 for r in results if r.forked_from_immortal_heap),
        # the whole machine during the harvest (all processes, other users included)
        "machine_busy_cpu_s": cpu1[0] - cpu0[0],
        "machine_idle_cpu_s": cpu1[1] - cpu0[1],
        # processes alive at both ends, by name; the rest of the busy time is processes that started
        # and ended during the harvest (the sandboxes, the engine's hooks) and the kernel
        "process_cpu_s": _process_delta(procs0, procs1),
    }


def _machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / hz, idle / hz


def _process_cpu() -> dict[tuple[str, str], tuple[str, float]]:
    """CPU seconds (user + system) of every process now, keyed by (pid, start time), from /proc."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[tuple[str, str], tuple[str, float]] = {}
    try:
        pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, fields = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :].split()
        found[(pid, fields[19])] = (name, (int(fields[11]) + int(fields[12])) / hz)
    return found


def _process_delta(before: dict[tuple[str, str], tuple[str, float]], after: dict[tuple[str, str], tuple[str, float]]) -> dict[str, float]:
    by_name: dict[str, float] = {}
    for key, (name, cpu) in after.items():
        if key in before:
            by_name[name] = by_name.get(name, 0.0) + cpu - before[key][1]
    return {name: cpu for name, cpu in sorted(by_name.items(), key=lambda kv: -kv[1]) if cpu > 0}


def naive(programs: list[Program], image_ref: str, slots: int) -> dict:
    """One `docker run --rm` per program (same limits and mounts as a unit's container)."""
    with tempfile.TemporaryDirectory(prefix="wt-naive-") as tmp:
        folder = Path(tmp)
        for i, program in enumerate(programs):
            (folder / f"p{i}.py").write_text(program.source or "", encoding="utf-8")
        os.chmod(folder, 0o755)

        def one(i: int) -> float:
            program = programs[i]
            env = [arg for key, value in {**DETERMINISTIC_ENV, "PYTHONPATH": "/opt/worldtrace"}.items() for arg in ("-e", f"{key}={value}")]
            cmd = [
                "docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", "--pids-limit", "256",
                "--memory", "512m", "--init", "--user", "1000:1000", *env,
                "-v", f"{TRACER_DIR}:/opt/worldtrace/tracer:ro", "-v", f"{folder}:/prog:ro",
                image_ref, "python3", "-m", "tracer", "call", f"/prog/p{i}.py", program.entrypoint or "f",
                "--input", program.input or "",
            ]  # fmt: skip
            t = time.monotonic()
            done = subprocess.run(cmd, capture_output=True, timeout=300)
            if done.returncode != 0 or b'"status"' not in done.stdout:
                raise SystemExit(f"naive run failed: {done.stderr.decode(errors='replace')[-500:]}")
            return time.monotonic() - t

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=slots) as pool:
            per_program = list(pool.map(one, range(len(programs))))
        wall = time.monotonic() - t0
    return {"traces": len(programs), "wall_s": wall, "traces_per_s": len(programs) / wall, "median_run_s": sorted(per_program)[len(per_program) // 2]}


def _sum(parts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            total[key] = total.get(key, 0) + n
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    parser.add_argument("--sandbox", choices=["docker", "local"], default="docker")
    parser.add_argument("--image", default="base-py311")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="concurrent units (Ray CPUs)")
    parser.add_argument("--programs-per-unit", type=int, default=DEFAULT_PROGRAMS_PER_UNIT)
    parser.add_argument("--naive-sample", type=int, default=20)
    parser.add_argument(
        "--copies", type=int, default=1,
        help="harvest the corpus N times, as distinct programs (ids `ID#k`): a longer harvest, where a "
        "worker's fixed costs (imports) weigh less; the naive baseline samples the corpus once",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"corpus {args.corpus} not found (set WORLDTRACE_CORPORA or pass --corpus)")
    programs = load_programs([args.corpus])
    if args.copies < 1:
        raise SystemExit("--copies must be >= 1")
    harvested = programs if args.copies == 1 else [
        replace(p, program_id=f"{p.program_id}#{k}") for k in range(args.copies) for p in programs
    ]  # fmt: skip
    image = args.image if args.sandbox == "docker" else "local"
    settings = HarvestSettings(image=image, sandbox=args.sandbox, programs_per_unit=args.programs_per_unit)
    with tempfile.TemporaryDirectory(prefix="wt-bench-") as out:
        ours = harvest(harvested, settings, args.slots, Path(out))
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}, "harvest": ours, "settings": {"sandbox": args.sandbox, "image": image, "slots": args.slots, "programs_per_unit": args.programs_per_unit, "copies": args.copies}}
    if args.sandbox == "docker" and args.naive_sample > 0:
        from harvest.sandbox.docker import DockerSandbox

        sandbox = DockerSandbox(reap_on_start=False)
        ref = sandbox.resolve_image(image)
        sandbox.close()
        step = max(1, len(programs) // args.naive_sample)
        sample = programs[::step][: args.naive_sample]
        report["naive"] = naive(sample, ref, args.slots)
        report["ratio"] = ours["traces_per_s"] / report["naive"]["traces_per_s"]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {report['machine']['load_1min']:.1f} at the end")
    print(
        f"harvest ({args.sandbox} sandbox, image {image}, embedded Ray with {args.slots} slots, "
        f"{args.programs_per_unit} programs/unit, {ours['units']} units"
        + (f", the corpus {args.copies} times" if args.copies > 1 else "") + "):"
    )
    print(f"  {ours['traces']} traces in {ours['wall_s']:.1f} s = {ours['traces_per_s']:.1f} traces/s "
          f"(Ray start-up {ours['startup_s']:.1f} s not included; with it {ours['traces_per_s_with_startup']:.1f} traces/s)")
    print(f"  statuses: {ours['statuses']}; fork server's heap immortal (Python 3.12+) in "
          f"{ours['immortal_units']} of {ours['units']} units")
    busy, idle = ours["machine_busy_cpu_s"], ours["machine_idle_cpu_s"]
    if busy + idle > 0:
        print(f"  machine CPU during the harvest: {busy:.1f} s busy, {idle:.1f} s idle "
              f"({100 * busy / (busy + idle):.0f}% of {os.cpu_count()} CPUs; all processes, other users included), "
              f"{1000 * busy / max(ours['traces'], 1):.1f} ms busy CPU per trace")
    n = max(ours["traces"], 1)
    if ours["process_cpu_s"]:
        alive = sum(ours["process_cpu_s"].values())
        top = ", ".join(f"{name} {1000 * cpu / n:.1f}" for name, cpu in list(ours["process_cpu_s"].items())[:6])
        print(f"  busy CPU per trace by process (ms): {top}; processes that began and ended during the harvest "
              f"(sandboxes) and the kernel {1000 * (busy - alive) / n:.1f}")
    print(f"  CPU per trace: batch runner and programs {1000 * ours['runner_cpu_s'] / n:.1f} ms, "
          f"host side of the units {1000 * ours['host_cpu_s'] / n:.1f} ms")
    print(f"  time outside program execution: {100 * ours['outside_share']:.1f}% of the units' time "
          f"(units {ours['task_s']:.1f} s, in sandboxes {ours['sandbox_s']:.1f} s, programs {ours['program_s']:.1f} s)")
    host = ours["task_s"] - ours["sandbox_s"]
    runner = ours["sandbox_s"] - ours["start_stop_s"] - ours["program_s"]
    print(f"    of the units' time: sandbox start/stop {ours['start_stop_s']:.1f} s, batch runner around the "
          f"programs (forks, limits, output) {runner:.1f} s, host side (jobs, stream, shard) {host:.1f} s")
    if "naive" in report:
        n = report["naive"]
        print(f"naive baseline (one `docker run` per program, {n['traces']}-program sample, {args.slots} at a time):")
        print(f"  {n['traces_per_s']:.2f} traces/s (median {n['median_run_s']:.2f} s per program)")
        print(f"ratio harvest / naive: {report['ratio']:.0f}x (target >= 100x)")
    print(f"throughput target >= 300 traces/s on 2 cores: {'met' if ours['traces_per_s'] >= 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
