"""Public API: trace one call (CRUXEval style) or one script, get a trace object back.

The trace object and its events follow schemas/trace_stream.md (``worldtrace.stream/1``).
"""

from __future__ import annotations

import _signal  # signal's C functions: its wrappers look builtins up live (_builtins.py)
import builtins
import dataclasses
import importlib.machinery
import importlib.util
import io
import linecache
import os
import signal
import sys
import threading
import time
import types

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .backends.select import BackendUnavailable, choose_backend
from .env import PYBEHAVIOR, PYTHON_VERSION
from .jsonl import RawJSON, text_utf8, valid_text
from .recorder import Deadline, Recorder
from .render import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_VALUE_CHARS,
    Renderer,
    type_qualified_name,
)
from .scope import Scope
from .stream import blank_trace

DEFAULT_MAX_EVENTS = 100000
DEFAULT_MAX_OUTPUT_BYTES = 1 << 20
# A program that catches the timeout (``except BaseException``) gets it again this much later;
# after that, ``on_hard_timeout`` (if given) ends the run.
TIMEOUT_GRACE_S = 1.0
# The clock as imported: the program may replace time.perf_counter (a test's monkeypatch) and
# leave it so when it returns.
_perf_counter = time.perf_counter


@dataclasses.dataclass
class Limits:
    """Recording and resource budgets; 0 means unlimited / not set."""

    max_events: int = DEFAULT_MAX_EVENTS
    max_value_chars: int = DEFAULT_MAX_VALUE_CHARS
    max_items: int = DEFAULT_MAX_ITEMS
    max_depth: int = DEFAULT_MAX_DEPTH
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    timeout_s: float = 0
    memory_mb: int = 0

    def to_dict(self) -> dict:
        # Flat fields: a plain copy, not dataclasses.asdict's recursive deep copy (once per program).
        return dict(self.__dict__)


class _Timeout(Deadline):
    """Raised into the program by the in-process deadline (``Limits.timeout_s``)."""


class _CappedSink(io.RawIOBase):
    """A write-only byte sink that keeps at most ``cap`` bytes and swallows the rest."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap if cap > 0 else sys.maxsize
        self.parts: list = []
        self.size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = len(b)
        room = self.cap - self.size
        if room > 0:
            chunk = bytes(b[:room])
            self.parts.append(chunk)
            self.size += len(chunk)
        if n > max(room, 0):
            self.truncated = True
        return n


class _OutputCapture:
    """Replace sys.stdout / sys.stderr with capped text streams shaped like the originals."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.sinks: dict = {}
        self.streams: dict = {}
        self.saved: dict = {}

    def _stream(self, name: str):
        original = getattr(sys, name)
        encoding = getattr(original, "encoding", None)
        errors = getattr(original, "errors", None)
        sink = _CappedSink(self.cap)
        sink.name = "<%s>" % name  # as the interpreter names its own streams
        self.sinks[name] = sink
        stream = io.TextIOWrapper(
            io.BufferedWriter(sink),
            encoding=encoding if isinstance(encoding, str) else "utf-8",
            errors=errors if isinstance(errors, str) else "strict",
            line_buffering=False,
            write_through=True,
        )
        stream.mode = "w"
        self.streams[name] = stream
        return stream

    def __enter__(self):
        for name in ("stdout", "stderr"):
            self.saved[name] = getattr(sys, name)
            setattr(sys, name, self._stream(name))
        return self

    def __exit__(self, *exc) -> None:
        if not self.saved:
            return
        for name in ("stdout", "stderr"):
            try:
                self.streams[name].flush()
            except (ValueError, OSError):
                pass
            setattr(sys, name, self.saved[name])
        self.saved = {}

    def text(self, name: str) -> str:
        sink = self.sinks[name]
        data = b"".join(sink.parts)
        encoding = self.streams[name].encoding or "utf-8"
        try:
            text = data.decode(encoding, "surrogateescape")
        except LookupError:
            text = data.decode("utf-8", "surrogateescape")
        return valid_text(text)  # bytes that are not text as \xNN, as the output writes them

    @property
    def truncated(self) -> bool:
        return any(s.truncated for s in self.sinks.values())


def _base_trace(program_id: str, entry, input_text, limits: Limits) -> dict:
    return blank_trace(
        program_id, entrypoint=entry, input_text=input_text, limits=limits.to_dict(),
        python_version=PYTHON_VERSION,
    )


def error_trace(program_id: str, limits: Limits, message: str, backend: str = "auto") -> dict:
    """The `error` trace of a program that could not be started (``message`` says why)."""
    trace = _base_trace(program_id, None, None, limits)
    trace["backend"] = backend
    return _error(trace, message)


def _program_id(file: str) -> str:
    base = os.path.basename(file)
    stem = base[:-3] if base.endswith(".py") else base
    return stem or "program"


def _read_source(file: str) -> str:
    import tokenize

    with tokenize.open(file) as f:
        return f.read()


def _register_source(file: str, source: str) -> None:
    """Make ``source`` the text linecache serves for ``file`` (for the events' source lines).

    Split where the compiler ends lines (``\\n``, ``\\r\\n``, ``\\r``), as linecache reads a file, not
    also at the characters ``str.splitlines`` breaks at (``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``,
    ``\\x85``, ``\\u2028``, ``\\u2029``): that shifts the text of every later line against its number."""
    lines = [line + "\n" for line in source.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    if lines[-1] == "\n":  # the text after the last line end
        lines.pop()
    linecache.cache[file] = (len(source), None, lines, file)


class _Run:
    """Shared machinery of trace_call and trace_script: capture, deadline, backend, result."""

    def __init__(self, trace: dict, file: str, backend: str, limits: Limits, include, exclude, capture_output: bool):
        self.trace = trace
        self.file = file
        self.limits = limits
        self.capture_output = capture_output
        self.renderer = Renderer(limits.max_value_chars, limits.max_items, limits.max_depth)
        self.recorder = Recorder(self.renderer, Scope(file, include, exclude), limits.max_events)
        self.backend_cls, reason = choose_backend(backend)
        trace["backend"] = self.backend_cls.name
        trace["backend_reason"] = reason
        self.backend_obj = None
        self.events_as_json = False
        self.capture = None  # the _OutputCapture while the program runs
        self.on_hard_timeout = None
        self.in_program = False
        self.alarms = 0
        self.start = 0.0

    def traced(self, fn, *args, **kwargs):
        """Call ``fn`` with tracing on; returns (ok, value_or_exception)."""
        rec = self.recorder
        backend_obj = self.backend_cls(rec)
        self.backend_obj = backend_obj
        deadline = self._arm_deadline()
        start = self.start = _perf_counter()
        started = False
        try:
            try:
                backend_obj.start()
                started = True
            except Exception as exc:
                rec.fail(exc)
            try:
                self.in_program = True
                value = fn(*args, **kwargs)
                ok = True
            finally:
                self.in_program = False
                rec.check_complete()
                if started:
                    try:
                        backend_obj.stop()
                    except Exception as exc:
                        rec.fail(exc)
                rec.active = False
        except BaseException as exc:  # the program's own failure is data
            value, ok = exc, False
        finally:
            self.trace["wall_time_s"] = round(_perf_counter() - start, 6)
            self._disarm_deadline(deadline)
        return ok, value

    def _arm_deadline(self):
        seconds = self.limits.timeout_s
        if not seconds or seconds <= 0 or not hasattr(signal, "setitimer"):
            return None
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_alarm(signum, frame):
            if not self.in_program:
                return  # the program is over: the deadline is being disarmed
            self.alarms += 1
            if self.alarms > 1 and self.on_hard_timeout is not None:
                self.on_hard_timeout(self.abandon())  # does not return (see trace_call)
            signal.setitimer(signal.ITIMER_REAL, TIMEOUT_GRACE_S)  # in case the program catches this one
            raise _Timeout()

        previous = _signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return previous

    def _disarm_deadline(self, previous) -> None:
        if previous is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        _signal.signal(signal.SIGALRM, previous)

    def abandon(self) -> dict:
        """The trace of a program that swallowed its timeout: stop recording where it is."""
        self.in_program = False
        if self.backend_obj is not None:
            try:
                self.backend_obj.stop()
            except Exception as exc:
                self.recorder.fail(exc)
        self.recorder.active = False
        if self.capture is not None:
            self.capture.__exit__(None, None, None)
        self.trace["wall_time_s"] = round(_perf_counter() - self.start, 6)
        self.set_exception(_Timeout(), is_script=False)
        return self.finish(self.capture)

    def set_outcome(self, ok: bool, value, *, is_script: bool) -> None:
        trace = self.trace
        if self.alarms:  # the deadline passed, whatever the program made of it
            ok, value = False, _Timeout()
        if ok:
            trace["status"] = "ok"
            if not is_script:
                trace["return_value"] = self.renderer.render(value)
        else:
            self.set_exception(value, is_script=is_script)

    def set_exception(self, exc: BaseException, *, is_script: bool) -> None:
        trace = self.trace
        if issubclass(type(exc), _Timeout):
            trace["status"] = "timeout"
            trace["exception_message"] = "ran past timeout_s=%s" % self.limits.timeout_s
            return
        if is_script and type(exc) is SystemExit:
            code = exc.code  # compared only when a plain int (the program's object has its own __eq__)
            if code is None or ((type(code) is int or type(code) is bool) and code == 0):
                trace["status"] = "ok"
                return
        trace["status"] = "memory" if issubclass(type(exc), MemoryError) else "exception"
        trace["exception_type"] = type_qualified_name(type(exc))
        trace["exception_message"] = self.renderer.exception_message(exc)

    def finish(self, capture) -> dict:
        trace = self.trace
        rec = self.recorder
        if self.events_as_json:
            trace["events"] = RawJSON(text_utf8(rec.events_json()))
        else:
            trace["events"] = rec.event_dicts()
        trace["n_events"] = len(rec.events)
        if rec.truncated_reason:
            trace["truncated"] = True
            trace["truncated_reason"] = rec.truncated_reason
        if rec.error is not None:
            trace["status"] = "error"
            trace["tracer_error"] = rec.error
        if capture is not None:
            trace["stdout"] = capture.text("stdout")
            trace["stderr"] = capture.text("stderr")
            trace["output_truncated"] = capture.truncated
        return trace


def _error(trace: dict, message: str) -> dict:
    trace["status"] = "error"
    trace["tracer_error"] = message
    return trace


class _SysState:
    """Save and restore the bits of interpreter state a run may change (argv, path, modules)."""

    def __init__(self, file: str, module_name: str, module, argv, cwd: str | None = None) -> None:
        self.file = file
        self.module_name = module_name
        self.module = module
        self.argv = argv
        self.cwd = cwd  # None: the working directory stays
        self.saved_cwd: str | None = None

    def __enter__(self):
        self.saved_argv = sys.argv
        self.saved_path = list(sys.path)
        self.saved_module = sys.modules.get(self.module_name)
        sys.argv = list(self.argv)
        directory = os.path.dirname(os.path.abspath(self.file)) if os.path.exists(self.file) else None
        if directory and self.module_name == "__main__":
            # As `python SCRIPT`: the script's real folder first, in place of the working
            # directory that `python -m tracer` put there; nothing under -P (safe_path).
            directory = os.path.dirname(os.path.realpath(self.file))
            if getattr(sys.flags, "safe_path", False):
                pass
            elif sys.path and sys.path[0] in ("", os.getcwd()):
                sys.path[0] = directory
            else:
                sys.path.insert(0, directory)
        elif directory:
            sys.path.insert(0, directory)
        # Never shadow a module the interpreter already has (a program named json.py must
        # not replace the stdlib json for the duration of the run); __main__ is replaced, as
        # runpy does.
        self.registered = self.saved_module is None or self.module_name == "__main__"
        if self.registered:
            sys.modules[self.module_name] = self.module
        if self.cwd is not None:  # last: the paths above are the ones of the caller's directory
            try:
                self.saved_cwd = os.getcwd()
                os.chdir(self.cwd)
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc) -> None:
        sys.argv = self.saved_argv
        sys.path[:] = self.saved_path
        if self.saved_cwd is not None:
            try:
                os.chdir(self.saved_cwd)
            except OSError:  # the program removed it
                pass
        if not self.registered:
            return
        if self.saved_module is not None:
            sys.modules[self.module_name] = self.saved_module
        else:
            sys.modules.pop(self.module_name, None)


def _module_name(file: str) -> str:
    stem = _program_id(file)
    name = "".join(c if (c.isalnum() or c == "_") else "_" for c in stem)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def _resolve_entry(namespace: dict, entry: str):
    head, _, rest = entry.partition(".")
    if head not in namespace:
        raise LookupError("entry point %r is not defined in the program" % entry)
    obj = namespace[head]
    for part in rest.split(".") if rest else ():
        obj = getattr(obj, part)
    if not callable(obj):
        raise LookupError("entry point %r is not callable" % entry)
    return obj


def _collect_args(*args, **kwargs):
    return args, kwargs


class _Rejected(Exception):
    """The job cannot run at all; ``trace`` is its finished `error` trace."""

    def __init__(self, trace: dict) -> None:
        super().__init__(trace["tracer_error"])
        self.trace = trace


def _prepare(file, program_id, entry, input_text, source, backend, limits, include, exclude, capture_output):
    """The run of a new trace and the program's source (registered for line lookups), or _Rejected."""
    trace = _base_trace(program_id or _program_id(file), entry, input_text, limits)
    try:
        run = _Run(trace, file, backend, limits, include, exclude, capture_output)
    except BackendUnavailable as exc:
        trace["backend"] = exc.backend  # the one asked for: no other ran
        raise _Rejected(_error(trace, "backend unavailable: %s" % exc)) from None
    if source is None:
        try:
            source = _read_source(file)
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            raise _Rejected(_error(trace, "cannot read program %s: %s" % (file, exc))) from None
    _register_source(file, source)
    return run, source


def _program_module(name: str, file: str) -> types.ModuleType:
    """The empty module the program's code runs in, with the attributes the interpreter gives a
    script's ``__main__`` (``python file``) or an imported module (``__builtins__`` a dict)."""
    module = types.ModuleType(name)
    path = os.path.abspath(file)
    module.__loader__ = importlib.machinery.SourceFileLoader(name, path)
    if name == "__main__":
        # As the interpreter makes it: the working directory joined, not normalised (3.9+).
        absolute = file if os.path.isabs(file) else os.path.join(os.getcwd(), file)
        module.__file__ = absolute if PYBEHAVIOR.main_file_is_absolute else file  # PYBEHAVIOR: main_file_is_absolute
        if PYBEHAVIOR.module_has_cached:  # PYBEHAVIOR: module_has_cached
            module.__cached__ = None
        if PYBEHAVIOR.main_has_annotations:  # PYBEHAVIOR: main_has_annotations
            module.__dict__["__annotations__"] = {}
        module.__dict__["__builtins__"] = builtins
    else:
        spec = importlib.util.spec_from_file_location(name, path, loader=module.__loader__)
        module.__spec__ = spec
        module.__file__ = path
        if PYBEHAVIOR.module_has_cached:  # PYBEHAVIOR: module_has_cached
            module.__cached__ = spec.cached if spec is not None else None
        module.__package__ = spec.parent if spec is not None else ""
        module.__dict__["__builtins__"] = builtins.__dict__
    return module


def trace_call(
    file: str,
    entry: str,
    input_text: str,
    *,
    program_id: str | None = None,
    source: str | None = None,
    backend: str = "auto",
    limits: Limits | None = None,
    include=(),
    exclude=(),
    capture_output: bool = True,
    events_as_json: bool = False,
    on_hard_timeout=None,
) -> dict:
    """Trace ``ENTRY(input_text)`` from the module in ``file`` (or ``source`` named ``file``).

    With ``events_as_json``, the trace's ``events`` are a ``jsonl.RawJSON``: the JSON text of the
    event list, written straight from the recorder (about half the cost of building the event
    dicts and encoding them), for callers that only write the trace out.

    ``limits.timeout_s`` raises an exception into the program at the deadline, and again every
    ``TIMEOUT_GRACE_S`` while the program keeps catching it. ``on_hard_timeout``, if given, is
    called with the finished ``timeout`` trace at the second deadline and must not return (the
    command line writes the trace and exits): an in-process run cannot stop a program that
    catches every exception any other way.
    """
    limits = limits if limits is not None else Limits()
    try:
        run, source = _prepare(
            file, program_id, entry, input_text, source, backend, limits, include, exclude, capture_output
        )
    except _Rejected as rejected:
        return rejected.trace
    run.events_as_json = events_as_json
    run.on_hard_timeout = on_hard_timeout
    name = _module_name(file)
    module = _program_module(name, file)
    namespace = module.__dict__
    capture = run.capture = _OutputCapture(limits.max_output_bytes) if capture_output else None
    with _SysState(file, name, module, argv=[file]):
        if capture is not None:
            capture.__enter__()
        try:
            try:
                code = compile(source, file, "exec", dont_inherit=True)
                exec(code, namespace)
            except BaseException as exc:  # the program failed at import: data
                run.set_exception(exc, is_script=False)
                return _finish_untraced(run, capture)
            try:
                fn = _resolve_entry(namespace, entry)
            except Exception as exc:
                return _error(_finish_untraced(run, capture), "invalid job: %s" % exc)
            try:
                expr = compile("__worldtrace_args__(%s\n)" % input_text, "<input>", "eval", dont_inherit=True)
                args, kwargs = eval(expr, namespace, {"__worldtrace_args__": _collect_args})
            except BaseException as exc:
                return _error(_finish_untraced(run, capture), "invalid input text %r: %s: %s" % (
                    input_text, type(exc).__name__, exc))
            ok, value = run.traced(fn, *args, **kwargs)
            run.set_outcome(ok, value, is_script=False)
            del args, kwargs, fn
            value = _released(ok, value)
        finally:
            if capture is not None:
                capture.__exit__(None, None, None)
    return run.finish(capture)


def _released(ok: bool, value) -> None:
    """Let go of what the program left (its exception's frames and their locals) before the trace
    is finished: a program that ran out of memory leaves room to write its trace."""
    if not ok and isinstance(value, BaseException):
        value.__traceback__ = None
        value.__context__ = value.__cause__ = None
    return None


def _finish_untraced(run: _Run, capture) -> dict:
    if capture is not None:
        capture.__exit__(None, None, None)
    trace = run.finish(capture)
    return trace


def trace_script(
    path: str,
    argv=(),
    *,
    program_id: str | None = None,
    source: str | None = None,
    backend: str = "auto",
    limits: Limits | None = None,
    include=(),
    exclude=(),
    capture_output: bool = True,
    events_as_json: bool = False,
    on_hard_timeout=None,
    relative_to=(),
    cwd: str | None = None,
) -> dict:
    """Trace the script at ``path`` (or ``source`` named ``path``) run as ``__main__``
    (``events_as_json``, ``on_hard_timeout``: as in ``trace_call``). Events name the files
    under a folder of ``relative_to`` (each ending in ``/``) relative to it. ``cwd``: the
    working directory of the run (restored after it), the script run as ``cd CWD && python
    PATH`` would run it (``sys.argv[0]``, and before 3.9 ``__file__``, relative to it)."""
    limits = limits if limits is not None else Limits()
    try:
        run, source = _prepare(
            path, program_id, None, None, source, backend, limits, include, exclude, capture_output
        )
    except _Rejected as rejected:
        return rejected.trace
    run.events_as_json = events_as_json
    run.on_hard_timeout = on_hard_timeout
    run.recorder.relative_to = tuple(relative_to)
    module = _program_module("__main__", path)
    shown = os.path.relpath(path, cwd) if cwd is not None else path
    if not PYBEHAVIOR.main_file_is_absolute:  # PYBEHAVIOR: main_file_is_absolute
        module.__file__ = shown
    namespace = module.__dict__
    capture = run.capture = _OutputCapture(limits.max_output_bytes) if capture_output else None
    with _SysState(path, "__main__", module, argv=[shown] + list(argv), cwd=cwd):
        if capture is not None:
            capture.__enter__()
        try:
            try:
                code = compile(source, path, "exec", dont_inherit=True)
            except BaseException as exc:
                run.set_exception(exc, is_script=True)
            else:
                ok, value = run.traced(exec, code, namespace)
                run.set_outcome(ok, value, is_script=True)
                value = _released(ok, value)
        finally:
            if capture is not None:
                capture.__exit__(None, None, None)
    return run.finish(capture)


def full_locals(events) -> list:
    """The full local state at each event: the fold of the ``locals`` deltas per frame_id."""
    states: dict = {}
    out = []
    for event in events:
        state = states.setdefault(event["frame_id"], {})
        for name, value in event["locals"].items():
            if value is None:
                state.pop(name, None)
            else:
                state[name] = value
        out.append(dict(state))
    return out
