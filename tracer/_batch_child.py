"""What a forked batch child does: sandbox itself, run one job under the tracer, report, exit.

Everything here runs in the child after `os.fork()`; every path ends in `os._exit` so that the child
never returns into the parent's batch loop.
"""

from __future__ import annotations

import io
import mmap
import os
import random
import signal
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from tracer.jsonl import RawJSON, dumps_ascii, dumps_utf8

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

try:  # resource is POSIX-only; the batch runner needs fork anyway
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]


def _result_fd() -> int:
    # The report channel is moved above the fds programs commonly close (closerange(3, 256)).
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else 1024
    except (ValueError, OSError):
        soft = 1024
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        soft = 1024
    return max(3, min(1000, soft - 1))


RESULT_FD = _result_fd()
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
BALLAST_BYTES = 16 << 20  # freed after the program so a memory-starved child can still report
EXIT_REPORTED = 0
EXIT_HARNESS_FAILED = 70

# prctl(2) options
PR_SET_PDEATHSIG = 1


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


LIBC = _libc()
_PRCTL = (
    getattr(LIBC, "prctl", None) if sys.platform.startswith("linux") else None
)  # resolved once, in the parent


def prctl(option: int, arg: int) -> bool:
    """Linux prctl(2) through libc; False where it is unavailable or fails."""
    if _PRCTL is None:
        return False
    try:
        return int(_PRCTL(option, arg, 0, 0, 0)) == 0
    except (OSError, TypeError, ValueError):
        return False


def set_parent_death_signal(parent_pid: int) -> None:
    """Be SIGKILLed if the runner dies (e.g. killed by the host), so no program outlives it."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(EXIT_HARNESS_FAILED)


# What a fresh interpreter has (SIGCHLD is reset first, before anything else in the child).
FRESH_HANDLERS = (
    (signal.SIGINT, signal.default_int_handler),
    (signal.SIGTERM, signal.SIG_DFL),
)


def signals_to_reset() -> List[int]:
    """In the parent: the signals whose current handler a child must reset."""
    wanted = ((signal.SIGCHLD, signal.SIG_DFL),) + FRESH_HANDLERS
    return [int(signum) for signum, handler in wanted if signal.getsignal(signum) is not handler]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def encode(message: Dict[str, Any]) -> bytes:
    """One message to the parent: a JSON line (ASCII, so lone surrogates survive the trip)."""
    return dumps_ascii(message).encode("ascii") + b"\n"


def encode_result(trace: Dict[str, Any]) -> bytes:
    """The child's report: the trace without its events, then its events on the next line as the
    runner's output writes them (so the runner checks them but does not encode them again)."""
    events = trace.get("events")
    if type(events) is not RawJSON:
        if not isinstance(events, list):
            return encode({"kind": "result", "trace": trace})
        events = dumps_utf8(events)
    head = dict(trace)
    head["events"] = None  # keeps the key's place in the output line
    return encode({"kind": "result", "trace": head, "events": "next-line"}) + events + b"\n"


def send(fd: int, message: Dict[str, Any]) -> None:
    _write_all(fd, encode(message))


RAN_LINE = encode({"kind": "ran"})
QUICK_REPORT_EVENTS = 1000  # a trace this small is serialised in milliseconds
QUICK_REPORT_MARGIN_S = 1.0
_monotonic = time.monotonic  # as imported: the program may have replaced time.monotonic


def quick_report(trace: Dict[str, Any], deadline: float) -> bool:
    """Whether 'ran' can go with the result in one write instead of ahead of it.

    'ran' tells the parent that the program is over and only its report is on the way, so that
    it waits past the deadline for a trace that takes long to serialise. A small trace far from
    the deadline needs no such notice: one write (and one wake-up of the parent) instead of two.
    """
    events = trace.get("events") if isinstance(trace, dict) else None
    if type(events) is RawJSON:
        n = trace.get("n_events")
    else:
        n = len(events) if isinstance(events, list) else None
    if not isinstance(n, int) or n > QUICK_REPORT_EVENTS:
        return False
    return deadline <= 0 or _monotonic() < deadline - QUICK_REPORT_MARGIN_S


class ChildSetup(object):
    """What the parent prepared for one child: its pipes and limits."""

    def __init__(
        self,
        parent_pid: int,
        stdout_w: int,
        stderr_w: int,
        result_w: int,
        keep_fds: List[int],
        memory_mb: int,
        cpu_s: int,
        nproc: int,
        fsize_bytes: int,
        reset_signals: Optional[List[int]] = None,
        deadline: float = 0.0,
        startup_modules: Optional[List[str]] = None,
        stdin: Optional[str] = None,
    ) -> None:
        self.parent_pid = parent_pid
        self.stdout_w = stdout_w
        self.stderr_w = stderr_w
        self.result_w = result_w
        self.keep_fds = keep_fds
        self.memory_mb = memory_mb
        self.cpu_s = cpu_s
        self.nproc = nproc
        self.fsize_bytes = fsize_bytes
        # The signals whose handler differs from a fresh interpreter's (None: reset them all);
        # the parent knows its own handlers, so the child skips the resets that change nothing.
        self.reset_signals = reset_signals
        self.deadline = deadline  # time.monotonic() of the parent's kill (0: none)
        # A script job with `modules`: what `python SCRIPT` has loaded before the script runs
        # (see tracer/batch.py, startup_modules); None for other jobs.
        self.startup_modules = startup_modules
        # A script job's standard input (None: /dev/null); set in the child from its job.
        self.stdin = stdin


_CLOSE_RANGE = getattr(LIBC, "close_range", None) if sys.platform.startswith("linux") else None


def close_inherited_fds(keep: List[int]) -> None:
    """Close every fd but `keep`: the runner's output file must not be reachable by programs."""
    if _CLOSE_RANGE is not None and _close_ranges(sorted(set(keep))):
        return
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _close_ranges(keep: List[int]) -> bool:
    """close_range(2) on the gaps between the kept fds (one syscall each); False if unsupported."""
    first = 0
    for fd in keep + [0x7FFFFFFF]:
        if fd > first:
            try:
                if int(_CLOSE_RANGE(first, fd - 1, 0)) != 0:  # type: ignore[misc]
                    return False  # ENOSYS (kernel < 5.9): the caller closes them one by one
            except (OSError, TypeError, ValueError):
                return False
        first = fd + 1
    return True


def _new_std_streams() -> List[Any]:
    """New stdin, stdout, stderr on fds 0-2, configured as the interpreter configures them for
    pipes (what each is depends on what the fds are when it is made: /dev/null, pipes)."""
    out_enc = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    out_err = getattr(sys.__stdout__, "errors", None) or "strict"
    # -u / PYTHONUNBUFFERED: the interpreter made stdout write-through; do the same.
    unbuffered = bool(
        getattr(sys.__stdout__, "write_through", False) or os.environ.get("PYTHONUNBUFFERED")
    )
    stdin = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding=out_enc, errors=out_err)
    stdout_bin = io.open(1, "wb", buffering=0 if unbuffered else -1, closefd=False)
    stdout = io.TextIOWrapper(
        stdout_bin, encoding=out_enc, errors=out_err, write_through=unbuffered
    )
    stderr_bin = io.open(2, "wb", buffering=0 if unbuffered else -1, closefd=False)
    stderr = io.TextIOWrapper(
        stderr_bin,
        encoding=out_enc,
        errors="backslashreplace",
        line_buffering=True,
        write_through=unbuffered,
    )
    streams = [stdin, stdout, stderr]
    for name, stream in zip(STD_NAMES, streams):
        # Named as the interpreter names its own (create_stdio): "<stdout>", mode "w".
        raw = getattr(stream.buffer, "raw", stream.buffer)
        raw.name = "<%s>" % name
        stream.mode = "r" if name == "stdin" else "w"
    return streams


STD_NAMES = ("stdin", "stdout", "stderr")
# The next child's std streams, made in the fork server before it forks (see prepare_std_streams).
_prepared_streams: Optional[List[Any]] = None


def prepare_std_streams() -> None:
    """In the fork server: make the std streams of the children ahead of the forks.

    Making them costs a child ~0.7 ms (codec lookups, nine objects, ~100 pages copied); made
    once here and never used here, each child gets them as new. They are made over what a
    child has on fds 0-2 (/dev/null, then pipes), put there for the time it takes: an io
    object asks its fd what it is (tty, seekable, block size) when it is made, never again
    until it is used. This process's own fds 0-2 are put back.
    """
    global _prepared_streams
    saved: List[int] = []
    try:
        for fd in (0, 1, 2):
            saved.append(os.dup(fd))
    except OSError:  # a closed fd (the runner opens them all): the children make their own
        for fd in saved:
            os.close(fd)
        return
    devnull = os.open(os.devnull, os.O_RDONLY)
    pipe_r, pipe_w = os.pipe()
    try:
        os.dup2(devnull, 0)
        os.dup2(pipe_w, 1)
        os.dup2(pipe_w, 2)
        _prepared_streams = _new_std_streams()
    finally:
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
        for fd in saved + [devnull, pipe_r, pipe_w]:
            os.close(fd)


def _fresh_std_streams() -> None:
    """New sys.std* on fds 0-2: the prepared ones, or made here."""
    global _prepared_streams
    streams, _prepared_streams = _prepared_streams, None
    if streams is None:
        streams = _new_std_streams()
    for name, stream in zip(STD_NAMES, streams):
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)  # as at interpreter start: the same objects


def _vm_bytes() -> int:
    """Current virtual size of this process (what RLIMIT_AS counts)."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            pages = int(os.read(fd, 256).split()[0])
        finally:
            os.close(fd)
        return pages * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _set_limit(which: int, value: int) -> None:
    if resource is None:
        return
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        pass


def _first_to_go_when_out_of_memory() -> None:
    """When the sandbox runs out of memory (a program's tmpfs files and shared memory count too,
    not only its address space), the kernel's OOM killer picks the program, never the runner:
    raising one's own oom_score_adj needs no privilege (the runner reports the kill as memory)."""
    try:  # raw calls: a file object costs a child ~100 us of pages to copy
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass


def apply_limits(setup: ChildSetup) -> None:
    """Resource limits of the program (they apply to the tracer in this child too)."""
    if resource is None:
        return
    _set_limit(resource.RLIMIT_CORE, 0)  # a segfault must not write a core file
    if setup.fsize_bytes > 0:
        _set_limit(resource.RLIMIT_FSIZE, setup.fsize_bytes)
    if setup.cpu_s > 0:
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        try:  # SIGXCPU at the soft limit, SIGKILL at the hard one
            resource.setrlimit(resource.RLIMIT_CPU, (setup.cpu_s, setup.cpu_s + 1))
        except (ValueError, OSError):
            pass
    if setup.nproc > 0:
        _set_limit(resource.RLIMIT_NPROC, setup.nproc)
    if setup.memory_mb > 0:
        # The limit is on top of what the warm runner already maps, so memory_mb is the program's.
        _set_limit(resource.RLIMIT_AS, _vm_bytes() + setup.memory_mb * (1 << 20))


def run_child(
    setup: ChildSetup,
    run: Callable[[Callable[[Dict[str, Any]], None], Callable[[Dict[str, Any]], None]], Dict[str, Any]],
    confine: Optional[Callable[[], None]] = None,
) -> None:
    """The child's whole life: sandbox, run `run(emit, note)`, report its trace, `os._exit`. Never
    returns. `emit` reports an extra trace, `note` any other message (a pytest job's progress).

    `confine` (the runner's Landlock confinement, see tracer/_landlock.py) is applied last, just
    before the program runs; if it fails, the job is a harness error rather than an unconfined run.
    """
    pid = os.getpid()
    code = EXIT_HARNESS_FAILED
    result_fd = -1
    try:
        os.setpgid(0, 0)
        set_parent_death_signal(setup.parent_pid)
        resets = setup.reset_signals
        if resets is None or signal.SIGCHLD in resets:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(_stdin_fd(setup.stdin), 0)
        os.dup2(setup.stdout_w, 1)
        os.dup2(setup.stderr_w, 2)
        os.dup2(setup.result_w, RESULT_FD)
        result_fd = RESULT_FD
        close_inherited_fds([0, 1, 2, RESULT_FD] + setup.keep_fds)
        _fresh_std_streams()
        for signum, handler in FRESH_HANDLERS:
            if resets is None or signum in resets:
                signal.signal(signum, handler)
        _reset_logging()
        # Reserved (not touched) before the limits are set, released before reporting: a child
        # whose program ran out of memory still has room to serialise its trace.
        ballast: Optional[mmap.mmap] = mmap.mmap(-1, BALLAST_BYTES)
        apply_limits(setup)
        _first_to_go_when_out_of_memory()
        if confine is not None:
            confine()
        random.seed(0)

        def emit(trace: Dict[str, Any]) -> None:
            if os.getpid() == pid:
                send(result_fd, {"kind": "trace", "trace": trace})

        def note(message: Dict[str, Any]) -> None:
            if os.getpid() == pid:
                send(result_fd, message)

        trace = run(emit, note)
        quick = os.getpid() == pid and quick_report(trace, setup.deadline)
        if os.getpid() == pid and not quick:  # the program is over: the parent waits for the report
            _write_all(result_fd, RAN_LINE)
        if ballast is not None:
            ballast.close()
            ballast = None
        _flush_std_streams()
        if os.getpid() != pid:
            # A process the program forked has come back up through the tracer: it ends here,
            # as it would have ended at the end of the program, without reporting.
            os._exit(0 if trace.get("status") == "ok" else 1)
        try:
            report = encode_result(trace)
        except MemoryError:
            report = encode({"kind": "result", "trace": _memory_report(trace)})
        _write_all(result_fd, RAN_LINE + report if quick else report)
        code = EXIT_REPORTED
    except BaseException:  # the harness itself failed: say so on the result channel
        try:
            _flush_std_streams()
            if result_fd >= 0 and os.getpid() == pid:
                send(result_fd, {"kind": "harness_error", "error": traceback.format_exc()})
        except BaseException:
            pass
    finally:
        os._exit(code)


def _stdin_fd(text: Optional[str]) -> int:
    """A read-only view for fd 0: /dev/null, or a file holding `text` as UTF-8, at its start, as
    `python SCRIPT < FILE` has it (a regular file: seekable, its size known). In memory where
    the kernel has memfd_create, else an unlinked temporary file."""
    if text is None:
        return os.open(os.devnull, os.O_RDONLY)
    data = text.encode("utf-8")
    memfd_create = getattr(os, "memfd_create", None)
    try:
        fd = memfd_create("stdin", getattr(os, "MFD_CLOEXEC", 1)) if memfd_create is not None else -1
    except OSError:
        fd = -1
    if fd < 0:
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _reset_logging() -> None:
    """Logging as a fresh interpreter has it: the runner's handlers must not format the program's
    records, and the program's own logging.basicConfig() must take effect."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if root.level != logging.WARNING:  # setLevel clears every logger's cache: pages to copy
        root.setLevel(logging.WARNING)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass


def _memory_report(trace: Dict[str, Any]) -> Dict[str, Any]:
    """A trace too big to serialise in what memory is left: keep the outcome, drop the events."""
    small = {k: v for k, v in trace.items() if k != "events"}
    small["events"] = []
    small["n_events"] = 0
    small["truncated"] = True
    small["truncated_reason"] = "max_trace_bytes"
    return small
