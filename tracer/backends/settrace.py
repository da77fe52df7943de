"""The sys.settrace backend: every CPython version; the reference for event semantics."""

from __future__ import annotations

import re
import sys
import threading
import warnings
from types import MethodType

from .. import codeinfo
from .._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from ..env import PYBEHAVIOR
from .base import Backend


class _FrameTrace:
    """The local trace function of one in-scope frame activation."""

    # No reference to its own bound method (the frame's f_trace holds that): a cycle would leave
    # every traced call's tracer to the cyclic collector, changing when the program's collections
    # (and finalizers) run.
    __slots__ = ("act", "rec", "exc_lasti", "exc_line")

    def __init__(self, act, rec) -> None:
        self.act = act
        self.rec = rec
        # f_lasti and line of this activation's last exception event; -1 once that line runs again
        self.exc_lasti = -1
        self.exc_line = 0

    def trace(self, frame, event, arg):
        rec = self.rec
        if not rec.active:
            return None
        try:
            act = self.act
            if event == "line":
                if self.exc_lasti >= 0 and frame.f_lineno == self.exc_line:
                    self.exc_lasti = -1
                rec.line(act, frame.f_lineno, frame.f_locals, frame)
            elif event == "return":
                # settrace passes None both for ``return None`` and for unwinding: the frame
                # unwinds unless it stopped at a return/yield instruction, or it is back at the
                # instruction that raised (``throw()`` or ``close()`` into a generator raises at
                # its yield; the cleanup of a ``with`` around it runs other lines, then re-raises
                # with f_lasti at that yield again). A yield that runs again after the exception
                # was handled is preceded by its own line event.
                unwind = arg is None and (
                    not codeinfo.stopped_at_return(frame.f_code, frame.f_lasti)
                    or frame.f_lasti == self.exc_lasti
                )
                rec.leave(act, frame.f_lineno, arg, unwind)
            elif event == "exception":
                self.exc_lasti = frame.f_lasti
                self.exc_line = frame.f_lineno
                rec.exception(act, frame.f_lineno, arg[1] if arg[1] is not None else arg[0])
        except BaseException as exc:
            rec.caught(exc)
            return None
        return self.trace


class SettraceBackend(Backend):
    """Global trace function decides scope at each call; only in-scope frames get a local one."""

    name = "settrace"

    def __init__(self, recorder) -> None:
        super().__init__(recorder)
        self._prev_trace = None
        self._prev_thread_trace = None
        self._calls = 0
        self._filter = None
        self._hook = self._global  # one bound method: what gettrace() gives back while ours

    def start(self) -> None:
        if PYBEHAVIOR.settrace_locals_to_fast_warns:  # PYBEHAVIOR: settrace_locals_to_fast_warns
            # Reading f_locals from a trace function must not make CPython print warnings
            # the untraced program never prints.
            # Inserted directly: filterwarnings() would reset every module's record of the
            # warnings it already showed (a warning shown once would show again).
            self._filter = ("ignore", re.compile("assigning None to unbound local", re.I), RuntimeWarning, None, 0)
            warnings.filters.insert(0, self._filter)
        self._prev_trace = sys.gettrace()
        if PYBEHAVIOR.has_threading_gettrace:  # PYBEHAVIOR: has_threading_gettrace
            self._prev_thread_trace = threading.gettrace()
        else:
            self._prev_thread_trace = getattr(threading, "_trace_hook", None)
        threading.settrace(self._hook)
        sys.settrace(self._hook)
        self.recorder.on_halt = self._halt

    def _halt(self) -> None:
        # Called from inside a trace function: stop tracing this thread from now on.
        sys.settrace(None)

    def stop(self) -> None:
        sys.settrace(self._prev_trace)
        threading.settrace(self._prev_thread_trace)  # type: ignore[arg-type]
        if self._filter is not None:
            try:
                warnings.filters.remove(self._filter)
            except ValueError:
                pass
            self._filter = None

    def stats(self) -> dict:
        return {"calls_seen": self._calls}

    def installed(self) -> bool:
        return sys.gettrace() is self._hook  # (== would run a trace object's __eq__ the program set)

    def _global(self, frame, event, arg):
        rec = self.recorder
        if not rec.active:
            return None
        if event != "call":
            return None
        try:
            self._calls += 1
            code = frame.f_code
            if not rec.in_scope(code):
                return None
            ft = frame.f_trace
            if type(ft) is MethodType and type(ft.__self__) is _FrameTrace and ft.__self__.rec is rec:
                tracer = ft.__self__  # a generator / coroutine resuming: same activation
                tracer.exc_lasti = -1
            else:
                tracer = _FrameTrace(rec.new_activation(code), rec)
            rec.enter(tracer.act, frame.f_lineno, frame.f_locals)
            return tracer.trace
        except BaseException as exc:
            rec.caught(exc)
            return None
