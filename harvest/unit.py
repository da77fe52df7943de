"""Run one work unit: jobs file → sandbox → stream → one shard. No Ray here (runner.py adds it).

Exactly-once, step by step:
- every attempt of a unit gets its own folder (`attempt-N`, created atomically), seeded with the
  complete rows of earlier attempts, so a runner left over from a killed worker can never write
  into the stream this attempt converts;
- the batch runner skips program ids already in its stream, so a unit that died half-way resumes;
- rows are de-duplicated by program id (a pytest job adds one row per traced call, then its own);
- the shard is written under a temporary name and renamed into place by `ShardWriter`, and its
  name is derived from the unit id, so a redone unit replaces, never duplicates;
- an attempt that a later one superseded (its worker was frozen or cut off, given up for lost by
  Ray, and woke up) starts no round, commits no shard and removes nothing (`_check_current`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvest.errors import (
    AttemptSuperseded,
    RunnerFailed,
    SandboxError,
    StorageError,
    UnitDeadlineExceeded,
)
from harvest.inputs import Program, unit_jobs
from harvest.plan import HarvestSettings, WorkUnit
from harvest.sandbox.base import Sandbox, UnitRequest, open_regular
from tracer._batch_output import STARTED_SUFFIX

log = logging.getLogger(__name__)

WORK_DIR = ".worldtrace/work"  # under --out: per-unit scratch (jobs, streams); removed on commit


@dataclass
class UnitResult:
    """What a finished unit reports to the driver: small metadata, never trace payloads."""

    unit_id: str
    image: str
    shard: str
    n_programs: int
    counts: dict[str, int]
    shard_bytes: int
    attempt: int
    rounds: int
    wall_time_s: float  # the whole task
    sandbox_time_s: float  # inside the sandbox (container start, runner, programs)
    program_time_s: float  # sum of the traced runs' own wall time
    start_stop_s: float = 0.0  # of sandbox_time_s: starting and removing the sandboxes
    runner_cpu_s: float = 0.0  # CPU time of the batch runners and their programs (their run records)
    host_cpu_s: float = 0.0  # CPU time of the process that ran the unit (jobs, stream, shard)
    node_id: str = ""
    image_id: str = ""  # the Docker image id the unit's last sandbox ran ('' for the local sandbox)
    sandbox_failures: list[str] = field(default_factory=list)
    mismatches: int = 0  # rows whose result (return value, a script's stdout) differs from the expected output
    # How the batch runs confined the programs (Landlock), one entry per distinct run record value;
    # empty when the runner was not asked to (the local sandbox)
    confinements: list[dict[str, Any]] = field(default_factory=list)
    # Whether the batch runs made their fork server's heap immortal (docs/batch.md "Cost"), one
    # entry per distinct {"on", "reason"} of the run records, and where a program crashed on it
    # and not on a mortal one, so the runner kept the heap mortal from there: {"after", "why"}
    immortal_heaps: list[dict[str, Any]] = field(default_factory=list)
    heap_turned_off: list[dict[str, Any]] = field(default_factory=list)

    @property
    def forked_from_immortal_heap(self) -> bool:
        """Whether every batch run of the unit forked its programs from an immortal heap."""
        return bool(self.immortal_heaps) and all(h["on"] for h in self.immortal_heaps)


def unit_work_dir(out_dir: Path, unit_id: str) -> Path:
    return out_dir / WORK_DIR / unit_id


def execute_unit(
    unit: WorkUnit,
    settings: HarvestSettings,
    out_dir: Path,
    run_id: str,
    sandbox: Sandbox,
    node_id: str = "",
) -> UnitResult:
    """Trace every program of `unit` in one sandbox and commit its shard; return its metadata.

    `node_id`: the Ray node that runs it, recorded with the attempt (the driver watches it).

    Raises `SandboxError` when the sandbox failed, `StorageError` when the unit's files could not
    be written (its shard never appears half-written: see `ShardWriter`)."""
    if not out_dir.is_dir():  # not created again here: the harvest that made it is gone with it
        raise StorageError(f"the output folder {out_dir} no longer exists (removed while the harvest ran?)")
    try:
        return _execute_unit(unit, settings, out_dir, run_id, sandbox, node_id)
    except OSError as exc:
        if exc.errno is None:
            raise  # not a system call's error (HTTP client errors are OSErrors too)
        where = f": {exc.filename}" if exc.filename else ""
        raise StorageError(f"unit {unit.unit_id}, output folder {out_dir}: {exc.strerror or exc}{where}") from exc


def _execute_unit(
    unit: WorkUnit,
    settings: HarvestSettings,
    out_dir: Path,
    run_id: str,
    sandbox: Sandbox,
    node_id: str = "",
) -> UnitResult:
    started = time.monotonic()
    cpu_started = time.process_time()
    work = unit_work_dir(out_dir, unit.unit_id)
    attempt_dir, attempt = _new_attempt_dir(work)
    # Who runs this attempt: for post-mortems of a unit that died (and for the resume tests).
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "node_id": node_id, "run_id": run_id,
             "started_at": time.time()}  # fmt: skip
    (attempt_dir / "attempt.json").write_text(json.dumps(owner), encoding="utf-8")
    stream = attempt_dir / "stream.jsonl"
    # What is known of each finished program (its row without events and output: a unit's rows in
    # full can be gigabytes); the rows themselves stay in the stream until the shard is written.
    claims = unit_claims(unit)
    done = _seed_from_earlier_attempts(work, attempt_dir, stream, claims)
    if done:
        log.info("unit %s: attempt %d resumes with %d of %d programs done", unit.unit_id, attempt, len(done), len(unit))

    # The stream's rows as its shard takes them, from the last pass over it (None: read it again)
    shard_rows: deque[dict[str, Any]] | None = None
    sandbox_time = 0.0
    start_stop = 0.0  # of which: starting and removing containers (or runner processes)
    image_id = ""
    rounds = 0
    failures: list[str] = []
    while True:
        pending = [p for p in unit.programs if p.program_id not in done]
        if not pending:
            break
        _check_current(unit, work, attempt_dir, attempt)  # a round would lay out its folder again
        rounds += 1
        jobs = attempt_dir / f"jobs-{rounds}.jsonl"
        _write_rows(jobs, unit_jobs(pending))
        request = UnitRequest(
            run_id=run_id,
            unit_id=unit.unit_id,
            attempt=attempt,
            image=unit.image,
            jobs_path=jobs,
            output_path=stream,
            backend=settings.backend,
            program_timeout_s=settings.timeout_s,
            unit_timeout_s=settings.unit_deadline(pending),
            max_events=settings.max_events,
            max_value_chars=settings.max_value_chars,
            memory_mb=settings.memory_mb,
            cpus=settings.cpus,
            pids=settings.pids,
            tmpfs_mb=settings.tmpfs_mb,
        )
        round_started = time.monotonic()
        failure: SandboxError | None = None
        started_log = Path(f"{stream}{STARTED_SUFFIX}")
        started_log.unlink(missing_ok=True)  # the runner writes it anew: what this round started
        try:
            outcome = sandbox.run_unit(request)
            start_stop += outcome.startup_s + outcome.teardown_s
            image_id = outcome.image_id or ""
        except (RunnerFailed, UnitDeadlineExceeded) as exc:
            # The runner or the container died: maybe a program took it down. See what was done.
            failure = exc
        finally:
            sandbox_time += time.monotonic() - round_started
        before = len(done)
        with gc_paused():
            shard_rows = _read_round(stream, done, claims)
        missing = [p for p in pending if p.program_id not in done]  # a job's own row comes last
        if not missing:
            break
        shard_rows = None  # the stream grows: the shard is made of the rows of a later pass
        reason = str(failure) if failure else "the batch runner ended without a result for them"
        failures.append(f"round {rounds}: {len(missing)} programs without a result: {reason}")
        if len(done) > before:
            continue  # it got somewhere: resume after the last finished program
        culprit = _program_that_took_it_down(failure, started_log, missing)
        if culprit is None:
            # Nothing ran and no program was running when the runner died (it could not start,
            # could not write its output, was killed between programs): the infrastructure's
            # failure, which no row may record. Raised, so that the unit is retried.
            if failure is not None:
                raise failure
            raise RunnerFailed(f"unit {unit.unit_id}: the batch runner makes no progress: {reason}", exit_code=0)
        # The runner was killed while this program ran, and it never reported: the program took
        # the sandbox down with it. That is the program's outcome (a row); the others still run.
        log.warning("unit %s: program %s took the sandbox down (%s)", unit.unit_id, culprit.program_id, reason)
        row = crashed_row(culprit.program_id, culprit.entrypoint, culprit.trace_input, settings, reason)
        _cut_torn_tail(stream)  # the killed runner may have left half a line, which the row must not extend
        _write_rows(stream, [row], append=True)
        done[culprit.program_id] = _summary(row)

    from harvest.shard_io import write_unit_shard  # pyarrow only where shards are written

    with gc_paused():  # and the rows kept for the shard are not walked by collections meanwhile
        runner_cpu, confinements, heaps, heap_turned_off = _run_records(stream)
        mismatches = _count_mismatches(unit, done, settings.max_value_chars)
        # Stream order, first row of each program (a pytest job's extra traces come before its own).
        # A writer that died leaves its attempt's folder (removed only once the shard is in place).
        if shard_rows is not None:  # parsed and checked once, by the pass that found them all
            rows_in, checked = _drain(shard_rows), True
        else:
            rows_in, checked = unique_rows(stream, claims), False
        _check_current(unit, work, attempt_dir, attempt)
        shard_bytes = write_unit_shard(
            out_dir, unit, rows_in, mismatches, retried=attempt > 1, checked=checked,
            commit_check=lambda: _check_current(unit, work, attempt_dir, attempt),
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    rows = list(done.values())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return UnitResult(
        unit_id=unit.unit_id,
        image=unit.image,
        shard=unit.shard_name,
        n_programs=len(unit),
        counts=counts,
        shard_bytes=shard_bytes,
        attempt=attempt,
        rounds=rounds,
        wall_time_s=time.monotonic() - started,
        sandbox_time_s=sandbox_time,
        program_time_s=sum(float(row.get("wall_time_s") or 0.0) for row in rows),
        start_stop_s=start_stop,
        runner_cpu_s=runner_cpu,
        confinements=confinements,
        immortal_heaps=heaps,
        heap_turned_off=heap_turned_off,
        host_cpu_s=time.process_time() - cpu_started,
        image_id=image_id,
        sandbox_failures=failures,
        mismatches=mismatches,
    )


def read_stream(path: Path, claims: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Complete rows of a tracer stream; a torn last line (a killed writer) is skipped, and so are
    rows whose program id `claims` refuses (see `unit_claims`)."""
    for row, _ in _read_stream_lines(path, claims):
        yield row


def unit_claims(unit: WorkUnit) -> Callable[[str], bool]:
    """Whether a row of `unit`'s stream is one of its own: a program's, or one of a pytest
    program's traced calls (`ID::...`). A sandbox whose programs run unconfined (no Landlock, see
    docs/sandbox.md) can write any row into its stream: those of other ids are not taken."""
    ids = frozenset(p.program_id for p in unit.programs)
    suites = tuple(p.program_id + "::" for p in unit.programs if p.mode == "pytest")
    return lambda program_id: program_id in ids or program_id.startswith(suites)


def _read_stream_lines(
    path: Path, claims: Callable[[str], bool] | None = None
) -> Iterator[tuple[dict[str, Any], bytes]]:
    f = open_regular(path)  # a dead attempt's sandbox folder may hold a link or a FIFO instead
    if f is None:
        return
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                log.info("%s: skipping a torn last line (%d bytes)", path, len(raw))
                break
            try:
                row = json.loads(raw)
            except ValueError:
                log.warning("%s: skipping a line that is not JSON", path)
                continue
            if isinstance(row, dict) and isinstance(row.get("program_id"), str) and "status" in row:
                if claims is not None and not claims(row["program_id"]):
                    log.warning("%s: skipping a row of program %r, which is not of this unit", path, row["program_id"][:200])
                    continue
                yield row, raw


def _run_records(stream: Path) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """From this attempt's batch run records (STREAM.runs.jsonl): the CPU seconds of the runners
    and their programs, how each run confined its programs (see tracer/_landlock.py), and where
    a run turned its immortal heap off (tracer/_immortal.py)."""
    total = 0.0
    confinements: list[dict[str, Any]] = []
    heaps: list[dict[str, Any]] = []
    turned_off: list[dict[str, Any]] = []
    try:
        with open(f"{stream}.runs.jsonl", "rb") as f:
            for line in f:
                try:
                    run = json.loads(line)
                    total += float(run.get("runner_cpu_s", 0)) + float(run.get("child_cpu_s", 0))
                except (ValueError, TypeError, AttributeError):
                    continue  # a torn line of a killed runner
                confinement = run.get("confinement")
                if isinstance(confinement, dict) and confinement not in confinements:
                    confinements.append(confinement)
                heap = run.get("immortal_heap")
                if isinstance(heap, dict):
                    state = {"on": bool(heap.get("on")), "reason": heap.get("reason")}
                    if state not in heaps:
                        heaps.append(state)
                    if isinstance(heap.get("turned_off"), dict):
                        turned_off.append(heap["turned_off"])
    except OSError:
        pass
    return total, confinements, heaps, turned_off


def crashed_row(
    program_id: str, entrypoint: str | None, trace_input: str | None, settings: HarvestSettings, reason: str
) -> dict[str, Any]:
    """A stream row for a program that took its whole sandbox down, so it never reported."""
    from harvest.rows import stream_row_defaults

    row = stream_row_defaults(settings)
    row.update(
        program_id=program_id,
        entrypoint=entrypoint,
        input=trace_input,
        status="crashed",
        exception_message=f"the sandbox died while running this program: {reason}"[:2000],
    )
    return row


def _program_that_took_it_down(
    failure: SandboxError | None, started_log: Path, missing: list[Program]
) -> Program | None:
    """The program that was running when the runner was killed, if one was and it has no row.

    Only a runner killed from outside (a signal: the OOM killer, a program that kills it, the host
    at the unit deadline) can be a program's doing; a runner that exited with an error of its own
    (exit code 1 or 2: cannot start, cannot fork, cannot write its output) is not. The runner
    notes each program as it starts it (STREAM.started), so a runner that died before its first
    program, or between two, names none.
    """
    if isinstance(failure, RunnerFailed):
        if not (failure.exit_code < 0 or failure.exit_code > 128):  # 128+N: killed by signal N
            return None
    elif not isinstance(failure, UnitDeadlineExceeded):
        return None
    last = None
    for line in _lines(started_log):
        try:
            last = json.loads(line)
        except ValueError:
            continue  # half a line: the runner died while noting it
    return next((p for p in missing if p.program_id == last), None)


def _lines(path: Path) -> list[bytes]:
    try:
        return [line for line in path.read_bytes().split(b"\n") if line]
    except OSError:
        return []


def _cut_torn_tail(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate `path` after its last newline (a writer killed mid-line leaves a partial line)."""
    with path.open("rb+") as f:
        size = end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            log.info("%s: cutting off a torn last line (%d bytes)", path, size - end)
            f.truncate(end)


def _check_current(unit: WorkUnit, work: Path, attempt_dir: Path, attempt: int) -> None:
    """Raise `AttemptSuperseded` when another attempt took the unit over: its folder is gone (a
    later attempt committed the unit and removed its work folder), or a later attempt's exists.

    Ray retries a unit once it gives its worker up for lost (its node stopped answering); a worker
    that was only frozen or cut off wakes up and goes on. Were it to commit the unit's shard and
    remove the unit's work folder, it would pull the folder from under the retry running in it."""
    if not attempt_dir.is_dir():
        why = "its folder is gone (another attempt committed the unit)"
    else:
        later = sorted(n for n in _attempt_numbers(work) if n > attempt)
        if not later:
            return
        why = f"attempt {later[-1]} runs the unit (this one was given up for lost)"
    log.warning("unit %s: attempt %d stops without committing: %s", unit.unit_id, attempt, why)
    raise AttemptSuperseded(f"unit {unit.unit_id}: attempt {attempt} was superseded: {why}")


def _attempt_numbers(work: Path) -> list[int]:
    try:
        names = [p.name for p in work.iterdir()]
    except FileNotFoundError:
        return []
    return [int(n[8:]) for n in names if n.startswith("attempt-") and n[8:].isdigit()]


def running_on(out_dir: Path, unit_id: str, run_id: str) -> str:
    """The Ray node that runs the unit's latest attempt of run `run_id` ('' when none is known)."""
    work = unit_work_dir(out_dir, unit_id)
    numbers = _attempt_numbers(work)
    if not numbers:
        return ""
    try:
        owner = json.loads((work / f"attempt-{max(numbers)}" / "attempt.json").read_bytes())
    except (OSError, ValueError):
        return ""  # not written yet, or its unit committed meanwhile
    if not isinstance(owner, dict) or owner.get("run_id") != run_id:
        return ""  # an attempt of an earlier run, not started yet in this one
    return str(owner.get("node_id") or "")


def _new_attempt_dir(work: Path) -> tuple[Path, int]:
    work.mkdir(parents=True, exist_ok=True)
    attempt = 1 + max(_attempt_numbers(work), default=0)
    while True:
        path = work / f"attempt-{attempt}"
        try:
            path.mkdir()  # atomic: two racing attempts never share a folder
            return path, attempt
        except FileExistsError:
            attempt += 1


def _seed_from_earlier_attempts(
    work: Path, current: Path, stream: Path, claims: Callable[[str], bool]
) -> dict[str, dict[str, Any]]:
    """Copy the complete rows of earlier attempts (first per program) into `stream`; summarise them."""
    done: dict[str, dict[str, Any]] = {}
    earlier = sorted(
        (p for p in work.iterdir() if p.name.startswith("attempt-") and p != current),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    with stream.open("wb") as out, gc_paused():
        for folder in earlier:
            # A sandbox may have moved the stream into its private folder when the attempt died.
            for old in [folder / "stream.jsonl", *sorted(folder.glob(".*.sandbox/stream.jsonl"))]:
                for row, line in _read_stream_lines(old, claims):
                    if row["program_id"] not in done:
                        done[row["program_id"]] = _summary(row)
                        out.write(line)
    return done


# What a unit keeps of each finished program's row until its shard is written.
SUMMARY_KEYS = ("program_id", "status", "return_value", "wall_time_s")
# The rows of a unit's last pass over its stream are kept (parsed) for its shard up to this many
# bytes of stream (~10x that in Python objects); a bigger unit's shard reads its stream again.
KEPT_ROWS_BYTES = 8 << 20


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """What the unit keeps of a row: as the shard will have it (a row the program forged through
    its report channel, or that is otherwise malformed, becomes an `error` row there too)."""
    from schemas.convert import check_stream_object
    from schemas.errors import StreamFormatError

    try:
        check_stream_object(row)
    except StreamFormatError:
        return {"program_id": row.get("program_id"), "status": "error", "return_value": None, "wall_time_s": 0.0}
    return _kept(row)


def _kept(row: dict[str, Any]) -> dict[str, Any]:
    """SUMMARY_KEYS of a checked row, and its stdout as a judge compares it (a script's expected
    output is its stdout)."""
    from harvest.rows import judged_output

    kept = {key: row.get(key) for key in SUMMARY_KEYS}
    kept["judged_stdout"] = judged_output(str(row.get("stdout") or ""))
    return kept


def _read_round(
    stream: Path, done: dict[str, dict[str, Any]], claims: Callable[[str], bool]
) -> deque[dict[str, Any]] | None:
    """Summarise the stream's programs that are not `done` yet into it; return the stream's rows as
    its shard takes them (the first of each program, checked: see `checked_row`), or None when they
    are more than KEPT_ROWS_BYTES of it (then the shard reads the stream again).

    So a unit that needs one round parses and checks each row once, not once for the summaries
    and again for the shard (~0.1 of the host's ~0.6 ms of CPU per CRUXEval trace)."""
    from harvest.shard_io import checked_row

    rows: deque[dict[str, Any]] | None = deque()
    seen: set[str] = set()
    kept = 0
    for obj, line in _read_stream_lines(stream, claims):
        program_id = obj["program_id"]
        if program_id in seen:
            continue
        seen.add(program_id)
        new = program_id not in done
        if not new and rows is None:
            continue
        # A malformed row is logged when it is checked for the shard: here, or (a big unit) when
        # the shard reads the stream again.
        row = checked_row(obj, warn=new and rows is not None)
        if new:
            done[program_id] = _kept(row)
        if rows is not None:
            kept += len(line)
            rows.append(row)
            if kept > KEPT_ROWS_BYTES:
                rows = None  # bounded memory: the rows of a big unit are read again for its shard
    return rows


def _drain(rows: deque[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`rows` in order, each let go of as it is handed on (memory falls as the shard is written)."""
    while rows:
        yield rows.popleft()


def unique_rows(stream: Path, claims: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The stream's complete rows in order, the first of each program id only (and `claims`)."""
    seen: set[str] = set()
    for row in read_stream(stream, claims):
        if row["program_id"] not in seen:
            seen.add(row["program_id"])
            yield row


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while big JSON rows are decoded and converted.

    They hold no cycles, but their millions of containers set off collections that walk them again
    and again: for traces of ~30,000 events that more than doubled the host's time per trace.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_rows(path: Path, rows: Any, append: bool = False) -> None:
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _count_mismatches(unit: WorkUnit, rows: dict[str, dict[str, Any]], max_value_chars: int) -> int:
    """Rows of programs with an expected output whose result differs: a call's rendered return
    value (CRUXEval), a script's stdout as a programming judge compares it (`judged_output`)."""
    from harvest.rows import expected_rendering, judged_output

    mismatches = 0
    for program in unit.programs:
        if program.expected_output is None or program.mode == "pytest":
            continue
        row = rows[program.program_id]
        if program.mode == "script":
            if row.get("status") != "ok" or row.get("judged_stdout") != judged_output(program.expected_output):
                mismatches += 1
            continue
        expected = expected_rendering(program.expected_output, max_value_chars)
        if expected is not None and (row.get("status") != "ok" or row.get("return_value") != expected):
            mismatches += 1
    return mismatches
