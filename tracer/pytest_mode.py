"""Repository-level traces: run pytest in-process, one trace per top-level call into the package.

As in Meta CWM's repository traces: the project's test suite drives the project's own code. The
package's files are the tracer's scope; test code, pytest and libraries are not. Every time the
stack of in-scope frames goes from empty to one frame (test code called into the package), a trace
begins; it ends when that call returns or raises. Calls the package makes internally are events of
that trace. The core `Recorder` is reused as is; `CallRecorder` only cuts its event stream into one
trace per top-level call.
"""

from __future__ import annotations

import _signal  # signal's C functions: its wrappers look builtins up live (_builtins.py)
import importlib.util
import itertools
import os
import sys
import threading
import time
import types
from typing import Any, Callable, Dict, List, Optional, Sequence

from tracer import codeinfo
from tracer.backends.select import BackendUnavailable, choose_backend
from tracer.recorder import Deadline, Recorder
from tracer.render import Renderer, type_qualified_name
from tracer.scope import _TRACER_DIR, CachedScope, absolute_path
from tracer.stream import blank_trace

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

try:
    from _thread import get_ident
except ImportError:  # pragma: no cover
    from threading import get_ident

_TRACER_PREFIX = _TRACER_DIR + os.sep
# The clocks as imported: a test may replace time.perf_counter or time.monotonic (a monkeypatch,
# freezegun) while the recorder reads them, which would call its fake (and use up its values).
_perf_counter = time.perf_counter
_monotonic = time.monotonic
# As imported too, for the same reason: the timer and its handler go through _signal, and the
# main thread (where signal handlers run) is asked of threading.main_thread as imported, since a
# test may replace signal.setitimer or threading.current_thread.
_main_thread = threading.main_thread
CO_VARARGS = 0x04
CO_VARKEYWORDS = 0x08
TEST_DIRS = frozenset(("tests", "test", "testing"))
# Folders inside a package root that hold other code (a virtual environment in a checkout).
ENV_DIRS = frozenset(("site-packages", "dist-packages", ".venv", "venv", ".tox", "node_modules"))
# pytest exit codes that mean "pytest ran": all passed, some failed, nothing collected.
PYTEST_RAN = (0, 1, 5)


def is_test_file(path: str, root: str) -> bool:
    """Whether `path` (below `root`) is test code: test_*.py, *_test.py, conftest.py, tests/ dirs."""
    name = path.rpartition("/")[2]
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return True
    rel = path[len(root):].lstrip("/") if path.startswith(root) else path
    return any(part in TEST_DIRS for part in rel.split("/")[:-1])


class PackageScope(CachedScope):
    """In scope: the files of the named packages that are not test code (decisions cached).

    A package's files are where the *imported* module lives (`sys.modules[name].__path__` or
    `__file__`), so a checkout that the tests import instead of the installed copy (pytest puts the
    test's folder first on sys.path) is the one traced; before the import, `find_spec` says where
    it would come from. Environments inside a package root (a venv in the checkout) are not it.
    """

    def __init__(
        self, packages: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> None:
        super().__init__(include, exclude)
        self.packages = tuple(packages)

    def roots(self) -> List[str]:
        """Where the packages are now: imported modules first, else where an import would find them."""
        roots: List[str] = []
        for name in self.packages:
            module = sys.modules.get(name)
            # From the module's dict: getattr could run a module-level __getattr__.
            attrs = module.__dict__ if issubclass(type(module), types.ModuleType) else {}
            paths = [p for p in attrs.get("__path__") or () if type(p) is str]
            where = attrs.get("__file__")
            if paths:
                roots.extend(absolute_path(p) for p in paths)
            elif type(where) is str:
                roots.append(absolute_path(where))
            else:
                roots.extend(package_roots([name], strict=False))
        return roots

    def _decide(self, filename: str) -> bool:
        if filename.startswith("<"):
            return False
        path = absolute_path(filename)
        if path.startswith(_TRACER_DIR + os.sep):
            return False
        if any(match(path) for match in self._exclude):
            return False
        if any(match(path) for match in self._include):
            return True
        for root in self.roots():
            if path == root or path.startswith(root + "/"):
                rel = path[len(root.rpartition("/")[0] if path == root else root):].lstrip("/")
                if any(part in ENV_DIRS for part in rel.split("/")[:-1]):
                    return False
                return not is_test_file(path, root)
        return False


def package_roots(packages: Sequence[str], strict: bool = True) -> List[str]:
    """Directories (or module files) of the named packages, found without importing them."""
    roots = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            if strict:
                raise LookupError("package %r is not importable here" % name)
            continue
        locations = list(spec.submodule_search_locations or [])
        if locations:
            roots.extend(locations)
        elif spec.origin:
            roots.append(spec.origin)
    return roots


# Test tooling a test suite imports that is never "the package under test".
TEST_TOOLS = frozenset(
    ("pytest", "_pytest", "pluggy", "py", "hypothesis", "mock", "nose", "nose2", "unittest",
     "doctest", "tracer", "conftest", "faker", "freezegun", "responses", "tox", "coverage")
)  # fmt: skip


def _test_files(test_path: str) -> List[str]:
    path = test_path.split("::", 1)[0]
    if os.path.isfile(path):
        return [path]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                found.append(os.path.join(folder, name))
    return found


def _stdlib_dirs() -> List[str]:
    import sysconfig

    paths = sysconfig.get_paths()
    return [os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if paths.get(k)]


class _test_dirs_on_path(object):
    """Temporarily put the test files' folders (and the working directory) first on sys.path."""

    def __init__(self, test_path: str) -> None:
        folders = [os.getcwd()]
        for path in _test_files(test_path):
            folder = os.path.dirname(os.path.abspath(path))
            while os.path.isfile(os.path.join(folder, "__init__.py")):
                folder = os.path.dirname(folder)  # pytest's rootdir of a package of tests
            if folder not in folders:
                folders.append(folder)
        self.folders = folders

    def __enter__(self) -> None:
        self.saved = list(sys.path)
        sys.path[:0] = self.folders
        importlib.invalidate_caches()

    def __exit__(self, *exc: Any) -> None:
        sys.path[:] = self.saved


def infer_packages(test_path: str) -> List[str]:
    """The project's package(s): what the test files import that is neither stdlib nor test tooling."""
    import ast

    names: Dict[str, None] = {}
    for path in _test_files(test_path):
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    names.setdefault(alias.name.split(".")[0], None)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.setdefault(node.module.split(".")[0], None)
    stdlib = _stdlib_dirs()
    packages = []
    for name in names:
        if name in TEST_TOOLS or name in sys.builtin_module_names:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        origin = spec.origin if spec is not None else None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        where = locations[0] if locations else origin
        if not where or where in ("built-in", "frozen"):
            continue
        where = os.path.abspath(where)
        in_stdlib = any(where.startswith(d) for d in stdlib) and "-packages" not in where
        if in_stdlib or is_test_file(where + (os.sep if locations else ""), os.getcwd()):
            continue
        packages.append(name)
    return packages


class TestTimeout(Deadline):
    """Raised into a test at its deadline (`test_timeout_s`): the test fails, pytest goes on."""

    __test__ = False  # not a test class, wherever pytest meets the name


class _TestDeadline(object):
    """Each test's wall-clock limit, raised into it from SIGALRM as pytest-timeout's signal method
    does. A test that catches it, or waits where signals do not reach, is killed by the runner a
    grace period later (then pytest starts again without it, see batch.py).

    It is raised only inside a test's setup, call or teardown, where pytest catches what is raised
    (in its report hooks it would end the session), and never while the recorder is writing a
    trace (the trace would be lost): a deadline that passes there is raised when the next phase
    starts, or just after the recorder is done."""

    def __init__(self, seconds: Optional[float], recorder: "CallRecorder") -> None:
        self.seconds = seconds or 0.0
        self.recorder = recorder
        self.handler = self._on_alarm  # one bound method: what getsignal() gives back while ours
        self.previous: Any = None
        self.armed = False
        self.in_phase = False
        self.held = 0  # > 0 while the recorder writes a trace
        self.pending = False  # the deadline passed where it could not be raised
        self.due = 0.0  # _monotonic() of the deadline

    def arm(self) -> None:
        if self.seconds <= 0 or get_ident() != _main_thread().ident:
            return
        self.previous = _signal.signal(_signal.SIGALRM, self.handler)
        self.due = _monotonic() + self.seconds
        _signal.setitimer(_signal.ITIMER_REAL, self.seconds)
        self.armed = True
        self.pending = False

    def disarm(self) -> None:
        if not self.armed:
            return
        self.armed = self.pending = False
        if self._ours():
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _signal.signal(_signal.SIGALRM, self.previous)
        # else the test installed its own SIGALRM handler (and maybe timer): left as it is

    def enter_phase(self, raise_pending: bool = True) -> None:
        """``raise_pending``: raise a deadline that passed outside any phase now, from the phase's
        hook wrapper (pytest catches what is raised there too)."""
        if raise_pending and self.pending and self.armed:
            self._raise()
        self.in_phase = True

    def leave_phase(self) -> None:
        self.in_phase = False

    def release(self) -> None:
        """The recorder is done writing a trace (it runs in a callback: raise just after it)."""
        self.held -= 1
        if self.pending and not self.held and self.in_phase and self.armed and self._ours():
            self.pending = False
            _signal.setitimer(_signal.ITIMER_REAL, 1e-3)

    def _ours(self) -> bool:
        return _signal.getsignal(_signal.SIGALRM) is self.handler

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if not self.armed:
            return
        left = self.due - _monotonic()
        if left > 1e-3:  # a timer the test set (there is one per process): ours again, for the rest
            _signal.setitimer(_signal.ITIMER_REAL, left)
            return
        if not self.in_phase or self.held:
            self.pending = True
            return
        if frame is not None and frame.f_code.co_filename.startswith(_TRACER_PREFIX):
            # In the tracer's own code (a callback): raised there, it would stop the recording
            # (settrace drops a trace function that raises) or leave a traceback pytest cannot
            # format. Raised in the program's code just after.
            _signal.setitimer(_signal.ITIMER_REAL, 1e-3)
            return
        self._raise()

    def _raise(self) -> None:
        self.pending = False
        call = self.recorder.call
        if call is not None and call.thread == get_ident():  # the call it interrupts, not another thread's
            call.timed_out = True
        raise TestTimeout(self.recorder.timeout_message)


class _Call(object):
    """The top-level call being recorded."""

    __slots__ = ("act", "entry", "input", "nodeid", "started", "exc", "truncated", "keep", "timed_out", "thread")

    def __init__(self, act: Any, entry: str, input_text: str, nodeid: Optional[str]) -> None:
        self.act = act
        self.entry = entry
        self.input = input_text
        self.nodeid = nodeid
        self.started = _perf_counter()
        self.exc: Optional[BaseException] = None
        self.truncated = False
        self.timed_out = False  # the test's deadline passed while this call ran
        self.thread = get_ident()
        # Module bodies run by imports, and calls outside a test (collection), are not traces.
        self.keep = nodeid is not None and entry.split(".")[-1] != "<module>"


class CallRecorder(Recorder):
    """A Recorder that turns each top-level call into the scope into its own trace."""

    def __init__(
        self,
        renderer: Renderer,
        scope: Callable[[str], bool],
        max_events: int,
        on_trace: Callable[[Dict[str, Any]], None],
        make_trace: Callable[[str, str, Optional[str]], Dict[str, Any]],
    ) -> None:
        super().__init__(renderer, scope, 0)
        self.per_call_events = max_events
        self.on_trace = on_trace
        self.make_trace = make_trace
        self.nodeid: Optional[str] = None
        self.call: Optional[_Call] = None
        self.counts: Dict[str, int] = {}
        self.n_traces = 0
        self.interruptions = 0  # times recording stopped and was started again (resume)
        self.errors: List[str] = []  # tracer failures, one per interrupted recording
        self.timeout_message = "the test ran past its deadline"
        self.deadline: Optional[_TestDeadline] = None

    def enter(self, act: Any, lineno: int, mapping: Any) -> None:
        if self.call is None and not self.stack():
            self._begin(act, mapping)
        Recorder.enter(self, act, lineno, mapping)

    def leave(self, act: Any, lineno: int, value: Any, unwind: bool) -> None:
        Recorder.leave(self, act, lineno, value, unwind)
        call = self.call
        if call is not None and act is call.act and not self.stacks.get(get_ident()):
            self.call = None
            if call.keep:
                guard = self.deadline
                if guard is not None:
                    guard.held += 1
                try:
                    self._finish(call, value, unwind)
                finally:
                    if guard is not None:
                        guard.release()
            self.events = []

    def line(self, act: Any, lineno: int, mapping: Any, frame: Any) -> None:
        # Line events count against the call's budget like every other event (and are not
        # worked out at all for a call that is not kept or whose budget is spent).
        call = self.call
        if call is None or not call.keep or act.tid != call.act.tid:
            return
        if 0 < self.per_call_events <= len(self.events):
            call.truncated = True
            return
        Recorder.line(self, act, lineno, mapping, frame)

    def exception(self, act: Any, lineno: int, exc: Any) -> None:
        Recorder.exception(self, act, lineno, exc)
        call = self.call
        if call is not None and act is call.act and isinstance(exc, BaseException):
            call.exc = exc

    def _emit(self, event: tuple) -> None:
        call = self.call
        # Only the calling thread's events: what other threads do meanwhile (a background
        # thread's loop) is not this call's, and would make its trace depend on scheduling.
        if call is None or not call.keep or event[4] != call.act.tid:
            return
        if 0 < self.per_call_events <= len(self.events):
            call.truncated = True  # keep tracing (no DISABLE): the next call has its own budget
            return
        self.events.append(event)

    def _begin(self, act: Any, mapping: Any) -> None:
        self.events = []
        self._fids = itertools.count(1)
        self.reset_thread_numbers()
        act.fid = 0
        act.tid = 0
        entry = codeinfo.qualname(act.code)
        self.call = _Call(act, entry, self.render_args(act.code, mapping), self.nodeid)

    def render_args(self, code: Any, mapping: Any) -> str:
        """The call's arguments as call text: positional values, then name=value for keywords."""
        render = self.render
        n_pos = code.co_argcount
        names = code.co_varnames
        parts = []
        for name in names[:n_pos]:
            if name in mapping:
                parts.append(render(mapping[name]))
        index = n_pos + code.co_kwonlyargcount
        if code.co_flags & CO_VARARGS:
            extra = mapping.get(names[index], ()) if hasattr(mapping, "get") else ()
            if type(extra) is tuple:
                parts.extend(render(v) for v in extra)
        for name in names[n_pos : n_pos + code.co_kwonlyargcount]:
            if name in mapping:
                parts.append("%s=%s" % (name, render(mapping[name])))
        if code.co_flags & CO_VARKEYWORDS:
            kw_index = index + (1 if code.co_flags & CO_VARARGS else 0)
            kwargs = mapping.get(names[kw_index], {}) if hasattr(mapping, "get") else {}
            if type(kwargs) is dict:
                parts.extend("%s=%s" % (k, render(v)) for k, v in kwargs.items() if type(k) is str)
        return ", ".join(parts)

    def resume(self) -> None:
        """Recording stopped (a RecursionError at the limit, a program that removed the trace
        function, a tracer failure): end the call it stopped in, as a trace flagged with why
        (its outcome unknown), and get ready to record the next one."""
        self.interruptions += 1
        reason = self.truncated_reason or "events_lost"
        if self.error is not None:
            self.errors.append(self.error)
        call = self.call
        if call is not None and call.keep:
            trace = self._finish(call, None, True, emit=False)
            if call.timed_out and self.error is None:
                # The test's deadline arrived while the tracer was at work: passed on to the
                # test, and recording stopped there (the call's last events are missing).
                reason = "interrupted"
            else:
                trace["status"] = "error"
                trace["tracer_error"] = self.error or "recording stopped before the call returned (%s)" % reason
            trace["truncated"] = True
            trace["truncated_reason"] = reason
            self.on_trace(trace)
        self.call = None
        self.events = []
        self.stacks.clear()
        self.error = None
        self.truncated_reason = None
        self.active = True

    def _finish(self, call: _Call, value: Any, unwind: bool, emit: bool = True) -> Dict[str, Any]:
        nodeid = call.nodeid or ""
        n = self.counts.get(nodeid, 0)
        self.counts[nodeid] = n + 1
        trace = self.make_trace("%s::%d" % (nodeid, n), call.entry, call.input)
        trace["wall_time_s"] = round(_perf_counter() - call.started, 6)
        if call.timed_out:  # whatever the call made of the deadline's exception
            trace["status"] = "timeout"
            trace["exception_message"] = self.timeout_message
        elif unwind:
            exc = call.exc
            trace["status"] = "memory" if issubclass(type(exc), MemoryError) else "exception"
            if exc is not None:
                trace["exception_type"] = type_qualified_name(type(exc))
                trace["exception_message"] = self.renderer.exception_message(exc)
        else:
            trace["status"] = "ok"
            trace["return_value"] = self.render(value)
        trace["events"] = self.event_dicts()
        trace["n_events"] = len(trace["events"])
        if call.truncated:
            trace["truncated"] = True
            trace["truncated_reason"] = "max_events"
        if self.error is not None:
            trace["status"] = "error"
            trace["tracer_error"] = self.error
        self.n_traces += 1
        if emit:
            self.on_trace(trace)
        return trace


def _base_trace(
    program_id: str, limits: Any, backend: Optional[str], reason: Optional[str]
) -> Dict[str, Any]:
    return blank_trace(program_id, limits=limits.to_dict(), backend=backend, backend_reason=reason)


def run_pytest_job(
    job: Any,
    emit: Callable[[Dict[str, Any]], None],
    *,
    note: Optional[Callable[[Dict[str, Any]], None]] = None,
    backend: str = "auto",
    limits: Any = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Dict[str, Any]:
    """Run pytest on `job.file`; `emit` each traced call; return the job's own trace (its outcome).

    `note` hears when each test starts and ends (`{"kind": "test"|"test_done", "nodeid": ...}`):
    the runner's per-test deadline, and where to start again if a test ends the process."""
    from tracer.api import Limits

    limits = limits if limits is not None else Limits()
    try:
        backend_cls, reason = choose_backend(backend)
    except BackendUnavailable as exc:
        return _error(  # the backend asked for: no other ran
            _base_trace(job.program_id, limits, exc.backend, None), "backend unavailable: %s" % exc
        )
    summary = _base_trace(job.program_id, limits, backend_cls.name, reason)
    try:
        import pytest
    except ImportError as exc:
        return _error(summary, "pytest is not installed in this interpreter: %s" % exc)
    if job.cwd is not None:  # as the project's own `cd ROOT && python -m pytest ...`
        try:
            os.chdir(job.cwd)
        except OSError as exc:
            return _error(summary, "invalid job: cannot run in `cwd` %s: %s" % (job.cwd, exc.strerror))
        sys.path.insert(0, os.getcwd())  # `python -m pytest` puts its folder first on sys.path
    with _test_dirs_on_path(job.file):  # where pytest will import from (rootdir-relative imports)
        packages = list(job.package) or infer_packages(job.file)
    if not packages:
        return _error(
            summary, "invalid job: no package to trace: give `package` (the test files import none)"
        )
    scope = PackageScope(packages, include, exclude)

    def make_trace(suffix: str, entry: str, input_text: Optional[str]) -> Dict[str, Any]:
        trace = _base_trace("%s::%s" % (job.program_id, suffix), limits, backend_cls.name, reason)
        trace["entrypoint"] = entry
        trace["input"] = input_text
        return trace

    renderer = Renderer(limits.max_value_chars, limits.max_items, limits.max_depth)
    recorder = CallRecorder(renderer, scope, limits.max_events, emit, make_trace)
    if job.test_timeout_s:
        recorder.timeout_message = "ran past test_timeout_s=%g" % job.test_timeout_s
    deadline = recorder.deadline = _TestDeadline(job.test_timeout_s, recorder)
    skip = frozenset(job.skip_tests)
    tell = note if note is not None else (lambda message: None)

    backends = [backend_cls(recorder)]  # the one in use (a test may make it start again: rearm)

    def rearm() -> None:
        """Before each test: if recording stopped during an earlier one (see CallRecorder.resume),
        start it again with a fresh backend, so one test cannot end tracing for the rest."""
        current = backends[0]
        if recorder.active and current.installed():
            return
        try:
            current.stop()
        except Exception:
            pass
        recorder.resume()
        backends[0] = backend_cls(recorder)
        backends[0].start()

    def in_phase(raise_pending: bool) -> Any:
        """A hook wrapper's body around a test's setup, call or teardown (see _TestDeadline)."""
        deadline.enter_phase(raise_pending)
        try:
            yield
        finally:
            deadline.leave_phase()

    class NodeTracker(object):
        """Tells the recorder which test is running (calls outside a test are not traced)."""

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> Any:
            rearm()
            recorder.nodeid = item.nodeid
            tell({"kind": "test", "nodeid": item.nodeid})
            deadline.arm()
            try:
                yield
            finally:
                deadline.disarm()
                recorder.nodeid = None
                tell({"kind": "test_done", "nodeid": item.nodeid})

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_setup(self, item: Any) -> Any:
            yield from in_phase(raise_pending=True)

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_call(self, item: Any) -> Any:
            yield from in_phase(raise_pending=True)

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_teardown(self, item: Any, nextitem: Any) -> Any:
            # Never raised before the teardown ran: pytest's own teardown must run (the next
            # test's setup checks that this one was torn down). See pytest_runtest_makereport.
            yield from in_phase(raise_pending=False)

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
            outcome = yield
            if call.when == "teardown" and deadline.pending and deadline.armed:
                # The deadline passed where it could not be raised (in pytest's report hooks,
                # after the call): the teardown's report says so, unless it already failed.
                deadline.pending = False
                report = outcome.get_result()
                if report.passed:
                    report.outcome = "failed"
                    report.longrepr = "TestTimeout: " + recorder.timeout_message

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, session: Any, config: Any, items: List[Any]) -> None:
            """Tests an earlier child of this job ran, or that ended it, are not run again."""
            if not skip:
                return
            dropped = [item for item in items if item.nodeid in skip]
            if dropped:
                items[:] = [item for item in items if item.nodeid not in skip]
                config.hook.pytest_deselected(items=dropped)

    args = [job.file] + list(job.argv) + ["-p", "no:cacheprovider"]
    started = _perf_counter()
    try:
        backends[0].start()
    except Exception as exc:
        return _error(summary, "cannot start the %s backend: %s" % (backend_cls.name, exc))
    try:
        code = pytest.main(args, plugins=[NodeTracker()])
    except BaseException as exc:  # pytest itself blew up: the job's outcome
        code = None
        summary["status"] = "memory" if issubclass(type(exc), MemoryError) else "exception"
        summary["exception_type"] = type_qualified_name(type(exc))
        summary["exception_message"] = renderer.exception_message(exc)
    finally:
        # A hook the interpreter dropped in the last test (settrace drops a trace function
        # that raises) stopped the recording there, though recorder.active still says not.
        hook_lost = recorder.active and not backends[0].installed()
        try:
            backends[0].stop()
        except Exception as exc:
            recorder.fail(exc)
        sys.stdout.flush()
    summary["wall_time_s"] = round(_perf_counter() - started, 6)
    if code is not None:
        value = int(code)
        summary["return_value"] = repr(value)
        if value in PYTEST_RAN:
            summary["status"] = "ok"
        else:
            summary["status"] = "exception"
            summary["exception_type"] = "pytest.ExitCode"
            summary["exception_message"] = "pytest exited with %s (%d)" % (
                getattr(code, "name", "code"),
                value,
            )
    # A package named in the job may become importable only once pytest has run its ini
    # `pythonpath` or a conftest: one that no test imported and that is still not importable is
    # a mistake in the job (a typo), not a suite that calls nothing.
    ran = code is not None and int(code) in PYTEST_RAN
    missing = [name for name in packages if name not in sys.modules and not package_roots([name], strict=False)]
    if ran and missing:
        return _error(summary, "invalid job: package %r is not importable here (and no test imported it)" % missing[0])
    if not recorder.active or hook_lost:  # stopped during the last test: end its call's trace too
        recorder.resume()
    if recorder.interruptions:
        # Recording stopped inside some tests and was started again at the next one: what ran
        # in between is missing (the interrupted calls' traces say so).
        summary["truncated"] = True
        summary["truncated_reason"] = "events_lost"
    errors = recorder.errors + ([recorder.error] if recorder.error is not None else [])
    if errors:
        summary["status"] = "error"
        more = " (and %d more)" % (len(errors) - 1) if len(errors) > 1 else ""
        summary["tracer_error"] = errors[0] + more
    return summary


def _error(trace: Dict[str, Any], message: str) -> Dict[str, Any]:
    trace["status"] = "error"
    trace["tracer_error"] = message
    return trace
