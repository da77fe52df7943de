"""Determinism check: run a sample of a harvest's programs again, in fresh sandboxes, and compare.

The sandbox fixes what it can (hash seed, `random`'s seed, time zone, locale, host name), but a
program that reads the clock, `os.urandom`, `uuid4`, object addresses (`id`, default `hash` and
`repr`) or depends on thread timing still traces differently on every run: such traces teach a
model noise. `harvest --recheck FRACTION` re-runs a deterministic sample of the programs (by hash
of the program and its image) as units of their own, in new sandboxes, after the harvest, and
writes `DIR/determinism.json`: which programs traced identically and which did not, with the
first difference. The re-run's shards live in `DIR/.worldtrace/recheck/` (hidden from readers),
so a re-run of the command resumes the check as it resumes the harvest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from harvest.plan import HarvestSettings, WorkUnit, plan_units

RECHECK_DIR = ".worldtrace/recheck"  # under --out: the re-run's own shards and manifest
REPORT = "determinism.json"
FORMAT = "worldtrace.determinism/1"
# What a trace says about the program (not wall time, not the tracer's own error text).
COMPARED = (
    "status",
    "return_value",
    "exception_type",
    "exception_message",
    "truncated",
    "truncated_reason",
    "stdout",
    "stderr",
    "events",
)
RECHECKED_MODES = ("call", "script")  # a test suite is one job of many traces: not re-run
SHOWN_CHARS = 300  # of each side of a difference, in the report


def sampled(program_hash: str, image: str, fraction: float) -> bool:
    """Whether a program is in the sample: a pure function of the program, its image and `fraction`
    (so a re-run, or a larger fraction, picks the same programs again)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"recheck\0{image}\0{program_hash}".encode()).hexdigest()
    return int(digest[:15], 16) < fraction * 16**15


def plan_recheck(units: Sequence[WorkUnit], settings: HarvestSettings, fraction: float) -> list[WorkUnit]:
    """The units that re-run the sample of `units`' programs (ids distinct from the harvest's own)."""
    chosen = [
        replace(program, image=unit.image)
        for unit in units
        for program in unit.programs
        if program.mode in RECHECKED_MODES and sampled(program.content_hash(), unit.image, fraction)
    ]
    return [
        replace(unit, unit_id=hashlib.sha256(f"recheck\0{unit.unit_id}".encode()).hexdigest()[:20])
        for unit in plan_units(chosen, settings)
    ]


def compare(out: Path, units: Sequence[WorkUnit], checks: Sequence[WorkUnit], fraction: float) -> dict[str, Any]:
    """Compare the re-run traces of `checks` with the harvest's own in `units`; the report as JSON."""
    where = {(unit.image, p.program_id): unit.shard_name for unit in units for p in unit.programs}
    wanted: dict[str, set[str]] = {}
    for check in checks:
        for program in check.programs:
            wanted.setdefault(where[(check.image, program.program_id)], set()).add(program.program_id)
    first = _rows(out, wanted)
    second = _rows(out / RECHECK_DIR, {c.shard_name: {p.program_id for p in c.programs} for c in checks})
    identical = 0
    differing: list[dict[str, Any]] = []
    not_compared: list[dict[str, Any]] = []
    for check in checks:
        for program in check.programs:
            key = (check.image, program.program_id)
            a, b = first.get(key), second.get(key)
            if a is None or b is None:
                not_compared.append({"program_id": program.program_id, "image": check.image,
                                     "reason": "no trace in the harvest" if a is None else "no trace in the re-run"})
                continue
            if a["status"] == "timeout" and b["status"] == "timeout":
                # Cut at whatever line the deadline found: the events differ by nature.
                not_compared.append({"program_id": program.program_id, "image": check.image,
                                     "reason": "timed out both times"})
                continue
            difference = first_difference(a, b)
            if difference is None:
                identical += 1
            else:
                differing.append({"program_id": program.program_id, "image": check.image, **difference})
    return {
        "format": FORMAT,
        "fraction": fraction,
        "rechecked": sum(len(c) for c in checks),
        "identical": identical,
        "nondeterministic": len(differing),
        "differing": differing,
        "not_compared": not_compared,
    }


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """How two traces of one program differ: every differing field, and the first one's values
    (for `events`, the first differing event and both event counts). None when identical."""
    fields = [name for name in COMPARED if a.get(name) != b.get(name)]
    if not fields:
        return None
    name = fields[0]
    if name != "events":
        return {"fields": fields, "first": _shown(a.get(name)), "second": _shown(b.get(name))}
    x: list[dict[str, Any]] = a.get("events") or []
    y: list[dict[str, Any]] = b.get("events") or []
    at = next((i for i, (e, f) in enumerate(zip(x, y, strict=False)) if e != f), min(len(x), len(y)))
    return {
        "fields": fields,
        "event": at,
        "events": [len(x), len(y)],
        "first": _shown(_event(x, at)),
        "second": _shown(_event(y, at)),
    }


def write_report(out: Path, report: dict[str, Any]) -> Path:
    from schemas.shards import atomic_write_bytes

    path = out / REPORT
    atomic_write_bytes(path, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
    return path


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report's counts, for the run manifest."""
    return {key: report[key] for key in ("fraction", "rechecked", "identical", "nondeterministic")} | {
        "not_compared": len(report["not_compared"]),
        "report": REPORT,
    }


def _rows(folder: Path, wanted: dict[str, set[str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of the programs `wanted` names per shard of `folder`, by (image, program id)."""
    from schemas.reader import read_table

    found: dict[tuple[str, str], dict[str, Any]] = {}
    for shard, ids in sorted(wanted.items()):
        table = read_table(folder / shard, columns=["program_id", "image", *COMPARED],
                           filters=[("program_id", "in", sorted(ids))])
        for row in table.to_pylist():
            found[(row["image"], row["program_id"])] = row
    return found


def _event(events: Sequence[dict[str, Any]], at: int) -> dict[str, Any] | None:
    if at >= len(events):
        return None
    event = events[at]
    return {k: event[k] for k in ("kind", "lineno", "function", "depth", "thread_id", "locals", "arg")}


def _shown(value: Any) -> Any:
    """A value of the report: short strings as they are, anything else as short JSON text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
