"""The run manifest: one JSON file in the output folder describing a harvest (and its history).

`DIR/harvest-run.json` always describes the latest run; every run is also kept as
`DIR/.worldtrace/runs/<run_id>.json`. Counts cover the whole output folder (units finished by
earlier runs included) and, separately, the units this run executed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvest.plan import HarvestSettings, WorkUnit
from harvest.unit import UnitResult

RUN_MANIFEST = "harvest-run.json"
RUNS_DIR = ".worldtrace/runs"
FORMAT = "worldtrace.harvest-run/1"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """Everything the manifest says about one run; filled in as the run goes."""

    run_id: str
    command: list[str]
    inputs: list[str]
    settings: HarvestSettings
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    ray_address: str | None = None
    images: dict[str, int] = field(default_factory=dict)  # image -> programs planned
    units_planned: int = 0
    units_done_before: int = 0
    programs_planned: int = 0
    counts_before: dict[str, int] = field(default_factory=dict)  # statuses of units done before
    mismatches_before: int = 0  # expected-output mismatches of units done before (shard metadata)
    results: list[UnitResult] = field(default_factory=list)
    failed_units: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    wall_time_s: float = 0.0
    startup_s: float = 0.0  # Ray start-up and planning before the first unit was submitted
    recheck: dict[str, Any] | None = None  # the determinism check's counts (harvest.recheck.summary)
    recheck_failed: list[dict[str, str]] = field(default_factory=list)  # units of the check that failed
    error: str | None = None  # why the run ended early (Ray unreachable, an error of the driver)

    def counts_this_run(self) -> dict[str, int]:
        return _sum_counts(r.counts for r in self.results)

    def counts_total(self) -> dict[str, int]:
        return _sum_counts([self.counts_before, self.counts_this_run()])

    @property
    def traces_this_run(self) -> int:
        """Rows written by this run's units (a test-suite program adds one per traced call)."""
        return sum(sum(r.counts.values()) for r in self.results)

    @property
    def programs_this_run(self) -> int:
        return sum(r.n_programs for r in self.results)

    def confinement(self) -> dict[str, Any]:
        """How this run's programs were confined: units with Landlock, units without (and why)."""
        confined = [r for r in self.results if r.confinements and all(c.get("landlock_abi") for c in r.confinements)]
        unconfined = [r for r in self.results if any(not c.get("landlock_abi") for c in r.confinements)]
        return {
            "units_confined": len(confined),
            "units_unconfined": len(unconfined),
            "landlock_abi": sorted({c["landlock_abi"] for r in confined for c in r.confinements}),
            "why_unconfined": sorted({str(c.get("unavailable")) for r in unconfined for c in r.confinements
                                      if not c.get("landlock_abi")}),
        }

    def immortal_heap(self) -> dict[str, Any]:
        """Whether this run's batch runners forked the programs from an immortal heap (Python
        3.12+, docs/batch.md "Cost"): units that did, units that did not and why, and the units
        whose runner turned it off after a program crashed on it and not on a mortal heap (a
        CPython the trick does not fit)."""
        immortal = [r for r in self.results if r.forked_from_immortal_heap]
        mortal = [r for r in self.results if any(not h["on"] for h in r.immortal_heaps)]
        return {
            "units_immortal": len(immortal),
            "units_mortal": len(mortal),
            "why_mortal": sorted({str(h["reason"]) for r in mortal for h in r.immortal_heaps if not h["on"]}),
            "turned_off": [dict(off, unit=r.unit_id, image=r.image) for r in self.results for off in r.heap_turned_off],
        }

    @property
    def complete(self) -> bool:
        return not self.failed_units and not self.interrupted and self.error is None and (
            self.units_done_before + len(self.results) == self.units_planned
        )

    def to_json(self) -> dict[str, Any]:
        run_time = max(self.wall_time_s - self.startup_s, 1e-9)
        sandbox = sum(r.sandbox_time_s for r in self.results)
        program = sum(r.program_time_s for r in self.results)
        task = sum(r.wall_time_s for r in self.results)
        return {
            "format": FORMAT,
            "run_id": self.run_id,
            "command": self.command,
            "inputs": self.inputs,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "error": self.error,
            "ray_address": self.ray_address or "embedded",
            "versions": versions(),
            "settings": asdict(self.settings),
            "images": self.images,
            "programs": self.programs_planned,
            "units": {
                "planned": self.units_planned,
                "done_before": self.units_done_before,
                "ran": len(self.results),
                "failed": len(self.failed_units),
            },
            "counts": self.counts_total(),
            "counts_this_run": self.counts_this_run(),
            # Over the whole folder, as `counts` (shards of earlier runs say theirs in their metadata).
            "expected_output_mismatches": self.mismatches_before + sum(r.mismatches for r in self.results),
            "expected_output_mismatches_this_run": sum(r.mismatches for r in self.results),
            "timing": {
                "wall_time_s": round(self.wall_time_s, 3),
                "startup_s": round(self.startup_s, 3),
                "traces_per_s": round(self.traces_this_run / run_time, 2) if self.results else 0.0,
                "programs_per_s": round(self.programs_this_run / run_time, 2) if self.results else 0.0,
                "task_time_s": round(task, 3),
                "sandbox_time_s": round(sandbox, 3),
                "program_time_s": round(program, 3),
                # share of the tasks' time not spent running programs (starts, forks, conversion)
                "outside_programs_share": round(1 - program / task, 4) if task > 0 else None,
            },
            "nodes": sorted({r.node_id for r in self.results if r.node_id}),
            "confinement": self.confinement(),
            "immortal_heap": self.immortal_heap(),
            "failed_units": self.failed_units,
            "recheck": self.recheck,
            "recheck_failed_units": self.recheck_failed,
            "unit_results": [asdict(r) for r in self.results],
        }


def versions() -> dict[str, str]:
    """Versions of what produced the traces."""
    from harvest import __version__
    from tracer import __version__ as tracer_version

    found = {
        "worldtrace": __version__,
        "tracer": tracer_version,
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    for package in ("ray", "pyarrow", "docker"):
        try:  # the installed distribution's: importing Ray only to read its version took ~1.4 s
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def recorded_image_ids(out_dir: Path, shards: set[str]) -> dict[str, set[str]]:
    """The Docker image ids that earlier runs recorded for the units of `shards` (their history
    in DIR/.worldtrace/runs), by image name. An unreadable history file is skipped."""
    found: dict[str, set[str]] = {}
    for path in sorted((out_dir / RUNS_DIR).glob("*.json")):
        try:
            results = json.loads(path.read_text(encoding="utf-8")).get("unit_results") or []
        except (OSError, ValueError, AttributeError):
            continue
        for result in results:
            if isinstance(result, dict) and result.get("shard") in shards and result.get("image_id"):
                found.setdefault(str(result.get("image")), set()).add(str(result["image_id"]))
    return found


def write_run_manifest(out_dir: Path, record: RunRecord) -> Path:
    """Write the manifest atomically (latest + history); return the latest's path."""
    data = json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n"
    history = out_dir / RUNS_DIR / f"{record.run_id}.json"
    history.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(history, data)
    latest = out_dir / RUN_MANIFEST
    _atomic_write(latest, data)
    return latest


# A run's manifest holds an entry per unit, so writing it costs more as the run goes: written after
# every unit, that alone grew quadratic in the units (2,000 one-program units: 210 s of the
# driver's time). Between two writes, at least this many times the last write's duration passes.
WRITE_SPACING = 20.0
_clock = time.monotonic  # what RunManifestWriter times with (tests replace it)


class RunManifestWriter:
    """Writes a run's manifest as the run goes, at most ~1/(1 + WRITE_SPACING) of the time.

    `write()` skips a write that comes sooner after the last one than WRITE_SPACING times that
    one's duration (cheap manifests are written after every unit); `write(force=True)` always
    writes (the run's start, an interruption, its end).
    """

    def __init__(self, out_dir: Path, record: RunRecord) -> None:
        self.out_dir = out_dir
        self.record = record
        self.writes = 0
        self._next = float("-inf")

    def write(self, force: bool = False) -> bool:
        """Write the manifest now, or not yet (see the class); whether it did."""
        started = _clock()
        if not force and started < self._next:
            return False
        write_run_manifest(self.out_dir, self.record)
        finished = _clock()
        self._next = finished + WRITE_SPACING * (finished - started)
        self.writes += 1
        return True


def read_run_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_MANIFEST
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def images_of(units: list[WorkUnit]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for unit in units:
        counts[unit.image] = counts.get(unit.image, 0) + len(unit)
    return counts


def _sum_counts(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for status, n in part.items():
            total[status] = total.get(status, 0) + n
    return dict(sorted(total.items()))


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the manifest is for everyone who reads DIR
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
