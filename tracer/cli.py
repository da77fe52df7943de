"""Command line inside the container: ``python -m tracer call|run|batch``.

Examples::

    python -m tracer call prog.py f --input "'abc', 3" --out trace.jsonl
    python -m tracer run script.py --backend settrace -- --flag value
    python -m tracer batch jobs.jsonl --out traces.jsonl --timeout 10
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys

from . import __version__
from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .api import Limits, trace_call, trace_script
from .backends.select import BACKEND_NAMES
from .jsonl import write_trace


def _add_common(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument("--backend", choices=BACKEND_NAMES, default="auto",
                   help="tracing mechanism (default: auto = sys.monitoring where available, "
                        "else settrace; $WORLDTRACE_BACKEND overrides auto)")
    p.add_argument("--max-events", type=int, default=d.max_events, metavar="N",
                   help="stop recording after N events (0 = unlimited; default %(default)s)")
    p.add_argument("--max-value-chars", type=int, default=d.max_value_chars, metavar="N",
                   help="character budget per rendered value (0 = unlimited; default %(default)s)")
    p.add_argument("--max-items", type=int, default=d.max_items, metavar="N",
                   help="items rendered per container (0 = unlimited; default %(default)s)")
    p.add_argument("--max-depth", type=int, default=d.max_depth, metavar="N",
                   help="nesting depth rendered (0 = unlimited; default %(default)s)")
    p.add_argument("--max-output-bytes", type=int, default=d.max_output_bytes, metavar="N",
                   help="cap on captured stdout and stderr each (0 = unlimited; default %(default)s)")
    p.add_argument("--timeout", type=float, default=0, metavar="S",
                   help="wall-clock limit per program in seconds (0 = none)")
    p.add_argument("--memory-mb", type=int, default=0, metavar="MB",
                   help="memory limit per program (batch; 0 = none)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="also trace files matching GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="never trace files matching GLOB (repeatable)")
    p.add_argument("--out", default="-", metavar="PATH", help="JSON Lines output (default: stdout)")


def _limits(args) -> Limits:
    for name in ("max_events", "max_value_chars", "max_items", "max_depth", "max_output_bytes", "memory_mb"):
        if getattr(args, name) < 0:
            raise SystemExit("error: --%s must be >= 0" % name.replace("_", "-"))
    if args.timeout < 0:
        raise SystemExit("error: --timeout must be >= 0")
    return Limits(
        max_events=args.max_events,
        max_value_chars=args.max_value_chars,
        max_items=args.max_items,
        max_depth=args.max_depth,
        max_output_bytes=args.max_output_bytes,
        timeout_s=args.timeout,
        memory_mb=args.memory_mb,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracer",
        description="Record line-level execution traces (JSON Lines, schemas/trace_stream.md).",
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="worldtrace tracer %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="{call,run,batch}")
    sub.required = True

    p = sub.add_parser("call", help="trace ENTRY(ARGS) from FILE (CRUXEval style)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("entry", metavar="ENTRY")
    p.add_argument("--input", default="", metavar="ARGS",
                   help="Python argument text evaluated as a whole call, e.g. \"'abc', 3\" "
                        "(default: no arguments)")
    p.add_argument("--program-id", default=None)
    _add_common(p)

    p = sub.add_parser("run", help="trace SCRIPT run as __main__",
                       usage="python -m tracer run SCRIPT [options] [-- SCRIPT_ARGS...]",
                       description="Options go before `--`; everything after it is the script's argv.")
    p.add_argument("script", metavar="SCRIPT")
    p.add_argument("--program-id", default=None)
    _add_common(p)

    p = sub.add_parser("batch", help="trace many programs, each in a forked child")
    p.add_argument("jobs", metavar="JOBS.jsonl")
    p.add_argument("--scratch", action="append", default=[], metavar="DIR",
                   help="a directory only the programs use (a sandbox's /tmp), emptied before each "
                        "program (repeatable; never a shared directory)")
    p.add_argument("--confine", action="store_true",
                   help="confine each program with Landlock (Linux >= 5.13): it may write files only "
                        "in the --scratch directories, and (Linux >= 6.12) may not signal the runner")
    p.add_argument("--private-ipc", action="store_true",
                   help="the runner has an IPC namespace of its own (a container): remove the System V "
                        "IPC objects (shared memory, queues, semaphores) each program leaves")
    _add_common(p)
    return parser


def _split_script_args(argv: list) -> tuple:
    """``run``'s own arguments and, after the first ``--``, the script's argv."""
    positionals = [a for a in argv if not a.startswith("-")]
    if positionals[:1] == ["run"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


class _Output:
    """Where the trace goes. For stdout, the JSON gets a private copy of fd 1 and fd 1 points at
    stderr from then on: a program writing to fd 1 itself (``os.write(1, ...)``, a subprocess),
    and what runs after the trace is written (its ``atexit`` handlers, finalizers at interpreter
    exit), cannot break the JSON Lines (those bytes are not in the trace's ``stdout``, which is
    what the program wrote through ``sys.stdout`` while it was traced)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.saved_fd = -1
        if path == "-":
            sys.stdout.flush()
            # Above the low numbers, so that the program's own files get the ones they would get
            # (unless the descriptor limit is that low).
            try:
                self.saved_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 100)
            except OSError:
                self.saved_fd = os.dup(1)
            os.dup2(2, 1)

    def write(self, trace: dict) -> None:
        if self.path == "-":
            with os.fdopen(os.dup(self.saved_fd), "w", encoding="utf-8") as out:
                write_trace(out, trace)
        else:  # the one trace of call/run replaces the file (batch appends, to resume)
            with open(self.path, "w", encoding="utf-8") as out:
                write_trace(out, trace)

    def close(self) -> None:
        if self.saved_fd >= 0:
            os.close(self.saved_fd)  # fd 1 stays on stderr (see above)
            self.saved_fd = -1


def main(argv=None) -> int:
    parser = build_parser()
    argv, script_args = _split_script_args(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    limits = _limits(args)
    if args.command == "batch":
        if args.out == "-":
            parser.error("batch needs --out PATH (finished programs found there are skipped)")
        from .batch import run_batch  # lazily: only the batch runner needs it

        return int(run_batch(args.jobs, args.out, backend=args.backend, limits=limits,
                             include=tuple(args.include), exclude=tuple(args.exclude),
                             scratch=tuple(args.scratch), confine=args.confine,
                             private_ipc=args.private_ipc))
    out = _Output(args.out)

    def hard_timeout(trace: dict) -> None:
        # The program caught its timeout and kept running: write what was recorded, and end.
        out.write(trace)
        out.close()
        os._exit(0)

    common = dict(program_id=args.program_id, backend=args.backend, limits=limits,
                  include=tuple(args.include), exclude=tuple(args.exclude), events_as_json=True,
                  on_hard_timeout=hard_timeout)
    try:
        if args.command == "call":
            trace = trace_call(args.file, args.entry, args.input, **common)
        else:
            trace = trace_script(args.script, script_args, **common)
        out.write(trace)
    finally:
        out.close()
    if trace["status"] == "timeout":
        # The deadline stops the traced call, not the threads it started: end now, as the
        # deadline says, instead of waiting for them at interpreter exit.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(0)
    if trace["status"] == "error":
        # The trace (written above) says why; so does the terminal, which is all a typo in FILE
        # or ENTRY shows a user who passed --out. The program has ended: this is our channel.
        print(f"python -m tracer {args.command}: error: {trace['tracer_error']}", file=sys.stderr)
        return 2
    return 0
