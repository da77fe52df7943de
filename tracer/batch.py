"""Run many programs under the tracer: a warm parent forks one sandboxed child per program.

`run_batch(jobs, out)` reads a jobs file (schemas/batch_jobs.md) and appends one trace line per job
to `out` (schemas/trace_stream.md). Each child gets its own process group, resource limits, stdin
from /dev/null, stdout/stderr on pipes the parent drains up to a cap, and a private pipe for its
trace. The parent enforces the wall-clock deadline and turns whatever happened into a status:
`ok`/`exception`/`memory` reported by the child, `timeout`, `memory`, `crashed` seen from outside.
A re-run with the same `out` skips the program ids already there.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import linecache
import locale
import logging
import marshal
import math
import os
import platform
import select
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tracer import _immortal
from tracer._batch_child import (
    EXIT_HARNESS_FAILED,
    ChildSetup,
    encode_result,
    prctl,
    run_child,
    send,
    signals_to_reset,
)
from tracer._batch_errors import BatchError, OutputError, UsageError
from tracer._batch_folder import remove_program_folder, write_program_folder
from tracer._batch_jobs import (
    Blobs,
    Job,
    JobError,
    invalid_job_id,
    iter_job_lines,
    parse_job,
    script_file_name,
)
from tracer._batch_output import TraceWriter, decode_output
from tracer._batch_zygote import FORK_RETRY_S, Message, Zygote, kill_and_reap
from tracer._landlock import Confinement
from tracer.jsonl import RawJSON
from tracer.stream import FORMAT as STREAM_FORMAT
from tracer.stream import blank_trace

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

__all__ = ["BatchError", "BatchRunner", "OutputError", "UsageError", "run_batch"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # infrastructure: cannot fork, cannot write the output
EXIT_USAGE = 2  # the jobs file or the output cannot be used

RUNINFO_FORMAT = "worldtrace.batch-run/1"
READ_CHUNK = 1 << 16
END_REPORT_WAIT_S = 30.0  # how long the runner waits for the fork server to report a killed child
FSIZE_LIMIT_BYTES = 256 << 20  # largest file a program may write
KILL_GRACE_MIN_S = 1.0  # the parent kills at timeout + grace, grace = 50% within these bounds
KILL_GRACE_MAX_S = 5.0
REPORT_GRACE_S = 10.0  # more time for a child whose trace has started to arrive
MAX_MESSAGE_BYTES = 1 << 30  # a larger trace is dropped (status error), not held in memory
MAX_TEST_RESTARTS = 20  # a pytest job starts pytest again at most this often (tests that end it)
PR_SET_CHILD_SUBREAPER = 36

# Modules the warm parent imports once, so that children start with them loaded (a fork, not an import).
WARM_MODULES = (
    "abc", "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math",
    "operator", "random", "re", "statistics", "string", "textwrap", "typing", "unicodedata",
    "traceback", "linecache", "tokenize", "ast", "inspect",
)  # fmt: skip

DETERMINISTIC_ENV = {"TZ": "UTC", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def run_batch(
    jobs_path: str,
    out_path: str,
    *,
    backend: str = "auto",
    limits: Any = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_procs: int = 0,
    max_file_bytes: int = FSIZE_LIMIT_BYTES,
    scratch: Sequence[str] = (),
    confine: bool = False,
    private_ipc: bool = False,
) -> int:
    """Trace every job of `jobs_path`, appending one line per job to `out_path`; return the exit code.

    0: every job has its line in `out_path` (whatever the programs did); 1: the batch could not go
    on (cannot fork, cannot write); 2: the jobs file or the output cannot be used. `scratch`:
    directories that only the programs use (a sandbox's /tmp and /dev/shm), emptied before each
    program; never a directory anything else keeps files in. `confine`: with Landlock (Linux >=
    5.13), programs may write files only in the scratch directories, and (Linux >= 6.12) may not
    signal the runner or the fork server; without it they run unconfined (a warning, and the run
    record says so). `private_ipc`: the runner has an IPC namespace of its own (a container): the
    System V IPC objects a program leaves are removed before the next one.
    """
    missing = [folder for folder in scratch if not os.path.isdir(folder)]
    for folder in missing:
        log.warning("scratch directory %s does not exist; not emptying it between programs", folder)
    scratch = [folder for folder in scratch if folder not in missing]
    try:
        runner = BatchRunner(
            backend=backend,
            limits=limits,
            include=include,
            exclude=exclude,
            max_procs=max_procs,
            max_file_bytes=max_file_bytes,
            scratch=scratch,
            confine=confine,
            private_ipc=private_ipc,
        )
        summary = runner.run(str(jobs_path), str(out_path))
    except BatchError as exc:
        log.error("batch %s: %s", jobs_path, exc)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    log.info(
        "batch %s: %d run, %d skipped (already in %s), %s, %.1f programs/s",
        jobs_path,
        summary["ran"],
        summary["skipped"],
        out_path,
        ", ".join("%s %d" % kv for kv in sorted(summary["statuses"].items())) or "nothing to do",
        summary["programs_per_s"],
    )
    return EXIT_OK


def _limits_dict(limits: Any) -> Dict[str, Any]:
    keys = (
        "max_events",
        "max_value_chars",
        "max_items",
        "max_depth",
        "max_output_bytes",
        "timeout_s",
        "memory_mb",
    )
    if limits is None:
        return {k: 0 for k in keys}
    if hasattr(limits, "to_dict"):
        return dict(limits.to_dict())
    return {k: getattr(limits, k, 0) for k in keys}


def _with_timeout(limits: Any, timeout_s: Optional[float]) -> Any:
    if timeout_s is None or limits is None:
        return limits
    import dataclasses

    return dataclasses.replace(limits, timeout_s=timeout_s)


def set_deterministic_environment() -> None:
    """TZ=UTC and a fixed locale for every program (PYTHONHASHSEED must be set before the runner starts)."""
    os.environ.update(DETERMINISTIC_ENV)
    if hasattr(time, "tzset"):
        time.tzset()
    for name in ("C.UTF-8", "C.utf8", "C"):
        try:
            locale.setlocale(locale.LC_ALL, name)
            break
        except locale.Error:
            continue


def hash_seed() -> Optional[str]:
    """The interpreter's fixed hash seed, or None when str hashes are randomised."""
    if not sys.flags.hash_randomization:
        return "0"
    seed = os.environ.get("PYTHONHASHSEED")
    return seed if seed and seed != "random" else None


WARMUP_FILE = "<worldtrace-warmup>"
WARMUP_SOURCE = "def f(xs):\n    ys = [x + 1 for x in xs]\n    return ys\n"
WARMUP_RUNS = 3


def warm_up(modules: Sequence[str] = WARM_MODULES, backend: str = "auto") -> List[str]:
    """Import the tracer and what programs commonly import, once, in the parent; return what failed."""
    failed = []
    for name in ("tracer.api",) + tuple(modules):
        try:
            __import__(name)
        except Exception as exc:  # a missing optional module (e.g. _decimal) is fine
            failed.append("%s (%s)" % (name, exc))
    try:
        from tracer import api

        # Traced calls as a child makes them fill the tracer's lazy caches (sysconfig paths,
        # backend imports) and, on 3.11+, specialise the bytecode of the paths every child runs
        # (an instruction specialises on its second run): a child neither specialises them
        # again nor writes to their pages.
        for _ in range(WARMUP_RUNS):
            trace = api.trace_call(
                WARMUP_FILE, "f", "[1]", source=WARMUP_SOURCE, backend=backend,
                capture_output=False, events_as_json=True,
            )  # fmt: skip
            encode_result(trace)
        linecache.cache.pop(WARMUP_FILE, None)
    except Exception as exc:
        failed.append("warm-up trace (%s)" % exc)
    return failed


class _Capture(object):
    """Bytes read from one output pipe, kept up to `cap` (0 = all); the rest is read and dropped."""

    __slots__ = ("cap", "data", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        if self.cap <= 0:
            self.data += chunk
            return
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk


def _plausible(events: Any, max_events: int) -> bool:
    """Whether `events` can be the recorder's: a list of at most `max_events` (0: no limit). A
    child's report that fails this was written by the program, not the tracer."""
    return isinstance(events, list) and not 0 < max_events < len(events)


class _Messages(object):
    """The child's report channel: newline-separated JSON messages."""

    __slots__ = (
        "buf", "scanned", "on_trace", "max_events", "result", "head", "harness_error", "garbled", "ran",
        "oversize", "test_running", "test_started", "test_extended", "test_drained", "tests_done",
    )  # fmt: skip

    def __init__(self, on_trace: Callable[[Dict[str, Any]], bool], max_events: int = 0) -> None:
        self.buf = bytearray()
        self.scanned = 0  # bytes of `buf` known to hold no newline
        self.on_trace = on_trace  # extra traces (pytest jobs), handed on as they arrive
        self.max_events = max_events  # a result with more is not the recorder's (_plausible)
        self.result: Optional[Dict[str, Any]] = None
        # A result whose events come on the next line (see _batch_child.encode_result).
        self.head: Optional[Dict[str, Any]] = None
        self.harness_error: Optional[str] = None
        self.garbled = False
        self.ran = False  # the program has ended; the trace is being serialised
        self.oversize = False  # a message beyond MAX_MESSAGE_BYTES: the rest is read and dropped
        # A pytest job's progress: the test running (since when), and the tests that ended.
        self.test_running: Optional[str] = None
        self.test_started = 0.0
        self.test_extended = False  # its deadline was put off once, for a trace arriving
        self.test_drained = False  # past its deadline, what had arrived was read once more
        self.tests_done: List[str] = []

    def add(self, chunk: bytes) -> None:
        if self.oversize:
            return  # read and dropped until the child ends
        self.buf += chunk
        while True:
            # Only the new bytes are searched: a big trace arrives in many reads.
            end = self.buf.find(b"\n", self.scanned)
            if end < 0:
                self.scanned = len(self.buf)
                if self.scanned > MAX_MESSAGE_BYTES:
                    self.buf = bytearray()
                    self.scanned = 0
                    self.oversize = True
                return
            line = bytes(self.buf[:end])
            del self.buf[: end + 1]
            self.scanned = 0
            if self.head is not None:
                self._events_line(line)
                continue
            try:
                msg = json.loads(line)
                kind = msg["kind"]
            except (ValueError, KeyError, TypeError):
                self.garbled = True
                continue
            if kind == "trace":
                if not self.on_trace(msg["trace"]):
                    self.garbled = True
            elif kind == "result":
                trace = msg.get("trace")
                if msg.get("events") == "next-line" and isinstance(trace, dict):
                    self.head = trace
                elif isinstance(trace, dict) and _plausible(trace.get("events"), self.max_events):
                    self.result = trace
                else:
                    self.garbled = True
            elif kind == "ran":
                self.ran = True
            elif kind == "test" and isinstance(msg.get("nodeid"), str):
                self.test_running = msg["nodeid"]
                self.test_started = time.perf_counter()
                self.test_extended = self.test_drained = False
            elif kind == "test_done" and msg.get("nodeid") == self.test_running:
                self.tests_done.append(msg["nodeid"])
                self.test_running = None
            elif kind == "harness_error":
                self.harness_error = msg.get("error")

    def _events_line(self, line: bytes) -> None:
        """The events of the result in `head`: kept as the JSON text they are written as.

        They are parsed once to check that they are a JSON array (the program runs in the child
        and could have written anything here), but not encoded again: for big traces that was
        half of the runner's time.
        """
        head, self.head = self.head, None
        try:
            # UTF-8 only (json.loads would take UTF-16 bytes too), and no carriage return (valid
            # JSON whitespace, but a line break to readers that open the output as text).
            ok = b"\r" not in line and _plausible(json.loads(line.decode("utf-8")), self.max_events)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            self.garbled = True
            return
        head["events"] = RawJSON(line)
        self.result = head


class _Outcome(object):
    """What the parent saw of one child."""

    def __init__(self) -> None:
        self.wait_status = 0
        self.maxrss_kb = 0
        self.timed_out = False
        self.wall_time_s = 0.0
        self.fork_s = 0.0
        self.server_lost = False  # the fork server died while the child ran (and took it along)
        self.test_timed_out = False  # a pytest job's test ran past its deadline (and grace)


PYTEST_MORTAL = "pytest jobs run on a mortal heap (one fork per suite)"

# How a program's own crash ends it (a fault of its code, or abort()); what a rerun on a
# mortal heap tells apart from a crash the immortal heap caused.
_FAULT_SIGNALS = frozenset((signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT))


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


class BatchRunner(object):
    """Runs jobs one at a time in forked children; see `run_batch`."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        limits: Any = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_procs: int = 0,
        max_file_bytes: int = FSIZE_LIMIT_BYTES,
        scratch: Sequence[str] = (),
        confine: bool = False,
        private_ipc: bool = False,
    ) -> None:
        self.backend = backend
        self.private_ipc = private_ipc
        # Directories only the programs use (a sandbox's /tmp): emptied before each program.
        self.scratch = tuple(scratch)
        # Landlock: programs may write only in the scratch directories and may not signal the
        # runner or the fork server (tracer/_landlock.py); None: not asked for.
        self.confinement: Optional[Confinement] = Confinement(self.scratch) if confine else None
        if limits is None:
            from tracer.api import Limits

            limits = Limits()
        self.limits = limits
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        # RLIMIT_NPROC counts every process of the uid machine-wide (all containers sharing the
        # uid included) and does not bind root, so it is opt-in; the sandbox's pids cgroup is the
        # real bound.
        self.max_procs = max_procs
        self.max_file_bytes = max_file_bytes
        self.fork_times: List[float] = []
        self._pid = os.getpid()
        self._nproc_base = 0
        self._subreaper = False
        self._current: Optional[int] = None
        self._zygote: Optional[Zygote] = None  # the fork server (tracer/_batch_zygote.py)
        # Its heap made immortal (tracer/_immortal.py): None when so, else why not (the
        # interpreter, the switch, a pytest job). A program that crashes on an immortal heap and
        # not on a mortal one turns it off for the rest of the batch (_rerun_on_mortal_heap).
        self._immortal_reason: Optional[str] = _immortal.unavailable_reason()
        self._immortal_turned_off: Optional[Dict[str, str]] = None
        self._mortal_once = False  # the next fork server's heap stays mortal (a rerun)
        self._startup: Optional[List[str]] = None  # see _startup_modules
        self._zygote_usage = [0.0, 0]  # CPU seconds and page faults of the fork servers that ended
        self._oom_file: Optional[str] = None  # the cgroup's OOM-kill counter (memory.events)
        self._oom_kills = 0
        self._pytest_warm = False
        self._ldict: Optional[Dict[str, Any]] = None
        self._signal_resets: Optional[List[int]] = None  # None: the child resets them all

    # ---------------------------------------------------------------- the batch
    def run(self, jobs_path: str, out_path: str) -> Dict[str, Any]:
        """Run the jobs file into `out_path` and return a summary."""
        if not os.path.isfile(jobs_path):
            raise UsageError("jobs file %s does not exist" % jobs_path)
        if not hasattr(os, "fork"):
            raise BatchError("the batch runner needs os.fork (POSIX)")
        _ensure_std_fds()
        started = time.time()
        cpu_start = os.times()
        faults_start = _minor_faults()
        set_deterministic_environment()
        if hash_seed() is None:
            log.warning(
                "PYTHONHASHSEED is not set: set/dict-of-str iteration order will differ between"
                " runs; start the runner with PYTHONHASHSEED=0 (the sandboxes do)"
            )
        if not float(_limits_dict(self.limits).get("timeout_s") or 0):
            log.warning(
                "no per-program timeout (timeout_s=0): a program that never ends stalls the batch"
            )
        if self.confinement is not None and not self.confinement.abi:
            log.warning("programs run unconfined: %s", self.confinement.reason)
        if self.confinement is not None:
            self._hide_own_folder(out_path)
        failed = warm_up(backend=self.backend)
        if failed:
            log.debug("warm-up imports that failed: %s", ", ".join(failed))
        writer = TraceWriter(out_path)
        if writer.cut_bytes:
            log.warning(
                "%s: cut off a partial last line (%d bytes) left by an interrupted run",
                out_path,
                writer.cut_bytes,
            )
        jobs_name = os.path.basename(jobs_path)
        statuses: Dict[str, int] = {}
        ran = skipped = 0
        self._start_processes()
        gc.collect()
        if hasattr(gc, "freeze"):
            gc.freeze()  # children do not touch (and so do not copy) the parent's heap in gc passes
        old_term = signal.signal(signal.SIGTERM, _raise_exit) if _in_main_thread() else None
        self._signal_resets = signals_to_reset()  # the handlers stay as they are for the batch
        try:
            try:
                lines = iter_job_lines(jobs_path)
                blobs = Blobs()  # what the jobs file's blob lines define, for the jobs after them
                for lineno, line in lines:
                    try:
                        job = parse_job(line, lineno, blobs)
                    except JobError as exc:
                        bad_id = exc.program_id or invalid_job_id(jobs_name, lineno)
                        if bad_id in writer.done:
                            skipped += 1
                            continue
                        writer.write(self.error_trace(bad_id, str(exc)))
                        statuses["error"] = statuses.get("error", 0) + 1
                        continue
                    if job is None:  # a blob line
                        continue
                    if job.program_id in writer.done:
                        skipped += 1
                        continue
                    writer.starting(job.program_id)
                    if job.mode == "pytest" and not self._pytest_warm:
                        self._warm_pytest()
                    trace = self.run_job(job, writer.done, writer.write)
                    writer.write(trace)
                    statuses[trace["status"]] = statuses.get(trace["status"], 0) + 1
                    ran += 1
            except OSError as exc:
                raise BatchError(
                    "cannot read %s or write %s: %s" % (jobs_path, out_path, exc)
                ) from exc
        finally:
            self._signal_resets = None
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if hasattr(gc, "unfreeze"):
                gc.unfreeze()
            self._stop_processes()
            writer.close()
        wall = time.time() - started
        cpu_end = os.times()
        faults_end = _minor_faults()
        # The fork server is the runner's part (a reaped child of it, by the kernel's count).
        server_cpu, server_faults = self._zygote_usage
        parent_cpu = sum(cpu_end[:2]) - sum(cpu_start[:2]) + server_cpu  # user + system
        children_cpu = sum(cpu_end[2:4]) - sum(cpu_start[2:4]) - server_cpu
        faults_end = (faults_end[0] + server_faults, faults_end[1] - server_faults)
        summary = {
            "format": RUNINFO_FORMAT,
            "jobs": jobs_path,
            "out": out_path,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_time_s": round(wall, 3),
            "ran": ran,
            "skipped": skipped,
            "statuses": statuses,
            "programs_per_s": ran / wall if wall > 0 else 0.0,
            "median_fork_ms": round(_median(self.fork_times) * 1000, 3),
            "cpu_ms_per_program": _per(parent_cpu + children_cpu, ran),
            "runner_cpu_ms_per_program": _per(parent_cpu, ran),
            "child_cpu_ms_per_program": _per(children_cpu, ran),
            "runner_cpu_s": round(parent_cpu, 3),
            "child_cpu_s": round(children_cpu, 3),
            # page faults (copy-on-write of the forked runner, mostly): the main cost per program
            "runner_faults_per_program": _per_n(faults_end[0] - faults_start[0], ran),
            "child_faults_per_program": _per_n(faults_end[1] - faults_start[1], ran),
            "python_version": platform.python_version(),
            "tracer_version": _tracer_version(),
            "backend": self.backend,
            "limits": _limits_dict(self.limits),
            "pythonhashseed": hash_seed(),
            "confinement": self.confinement.describe() if self.confinement is not None else None,
            "immortal_heap": self._immortal_heap_record(),
            "env": dict(DETERMINISTIC_ENV),
        }
        _append_runinfo(out_path, summary)
        return summary

    def _immortal_heap_record(self) -> Dict[str, Any]:
        """The run record's word on the fork server's heap (tracer/_immortal.py): whether it was
        made immortal, why not, and where a crash turned it off."""
        reason = self._immortal_reason
        return {"on": reason is None, "reason": reason, "turned_off": self._immortal_turned_off}

    def _hide_own_folder(self, out_path: str) -> None:
        """Programs may not read the folder of the output (a sandbox's /out: the jobs of the unit
        and the rows of the programs before them), when it is a top-level folder of its own."""
        folder = os.path.dirname(os.path.abspath(out_path))
        needed = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix, os.getcwd()]
        if folder == "/" or any(
            os.path.abspath(p) == folder or os.path.abspath(p).startswith(folder + os.sep) for p in needed
        ):
            log.debug("%s holds what programs need: they may read it", folder)
            return
        assert self.confinement is not None
        if not self.confinement.hide(folder):
            log.debug("%s is not a top-level folder: programs may read it", folder)

    def _warm_pytest(self) -> None:
        """Import pytest once in the parent, so that each pytest job's child starts with it."""
        self._pytest_warm = True
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()
        for name in ("pytest", "tracer.pytest_mode"):
            try:
                __import__(name)
            except Exception as exc:  # the job itself reports a missing pytest
                log.debug("cannot pre-import %s: %s", name, exc)
        gc.collect()
        if hasattr(gc, "freeze"):
            gc.freeze()
        if self._signal_resets is not None:
            self._signal_resets = signals_to_reset()  # in case importing pytest changed a handler
        self._close_zygote()  # the next one is forked from this runner, with pytest loaded
        if self._immortal_reason is None:
            # One fork runs a whole suite: nothing to gain, and a crash the heap caused would
            # lose a test (a pytest job is not rerun, see _rerun_on_mortal_heap).
            self._immortal_reason = PYTEST_MORTAL

    # ---------------------------------------------------------------- one job
    def run_job(
        self,
        job: Job,
        done: Any = (),
        write_extra: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> Dict[str, Any]:
        """Run one job in a forked child and return its trace.

        Extra traces the job makes (a `pytest` job: one per traced call) go to `write_extra` as
        they arrive, except those whose id is in `done`. Other jobs make none: a program that
        sent one for `ID::x` would stand in for a later job of that id (it would be skipped).
        """
        if job.mode == "pytest":
            return self._run_pytest_job(job, done, write_extra)
        trace, _, outcome = self._run_child(job, done, None)
        if self._crashed_on_immortal_heap(outcome):
            trace = self._rerun_on_mortal_heap(job, done, trace)
        return trace

    def _crashed_on_immortal_heap(self, outcome: _Outcome) -> bool:
        zygote = self._zygote
        return zygote is not None and zygote.immortal and not outcome.server_lost and self._crashed_by_fault(outcome)

    def _rerun_on_mortal_heap(self, job: Job, done: Any, crashed: Dict[str, Any]) -> Dict[str, Any]:
        """A program killed by a fault signal on the immortal heap runs once more on a mortal one
        (a new fork server). When it then does not crash, the immortal heap was the cause: it
        stays off for the rest of the batch and the new run is the row. When it crashes again,
        the crash is the program's own: that run is the row, and the next program gets an
        immortal heap again. pytest jobs are not rerun: they run on a mortal heap (_warm_pytest)."""
        self._close_zygote()
        self._mortal_once = True
        try:
            trace, _, outcome = self._run_child(job, done, None)
        finally:
            self._mortal_once = False
        if self._crashed_by_fault(outcome):
            self._close_zygote()  # the next program's fork server is immortal again
            return trace
        why = "%s crashed on the immortal heap (%s) and not on a mortal one" % (
            job.program_id,
            crashed.get("exception_message"),
        )
        log.warning("%s: the fork server's heap stays mortal for the rest of the batch", why)
        self._immortal_turned_off = {"after": job.program_id, "why": why}
        return trace

    @staticmethod
    def _crashed_by_fault(outcome: _Outcome) -> bool:
        status = outcome.wait_status
        return not outcome.timed_out and os.WIFSIGNALED(status) and os.WTERMSIG(status) in _FAULT_SIGNALS

    def _run_pytest_job(
        self, job: Job, done: Any, write_extra: Optional[Callable[[Dict[str, Any]], None]]
    ) -> Dict[str, Any]:
        """A pytest job: when a test ends the child (a crash, `os._exit`, killed past its
        deadline), pytest runs again in a new child without the tests that ran and that one,
        up to MAX_TEST_RESTARTS times and within the job's own deadline, as pytest-xdist
        replaces a crashed worker. The job's row is the last child's, noting each lost test."""
        started = time.perf_counter()
        total_s = float(_with_timeout(self.limits, job.timeout_s).timeout_s or 0)
        finished: List[str] = []
        lost: List[Tuple[str, str, Optional[str]]] = []  # (node id, how its child ended, why no restart)
        outputs: List[Tuple[str, str, bool]] = []
        attempt, left_s = job, None
        while True:
            trace, msgs, outcome = self._run_child(attempt, done, write_extra, time_left=left_s)
            outputs.append((trace["stdout"], trace["stderr"], bool(trace["output_truncated"])))
            finished.extend(msgs.tests_done)
            culprit = msgs.test_running
            if msgs.result is not None or culprit is None:
                break  # pytest ended, or its child did outside any test (collection): no restart
            left_s = total_s - (time.perf_counter() - started) if total_s > 0 else None
            stop = None
            if outcome.timed_out and not outcome.test_timed_out:
                how, stop = "the job's timeout_s=%g ran out" % total_s, "no time left"
            elif outcome.test_timed_out:
                how = "ran past test_timeout_s=%g and did not stop; killed" % (job.test_timeout_s or 0)
            else:
                how = "%s: %s" % (trace["status"], trace.get("exception_message") or trace.get("tracer_error"))
            if stop is None and len(lost) >= MAX_TEST_RESTARTS:
                stop = "it was started %d times already" % (MAX_TEST_RESTARTS + 1)
            elif stop is None and left_s is not None and left_s < 1.0:
                stop = "the job's timeout_s=%g is spent" % total_s
            lost.append((culprit, how, stop))
            log.info("%s: pytest's process ended in test %s (%s)", job.program_id, culprit, how)
            if stop is not None:
                break
            attempt = dataclasses.replace(job, skip_tests=tuple(finished) + tuple(t[0] for t in lost))
        if lost:
            _note_lost_tests(trace, lost, outputs, int(self.limits.max_output_bytes or 0))
        if len(outputs) > 1:
            trace["wall_time_s"] = round(time.perf_counter() - started, 6)  # all of its children
        return trace

    def _run_child(
        self,
        job: Job,
        done: Any,
        write_extra: Optional[Callable[[Dict[str, Any]], None]],
        time_left: Optional[float] = None,
    ) -> Tuple[Dict[str, Any], _Messages, _Outcome]:
        """Run `job` in a forked child: (its trace, what it reported, how it ended). `time_left`:
        what is left of the job's timeout (a pytest job started again), else all of it."""
        prefix = job.program_id + "::"
        max_events = int(self.limits.max_events or 0)

        def on_extra(trace: Dict[str, Any]) -> bool:
            pid = trace.get("program_id") if isinstance(trace, dict) else None
            if write_extra is None or not isinstance(pid, str) or not pid.startswith(prefix):
                return False  # never let a child write rows for other ids
            if not _plausible(trace.get("events"), max_events):
                return False
            if pid not in done:
                trace.setdefault("format", STREAM_FORMAT)
                write_extra(trace)
            return True

        limits = _with_timeout(self.limits, job.timeout_s)
        if job.timeout_s is None:
            if self._ldict is None:
                self._ldict = _limits_dict(limits)
            ldict = dict(self._ldict)  # one conversion per batch, not per program
        else:
            ldict = _limits_dict(limits)
        timeout_s = float(ldict.get("timeout_s") or 0) if time_left is None else time_left
        # The tracer raises its own timeout inside the program (keeping the partial trace); the
        # parent's kill is the backstop for programs that ignore it (C loops, swallowed exceptions).
        kill_after = _kill_after(timeout_s)
        cap = int(ldict.get("max_output_bytes") or 0)
        memory_mb = int(ldict.get("memory_mb") or 0)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        setup = ChildSetup(
            parent_pid=self._pid,
            stdout_w=out_w,
            stderr_w=err_w,
            result_w=res_w,
            keep_fds=[],
            memory_mb=memory_mb,
            # A backstop only: never tighter than the wall-clock deadline with its report grace.
            cpu_s=int(math.ceil(kill_after + REPORT_GRACE_S)) + 1 if timeout_s > 0 else 0,
            nproc=self._nproc_base + self.max_procs if self.max_procs > 0 else 0,
            fsize_bytes=self.max_file_bytes,
            reset_signals=self._signal_resets,
            deadline=time.monotonic() + kill_after if kill_after > 0 else 0.0,
            startup_modules=self._startup_modules() if job.modules else None,
        )
        # plain data: the child rebuilds the job without pickle's class lookups
        payload = marshal.dumps((job.__dict__, setup.__dict__))
        outcome = _Outcome()
        t0 = time.perf_counter()
        out_r_fds = (out_r, err_r, res_r)
        try:
            pid = self._spawn(payload, [out_w, err_w, res_w], outcome)
        except BaseException:
            for fd in out_r_fds:
                os.close(fd)
            raise
        self._current = pid
        out, err, msgs = _Capture(cap), _Capture(cap), _Messages(on_extra, max_events)
        try:
            self._supervise(
                pid, t0, kill_after, {out_r: out, err_r: err, res_r: msgs}, res_r, outcome,
                _test_kill_after(job.test_timeout_s or 0.0),
            )
        finally:
            self._current = None
            for fd in out_r_fds:
                os.close(fd)
            if self._zygote is not None and not self._zygote.alive:
                self._lost_zygote()
        outcome.wall_time_s = time.perf_counter() - t0
        self.fork_times.append(outcome.fork_s)
        return self._finish(job, ldict, outcome, out, err, msgs, memory_mb), msgs, outcome

    def _spawn(self, payload: bytes, write_fds: List[int], outcome: _Outcome) -> int:
        """Have the fork server fork the job's child; return its pid. Closes `write_fds`."""
        frame: Optional[Message] = None
        try:
            for _ in range(2):  # a server that died before forking is replaced once
                zygote = self._live_zygote()
                try:
                    zygote.request(payload, write_fds)
                except OSError:
                    zygote.alive = False
                else:
                    frame = zygote.wait_for(b"F", timeout=FORK_RETRY_S + END_REPORT_WAIT_S)
                if frame is not None:
                    break
                self._lost_zygote()
        finally:
            for fd in write_fds:
                os.close(fd)
        if frame is None:
            raise BatchError("the fork server died twice before forking a child")
        _, pid, fork_s, errno = frame
        if pid < 0:
            raise BatchError("cannot fork a child: %s" % os.strerror(errno))
        outcome.fork_s = fork_s
        return pid

    def _startup_modules(self) -> List[str]:
        """The modules `python SCRIPT` has loaded when the script starts, with this interpreter,
        its flags and environment: asked of a new interpreter once per runner (~20 ms), on the
        first script job with `modules`. Empty (every module of the folder then takes the place
        of a loaded one) when that interpreter cannot be run."""
        if self._startup is None:
            import subprocess

            command = [
                sys.executable,
                *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
                "-c",
                "import sys; sys.stdout.write(' '.join(sys.modules))",
            ]
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
                self._startup = done.stdout.decode("ascii", "replace").split() if done.returncode == 0 else []
            except (OSError, subprocess.SubprocessError):
                self._startup = []
            if not self._startup:
                log.warning("could not list the modules a new interpreter starts with: %s", command)
        return self._startup

    def _live_zygote(self) -> Zygote:
        if self._zygote is None or not self._zygote.alive:
            if self._zygote is not None:
                self._lost_zygote()
            _flush_parent_streams()
            immortal = self._immortal_reason is None and self._immortal_turned_off is None and not self._mortal_once
            self._zygote = Zygote(self._start_child, self.scratch, self.private_ipc, immortal)
        return self._zygote

    def _start_child(self, payload: bytes, fds: List[int], server_pid: int) -> None:
        """In the forked child: decode the job and run it (`run_child`). Never returns."""
        try:
            job_fields, setup_fields = marshal.loads(payload)
            job = Job(**job_fields)
            setup = ChildSetup(**setup_fields)
            setup.stdin = job.stdin
            setup.parent_pid = server_pid
            setup.stdout_w, setup.stderr_w, setup.result_w = fds
            limits = _with_timeout(self.limits, job.timeout_s)
            work = _job_work(
                job, self.backend, limits, self.include, self.exclude, self.scratch, setup.startup_modules
            )
        except BaseException:
            try:
                import traceback

                send(fds[2], {"kind": "harness_error", "error": traceback.format_exc()})
            finally:
                os._exit(EXIT_HARNESS_FAILED)
        confinement = self.confinement
        run_child(setup, work, confinement.apply if confinement is not None and confinement.abi else None)

    def _lost_zygote(self) -> None:
        """The fork server died (a program can kill its parent): reap it and what it left."""
        if self._zygote is not None:
            self._zygote.close(kill=True)
            self._note_zygote_usage(self._zygote)
            self._zygote = None
        self._kill_orphans()  # its children were reparented to us, the subreaper

    def _close_zygote(self) -> None:
        if self._zygote is not None:
            self._zygote.close()
            self._note_zygote_usage(self._zygote)
            self._zygote = None

    def _note_zygote_usage(self, zygote: Zygote) -> None:
        if zygote.usage is not None:
            self._zygote_usage[0] += zygote.usage[0]
            self._zygote_usage[1] += zygote.usage[1]

    def _supervise(
        self,
        pid: int,
        t0: float,
        timeout_s: float,
        sinks: Dict[int, Any],
        res_fd: int,
        outcome: _Outcome,
        test_kill_after: float = 0.0,
    ) -> None:
        """Drain the child's pipes until it ends or its deadline passes (or, in a pytest job, the
        running test's `test_kill_after`); then kill its group.

        The fork server reports the child's end (wait status, peak memory); a child that has
        reported its trace is not waited for (it only has `os._exit` left to do).
        """
        zygote = self._zygote
        assert zygote is not None
        deadline = t0 + timeout_s if timeout_s > 0 else None
        open_fds = list(sinks)
        msgs = sinks[res_fd]
        exited = extended = reported = False
        try:
            while not exited:
                if msgs.result is not None:
                    reported = True
                    break
                if msgs.harness_error is not None:
                    break
                wait: Optional[float] = None
                if deadline is not None:
                    wait = deadline - time.perf_counter()
                    if wait <= 0 and (msgs.ran or msgs.buf) and not extended:
                        deadline += REPORT_GRACE_S  # the program is over; its trace is on the way
                        extended = True
                        continue
                    if wait <= 0:
                        outcome.timed_out = True
                        break
                if test_kill_after > 0 and msgs.test_running is not None:
                    test_wait = msgs.test_started + test_kill_after - time.perf_counter()
                    if test_wait <= 0 and msgs.buf and not msgs.test_extended:
                        msgs.test_started += REPORT_GRACE_S  # a trace of the test is on its way
                        msgs.test_extended = True
                        continue
                    if test_wait <= 0 and not msgs.test_drained:
                        # Past the test's deadline, maybe only because the runner was busy
                        # writing a big trace: read what already arrived before deciding.
                        msgs.test_drained = True
                        test_wait = 0.0
                    elif test_wait <= 0:
                        outcome.timed_out = outcome.test_timed_out = True
                        break
                    wait = test_wait if wait is None else min(wait, test_wait)
                if zygote.pending:  # its end came with the fork's report
                    exited = _take_end(zygote.read(), pid, outcome)
                    continue
                watch = open_fds + ([zygote.fileno()] if zygote.alive else [])
                ready, _, _ = select.select(watch, [], [], wait)
                for fd in ready:
                    if zygote.alive and fd == zygote.fileno():
                        exited = _take_end(zygote.read(), pid, outcome) or not zygote.alive
                        continue
                    chunk = os.read(fd, READ_CHUNK)
                    if chunk:
                        sinks[fd].add(chunk)
                    else:
                        open_fds.remove(fd)
        finally:
            if not exited:
                # Kill it and what is in its group: past its deadline, a broken harness, or done
                # reporting (it only has os._exit left, unless a program forged the report). A
                # child whose end was reported was reaped by the fork server, which killed its
                # group then: its pid is not signalled again.
                _kill_group(pid)
            if not exited and not reported:
                self._await_end(zygote, pid, outcome)
            if not zygote.alive and not outcome.wait_status:
                outcome.server_lost = True  # it took the child along (PR_SET_PDEATHSIG)
                outcome.wait_status = int(signal.SIGKILL)
            _drain(open_fds, sinks)

    def _await_end(self, zygote: Zygote, pid: int, outcome: _Outcome) -> None:
        """Wait for the fork server's report of the (killed) child's end."""
        frame = zygote.wait_for(b"X", pid, timeout=END_REPORT_WAIT_S)
        if frame is not None:
            _take_end([frame], pid, outcome)
        elif zygote.alive:  # it does not answer: replace it
            log.warning("the fork server did not report the end of child %d; restarting it", pid)
            zygote.close(kill=True)

    # ---------------------------------------------------------------- results
    def _finish(
        self,
        job: Job,
        ldict: Dict[str, Any],
        outcome: _Outcome,
        out: _Capture,
        err: _Capture,
        msgs: _Messages,
        memory_mb: int,
    ) -> Dict[str, Any]:
        """The job's trace: the child's report, or a status from how the child ended."""
        status = outcome.wait_status
        if msgs.result is not None and not outcome.timed_out:
            trace = dict(msgs.result)
            if trace.get("status") == "exception" and trace.get("exception_type") == "MemoryError":
                trace["status"] = "memory"
        else:
            trace = self.blank_trace(job)
            trace["wall_time_s"] = round(outcome.wall_time_s, 6)
            how, what = self._classify(outcome, err, memory_mb, ldict)
            trace["status"] = how
            if msgs.oversize and how == "crashed":
                trace["status"] = "error"
                trace["tracer_error"] = (
                    "the trace is larger than %d MiB; lower --max-events or --max-value-chars"
                    % (MAX_MESSAGE_BYTES >> 20)
                )
                what = None
            elif msgs.harness_error is not None and how == "crashed":
                trace["status"] = "error"
                trace["tracer_error"] = "the batch child failed: " + msgs.harness_error
                what = None
            trace["exception_message"] = what
            log.debug("%s: %s (%s), wait status %#x", job.program_id, trace["status"], what, status)
        if msgs.garbled:
            log.warning("%s: its report channel carried unreadable or foreign data", job.program_id)
        trace["program_id"] = job.program_id
        trace["entrypoint"] = job.entrypoint if job.mode == "call" else trace.get("entrypoint")
        trace["input"] = job.trace_input if job.mode != "pytest" else trace.get("input")
        trace["limits"] = ldict
        trace["stdout"] = decode_output(bytes(out.data))
        trace["stderr"] = decode_output(bytes(err.data))
        trace["output_truncated"] = out.truncated or err.truncated
        return trace

    def _classify(
        self, outcome: _Outcome, err: _Capture, memory_mb: int, ldict: Dict[str, Any]
    ) -> Tuple[str, Optional[str]]:
        """(status, message) for a child that did not report."""
        if outcome.server_lost and not outcome.timed_out:
            return "crashed", (
                "killed with the batch runner's fork server, which died while the program ran"
                " (a program can kill its parent process)"
            )
        if outcome.test_timed_out:
            return "timeout", "a test did not stop at its test_timeout_s; killed after %.1fs" % outcome.wall_time_s
        if outcome.timed_out:
            return "timeout", "did not stop at its %gs timeout; killed after %.1fs" % (
                float(ldict.get("timeout_s") or 0),
                outcome.wall_time_s,
            )
        status = outcome.wait_status
        stderr_tail = bytes(err.data[-4096:])
        memory_words = (b"MemoryError", b"Cannot allocate memory", b"out of memory")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return "timeout", "killed by signal %d (SIGXCPU): CPU time limit exceeded" % sig
            if sig == signal.SIGKILL and self._oom_file is not None:
                kills = _oom_kill_count(self._oom_file)
                if kills is not None and kills > self._oom_kills:
                    self._oom_kills = kills
                    return (
                        "memory",
                        "killed by signal 9 (SIGKILL) by the out-of-memory killer (cgroup memory limit)",
                    )
            near_limit = memory_mb > 0 and outcome.maxrss_kb >= 0.9 * memory_mb * 1024
            if sig == signal.SIGKILL and near_limit:
                return (
                    "memory",
                    "killed by signal 9 (SIGKILL) at %d MB resident: the memory limit"
                    % (outcome.maxrss_kb // 1024),
                )
            if any(w in stderr_tail for w in memory_words):
                return "memory", "killed by signal %d (%s) after running out of memory" % (
                    sig,
                    _signal_name(sig),
                )
            return "crashed", "killed by signal %d (%s)" % (sig, _signal_name(sig))
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        if any(w in stderr_tail for w in memory_words) and code != 0:
            return "memory", "exited with code %d after running out of memory" % code
        return "crashed", "exited with code %d via os._exit, without reporting a trace" % code

    def blank_trace(self, job: Job) -> Dict[str, Any]:
        """A trace object with every key of the stream format and no events."""
        trace = self._blank(job.program_id)
        if job.mode == "call":
            trace["entrypoint"] = job.entrypoint
        trace["input"] = job.trace_input
        trace["limits"] = _limits_dict(_with_timeout(self.limits, job.timeout_s))
        return trace

    def error_trace(self, program_id: str, message: str) -> Dict[str, Any]:
        """The row of a job that cannot run (malformed line): status `error`, `tracer_error` says why."""
        trace = self._blank(program_id)
        trace["status"] = "error"
        trace["tracer_error"] = message
        return trace

    def _blank(self, program_id: str) -> Dict[str, Any]:
        used, reason = _backend_choice(self.backend)
        return blank_trace(
            program_id, limits=_limits_dict(self.limits), backend=used, backend_reason=reason
        )

    # ---------------------------------------------------------------- processes
    def _start_processes(self) -> None:
        self._pid = os.getpid()
        if self.max_procs > 0:
            self._nproc_base = _count_processes_of(os.getuid())
        self._subreaper = _set_subreaper(True)
        self._oom_file = _find_oom_counter()
        if self._oom_file is not None:
            self._oom_kills = _oom_kill_count(self._oom_file) or 0

    def _stop_processes(self) -> None:
        self._close_zygote()  # it kills and reaps the last program and what that left behind
        if self._subreaper:
            self._kill_orphans()
            _set_subreaper(False)

    def _kill_orphans(self) -> None:
        """Kill and reap our children other than the fork server (a dead server's orphans)."""
        if not self._subreaper:
            return
        server = self._zygote.pid if self._zygote is not None else -1
        path = "/proc/self/task/%d/children" % self._pid
        for _ in range(100):
            try:
                pids = [int(p) for p in _read_small(path).split() if int(p) != server]
            except (OSError, ValueError):
                return
            if not pids:
                return
            kill_and_reap(pids)


def _job_work(
    job: Job,
    backend: str,
    limits: Any,
    include: Sequence[str],
    exclude: Sequence[str],
    scratch: Sequence[str] = (),
    startup_modules: Optional[Sequence[str]] = None,
) -> Callable[..., Dict[str, Any]]:
    """What the child runs for `job`: a function of `emit` (extra traces) and `note` (progress
    messages) returning the trace. A script with `modules` or `files` runs in a folder of its own
    (under the first scratch directory, else the temporary directory), removed afterwards;
    `startup_modules`: see `_script_in_folder`."""

    def work(
        emit: Callable[[Dict[str, Any]], None], note: Callable[[Dict[str, Any]], None]
    ) -> Dict[str, Any]:
        from tracer import api

        common = dict(
            program_id=job.program_id,
            source=job.source,
            backend=backend,
            limits=limits,
            include=include,
            exclude=exclude,
            capture_output=False,
            events_as_json=True,  # the runner writes them as they come (see encode_result)
        )
        if job.mode == "call":
            path = job.file or _pseudo_path(job)
            return api.trace_call(path, job.entrypoint or "", job.input or "", **common)
        if job.mode == "script" and (job.modules or job.files):
            return _script_in_folder(job, scratch, common, startup_modules or ())
        if job.mode == "script":
            path = job.file or _pseudo_path(job)
            return api.trace_script(path, job.argv, **common)
        from tracer import pytest_mode

        return pytest_mode.run_pytest_job(
            job, emit, note=note, backend=backend, limits=limits, include=include, exclude=exclude
        )

    return work


def _script_in_folder(
    job: Job, scratch: Sequence[str], common: Dict[str, Any], startup_modules: Sequence[str]
) -> Dict[str, Any]:
    """Trace `job`'s script run as `cd FOLDER && python NAME.py` next to its modules and data
    files (its folder the working directory and first on sys.path, `__file__` its path, as that
    command makes them); events name the files relative to the folder.

    A module of the folder named like one this process has loaded (the runner's, the tracer's:
    `json`, `random`, ...) is what `python FOLDER/NAME.py` imports under that name, unless a new
    interpreter loads that name before any script runs (`startup_modules`: `os`, `io`, ...). So
    the loaded one is dropped from `sys.modules` (in this child only, which runs one program):
    the tracer keeps its own references to it, the program imports the folder's."""
    import tempfile

    from tracer import api

    startup = frozenset(startup_modules)
    for top in sorted({path.split("/", 1)[0][:-3] if path.endswith(".py") and "/" not in path
                       else path.split("/", 1)[0] for path, _ in job.modules}):  # fmt: skip
        if top in sys.modules and top not in startup:
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]

    parent = scratch[0] if scratch else tempfile.gettempdir()
    name = script_file_name(job.program_id)
    try:
        folder = write_program_folder(parent, name, job.source or "", job.modules, job.files)
    except (OSError, UnicodeError) as exc:
        message = "cannot write the program's folder under %s: %s" % (parent, exc)
        return api.error_trace(job.program_id, common["limits"], message, common["backend"])
    pid = os.getpid()
    try:
        path = os.path.join(folder, name)
        return api.trace_script(path, job.argv, relative_to=(folder + os.sep,), cwd=folder, **common)
    finally:
        if os.getpid() == pid:  # not in a process the program forked
            remove_program_folder(folder)


def _kill_after(timeout_s: float) -> float:
    """When the runner kills a child whose own deadline is `timeout_s` (0: never): a grace
    period later, for the in-process deadline to end it with its trace first."""
    if timeout_s <= 0:
        return 0.0
    return timeout_s + min(KILL_GRACE_MAX_S, max(KILL_GRACE_MIN_S, 0.5 * timeout_s))


def _test_kill_after(test_timeout_s: float) -> float:
    """When the runner kills a pytest job's child whose test has run this long: its deadline
    plus a grace period (2-10 s), for the exception raised at the deadline to end the test, and
    a call it was in to become a trace and be sent (100,000 events take seconds)."""
    if test_timeout_s <= 0:
        return 0.0
    return test_timeout_s + min(REPORT_GRACE_S, max(2.0, test_timeout_s))


def _note_lost_tests(
    trace: Dict[str, Any], lost: List[Tuple[str, str, Optional[str]]], outputs: List[Tuple[str, str, bool]], cap: int
) -> None:
    """The row of a pytest job whose process ended in a test: every child's output, a note after
    each one that was ended, and pytest's exit code counting the lost tests as failed."""
    notes = [
        "worldtrace: pytest's process ended in test %s (%s); %s\n"
        % (nodeid, how, "pytest ran again without it and the tests before it" if stop is None
           else "pytest was not started again: %s" % stop)
        for nodeid, how, stop in lost
    ]  # fmt: skip
    stdout, stderr, truncated = "", "", False
    for i, (out, err, cut) in enumerate(outputs):
        note = notes[i] if i < len(notes) else ""
        stdout += out + ("\n" if note and out and not out.endswith("\n") else "") + note
        stderr += err + ("\n" if note and err and not err.endswith("\n") else "") + note
        truncated = truncated or cut
    if cap > 0:
        stdout, cut_out = _cap_text(stdout, cap)
        stderr, cut_err = _cap_text(stderr, cap)
        truncated = truncated or cut_out or cut_err
        # The notes outlive the cap (at most MAX_TEST_RESTARTS + 1 short lines).
        stdout += "".join(note for note in notes if note not in stdout)
        stderr += "".join(note for note in notes if note not in stderr)
    trace["stdout"], trace["stderr"], trace["output_truncated"] = stdout, stderr, truncated
    trace["truncated"] = True  # what the lost tests would have called is missing
    trace["truncated_reason"] = trace.get("truncated_reason") or "events_lost"
    if trace.get("status") == "ok" and trace.get("return_value") in ("0", "5"):
        trace["return_value"] = "1"  # as pytest-xdist reports a test that crashed its worker


def _cap_text(text: str, cap: int) -> Tuple[str, bool]:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", "ignore"), True


def _take_end(frames: List[Message], pid: int, outcome: _Outcome) -> bool:
    """Whether `frames` hold the end of child `pid` (then its wait status is in `outcome`)."""
    for kind, child, status, maxrss_kb in frames:
        if kind == b"X" and child == pid:
            outcome.wait_status = int(status)
            outcome.maxrss_kb = maxrss_kb
            return True
    return False  # the end of an earlier child (not waited for), or nothing yet


def _pseudo_path(job: Job) -> str:
    """File name for a program given as source text (what its code objects and events show).

    The prefix keeps its module name (the file's stem) from shadowing a real module: a program
    with id "json" must still be able to `import json`.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job.program_id)
    return "program_%s.py" % safe


def _backend_choice(backend: str) -> Tuple[Optional[str], Optional[str]]:
    """(backend that would run, why not monitoring) as the core chooses it."""
    try:
        from tracer.backends.select import choose_backend

        cls, reason = choose_backend(backend)
        return str(cls.name), reason
    except Exception as exc:  # unknown or unavailable backend: the rows say so
        return None, "backend %r unavailable: %s" % (backend, exc)


def _tracer_version() -> str:
    import tracer

    return str(getattr(tracer, "__version__", "unknown"))


def _read_small(path: str) -> bytes:
    """A small /proc file's content, without a Python file object (this runs once per program)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def _drain(fds: List[int], sinks: Dict[int, Any]) -> None:
    """Read what is left in the pipes after every writer is gone (never blocks)."""
    fds = list(fds)
    while fds:
        ready, _, _ = select.select(fds, [], [], 0)
        if not ready:
            return
        for fd in ready:
            chunk = os.read(fd, READ_CHUNK)
            if chunk:
                sinks[fd].add(chunk)
            else:
                fds.remove(fd)


def _set_subreaper(on: bool) -> bool:
    return prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def _count_processes_of(uid: int) -> int:
    count = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _find_oom_counter() -> Optional[str]:
    """The file with this cgroup's `oom_kill` counter (cgroup v2 memory.events or v1 oom_control)."""
    candidates = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                path = parts[2].rstrip("/")
                if parts[1] == "":
                    candidates.append("/sys/fs/cgroup%s/memory.events" % path)
                elif "memory" in parts[1].split(","):
                    candidates.append("/sys/fs/cgroup/memory%s/memory.oom_control" % path)
    except OSError:
        pass
    candidates += ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]
    for path in candidates:
        if _oom_kill_count(path) is not None:
            return path
    return None


def _oom_kill_count(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


def _ensure_std_fds() -> None:
    """Open /dev/null on a closed fd 0-2, so that no pipe of a child lands there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)


def _flush_parent_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _per(seconds: float, n: int) -> float:
    return round(seconds * 1000 / n, 3) if n else 0.0


def _per_n(count: int, n: int) -> float:
    return round(count / n, 1) if n else 0.0


def _minor_faults() -> Tuple[int, int]:
    """Minor page faults of the runner and of its reaped children so far ((0, 0) without resource)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0, 0
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt,
    )


def _median(values: List[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _append_runinfo(out_path: str, summary: Dict[str, Any]) -> None:
    """One line per batch run in OUT.runs.jsonl: environment, versions, counts, throughput."""
    try:
        with open(out_path + ".runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(summary, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("cannot write the run record %s.runs.jsonl: %s", out_path, exc)
