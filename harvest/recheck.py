"""Determinism check: run a sample of a harvest's programs again, in fresh sandboxes, and compare.

The sandbox fixes what it can (hash seed, `random`'s seed, time zone, locale, host name), but a
program that reads the clock, `os.urandom`, `uuid4`, object addresses (`id`, default `hash` and
`repr`) or depends on thread timing still traces differently on every run: such traces teach a
model noise. `harvest --recheck FRACTION` re-runs a deterministic sample of the programs (by hash
of the program and its image) as units of their own, in new sandboxes, after the harvest, and
keeps the verdicts in `DIR/determinism.json`: one per program ever checked in DIR, so harvests
that add programs to DIR add to it, and a program judged once is not run again. The re-run's
shards live in `DIR/.worldtrace/recheck/` (hidden from readers) until the verdicts are written,
so an interrupted check resumes as the harvest does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
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
# What made the trace: two traces that differ here are not two runs of the same thing.
MAKERS = ("tracer_version", "python_version", "backend")
RECHECKED_MODES = ("call", "script")  # a test suite is one job of many traces: not re-run
# Statuses a sandbox limit decides as much as the program does (the machine's load, a neighbour's
# memory): a run that hit one, and one that did not, say nothing about the program.
LIMIT_STATUSES = ("timeout", "memory")
SHOWN_CHARS = 300  # of each side of a difference, in the report

Key = tuple[str, str]  # (image, program id)


def sampled(program_hash: str, image: str, fraction: float) -> bool:
    """Whether a program is in the sample: a pure function of the program, its image and `fraction`
    (so a re-run, or a larger fraction, picks the same programs again)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"recheck\0{image}\0{program_hash}".encode()).hexdigest()
    return int(digest[:15], 16) < fraction * 16**15


def sample(units: Sequence[WorkUnit], fraction: float) -> list[Key]:
    """The (image, program id) of every program of `units` in the sample."""
    return [
        (unit.image, program.program_id)
        for unit in units
        for program in unit.programs
        if program.mode in RECHECKED_MODES and sampled(program.content_hash(), unit.image, fraction)
    ]


def to_run(wanted: Sequence[Key], judged: dict[Key, dict[str, Any]]) -> set[Key]:
    """Of the sampled programs, those to run again: not judged yet, or judged with no verdict for
    a reason that another run may not have (a missing trace, a limit hit in one run only)."""
    return {key for key in wanted if key not in judged or judged[key].get("retry")}


def plan_recheck(units: Sequence[WorkUnit], settings: HarvestSettings, todo: set[Key]) -> list[WorkUnit]:
    """The units that run the programs `todo` names again (ids distinct from the harvest's own)."""
    chosen = [replace(p, image=u.image) for u in units for p in u.programs if (u.image, p.program_id) in todo]
    return [
        replace(unit, unit_id=hashlib.sha256(f"recheck\0{unit.unit_id}".encode()).hexdigest()[:20])
        for unit in plan_units(chosen, settings)
    ]


def load_report(folder: Path) -> dict[str, Any] | None:
    """The folder's report, or None (none yet, or not one of ours)."""
    try:
        data = json.loads((folder / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def flagged(data: dict[str, Any]) -> set[str]:
    """The trace ids (the harvest's traces) of the programs that traced differently when run again."""
    return {str(entry["trace_id"]) for entry in data.get("differing", []) if isinstance(entry, dict) and "trace_id" in entry}


def verdicts(report: dict[str, Any] | None) -> dict[Key, dict[str, Any]]:
    """(image, program id) -> its entry ({"verdict": "identical"|"differing"|"not_compared", ...})."""
    found: dict[Key, dict[str, Any]] = {}
    if report is None:
        return found
    for image, program_id in report.get("identical_programs", []):
        found[(image, program_id)] = {"verdict": "identical", "program_id": program_id, "image": image}
    for verdict in ("differing", "not_compared"):
        for entry in report.get(verdict, []):
            found[(entry["image"], entry["program_id"])] = {"verdict": verdict, **entry}
    return found


def compare(out: Path, units: Sequence[WorkUnit], checks: Sequence[WorkUnit]) -> dict[Key, dict[str, Any]]:
    """The verdict on each program of `checks`: its re-run's trace against the harvest's own.

    One unit of the check at a time, its traces kept as Arrow tables and made Python objects one
    program at a time: the traces of a whole sample as Python objects, events and all, were
    gigabytes on a big harvest. A unit of the check takes its programs in the harvest's order, so
    it reads a few neighbouring shards."""
    where = {(unit.image, p.program_id): unit.shard_name for unit in units for p in unit.programs}
    found: dict[Key, dict[str, Any]] = {}
    for check in checks:
        wanted: dict[str, set[str]] = {}
        for program in check.programs:
            wanted.setdefault(where[(check.image, program.program_id)], set()).add(program.program_id)
        first = _rows(out, wanted)
        second = _rows(out / RECHECK_DIR, {check.shard_name: {p.program_id for p in check.programs}})
        for program in check.programs:
            key = (check.image, program.program_id)
            found[key] = {"program_id": program.program_id, "image": check.image,
                          **judge(first.get(key), second.get(key))}
    return found


def judge(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict on a program from its harvest's row `a` and its re-run's row `b` (with
    `retry` where another run may give one)."""
    if a is None or b is None:
        missing = "the harvest" if a is None else "the re-run"
        return {"verdict": "not_compared", "reason": f"no trace in {missing}", "retry": True}
    made = [(name, a.get(name), b.get(name)) for name in MAKERS if a.get(name) != b.get(name)]
    if made:
        name, x, y = made[0]
        return {"verdict": "not_compared", "trace_id": a.get("trace_id"),
                "reason": f"traced by another {name.replace('_', ' ')} ({x}, then {y})"}
    limits = [s for s in (a["status"], b["status"]) if s in LIMIT_STATUSES]
    if len(limits) == 2:  # each trace cut wherever the limit found it: they differ by nature
        reason = "timed out both times" if limits == ["timeout", "timeout"] else f"hit sandbox limits both times ({', '.join(limits)})"
        return {"verdict": "not_compared", "trace_id": a.get("trace_id"), "reason": reason}
    if limits and a["status"] != b["status"]:
        return {"verdict": "not_compared", "trace_id": a.get("trace_id"), "retry": True,
                "reason": f"hit a sandbox limit in one run only ({a['status']}, then {b['status']})"}
    difference = first_difference(a, b)
    if difference is None:
        return {"verdict": "identical"}
    return {"verdict": "differing", "trace_id": a.get("trace_id"), **difference}


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """How two traces of one program differ: every differing field, and the first one's values
    (for `events`, the first differing event and both event counts; for text, where it first
    differs and the text around it). None when identical."""
    fields = [name for name in COMPARED if a.get(name) != b.get(name)]
    if not fields:
        return None
    name = fields[0]
    x, y = a.get(name), b.get(name)
    if isinstance(x, str) and isinstance(y, str):
        at = next((i for i, (c, d) in enumerate(zip(x, y, strict=False)) if c != d), min(len(x), len(y)))
        start = max(0, at - SHOWN_CHARS // 3)
        return {"fields": fields, "offset": at, "first": _shown(x[start:]), "second": _shown(y[start:])}
    if name != "events":
        return {"fields": fields, "first": _shown(x), "second": _shown(y)}
    xs: list[dict[str, Any]] = x or []
    ys: list[dict[str, Any]] = y or []
    at = next((i for i, (e, f) in enumerate(zip(xs, ys, strict=False)) if e != f), min(len(xs), len(ys)))
    return {
        "fields": fields,
        "event": at,
        "events": [len(xs), len(ys)],
        "first": _shown(_event(xs, at)),
        "second": _shown(_event(ys, at)),
    }


def report(judged: dict[Key, dict[str, Any]], fraction: float, run_ids: list[str]) -> dict[str, Any]:
    """The report of every verdict in the folder (`fraction`: the latest run's)."""
    by_verdict: dict[str, list[dict[str, Any]]] = {"identical": [], "differing": [], "not_compared": []}
    for key in sorted(judged):
        entry = dict(judged[key])
        by_verdict[entry.pop("verdict")].append(entry)
    return {
        "format": FORMAT,
        "fraction": fraction,
        "runs": run_ids,
        "rechecked": len(judged),
        "identical": len(by_verdict["identical"]),
        "nondeterministic": len(by_verdict["differing"]),
        "differing": by_verdict["differing"],
        "not_compared": by_verdict["not_compared"],
        "identical_programs": [[e["image"], e["program_id"]] for e in by_verdict["identical"]],
    }


def write_report(out: Path, data: dict[str, Any]) -> Path:
    """Write the report, then drop the re-run's shards: the verdicts are all that is kept of them."""
    from schemas.shards import atomic_write_bytes

    path = out / REPORT
    atomic_write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode())
    shutil.rmtree(out / RECHECK_DIR, ignore_errors=True)
    return path


def summary(data: dict[str, Any], new: int, sampled: int) -> dict[str, Any]:
    """The report's counts, for the run manifest (`new`: programs this run checked; `sampled`: of
    this run's programs, those in the sample)."""
    return {key: data[key] for key in ("fraction", "rechecked", "identical", "nondeterministic")} | {
        "not_compared": len(data["not_compared"]),
        "sampled": sampled,
        "rechecked_this_run": new,
        "report": REPORT,
    }


class _Rows:
    """The rows of some programs, kept as Arrow tables; `get` makes one a Python dict."""

    def __init__(self) -> None:
        self._where: dict[Key, tuple[Any, int]] = {}

    def add(self, table: Any) -> None:
        for i, key in enumerate(zip(table.column("image").to_pylist(), table.column("program_id").to_pylist(), strict=True)):
            self._where[key] = (table, i)

    def get(self, key: Key) -> dict[str, Any] | None:
        found = self._where.get(key)
        if found is None:
            return None
        table, i = found
        row: dict[str, Any] = table.slice(i, 1).to_pylist()[0]
        return row


def _rows(folder: Path, wanted: dict[str, set[str]]) -> _Rows:
    """The rows of the programs `wanted` names per shard of `folder`, by (image, program id)."""
    from schemas.reader import read_table

    found = _Rows()
    for shard, ids in sorted(wanted.items()):
        found.add(read_table(folder / shard, columns=["trace_id", "program_id", "image", *MAKERS, *COMPARED],
                             filters=[("program_id", "in", sorted(ids))]))
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
