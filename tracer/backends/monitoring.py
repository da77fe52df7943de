"""The sys.monitoring (PEP 669) backend: Python 3.12+.

Events are enabled only on in-scope code objects (local events per code object, found
through a global PY_START that returns DISABLE for everything else), so code outside the
scope runs at full speed after its first call. The mapping onto the four normalised
events mirrors CPython's own settrace-on-monitoring shim (Python/legacy_tracing.c), so
both backends produce the same events:

  PY_START, PY_RESUME, PY_THROW -> call      PY_RETURN, PY_YIELD -> return (value)
  PY_UNWIND -> return (no value)             RAISE, STOP_ITERATION -> exception
  LINE -> line                                JUMP backwards within one line -> line

Each thread keeps its own stack of activations, maintained by the start/return events,
so a LINE callback finds its frame without ``sys._getframe`` and, on 3.13, reads locals
through one ``f_locals`` proxy per activation (a live view).
"""

from __future__ import annotations

import os
import sys
from _thread import get_ident
from sys import _getframe

from .. import codeinfo
from .. import recorder as recorder_module
from .._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from ..env import PYBEHAVIOR
from ..recorder import (
    _BUILTINS,
    _ENTERED,
    _SMALL_INT,
    CALL,
    IMPLICIT_ARG,
    LINE,
    RETURN,
    Activation,
    Recorder,
    safe_locals,
)
from .base import Backend

_TOOL_NAME = "worldtrace"
# Tool ids tried in order: the conventional free ones first (0 debugger, 1 coverage,
# 2 profiler, 5 optimizer are the named ones).
_TOOL_IDS = (3, 4, 2, 0, 5, 1)

# 3.13+: f_locals is a live proxy (read once per activation); bound here for the hot path.
_PROXY = PYBEHAVIOR.f_locals_is_proxy  # PYBEHAVIOR: f_locals_is_proxy

_CO_OPTIMIZED = 0x1  # inspect.CO_OPTIMIZED: a function body (fast locals)


def _is_body(act) -> bool:
    """Whether ``act`` runs a module or class body (locals in a dict, not fast locals)."""
    return act.module_level or not act.code.co_flags & _CO_OPTIMIZED


# Whether any trace in this process returned DISABLE (then the next start restarts events).
_EVENTS_DISABLED = False


class MonitoringBackend(Backend):
    """Record through sys.monitoring local events on in-scope code objects."""

    name = "monitoring"

    def __init__(self, recorder) -> None:
        super().__init__(recorder)
        self.tool = None
        self._instrumented: dict = {}
        self._suspended: dict = {}
        self._starts = 0
        self._disabled_codes = 0

    # -- interface ------------------------------------------------------------------------

    def start(self) -> None:
        mon = sys.monitoring
        ev = mon.events
        for tool in _TOOL_IDS:
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, _TOOL_NAME)
                self.tool = tool
                break
        else:
            raise RuntimeError("no free sys.monitoring tool id (all six are in use)")
        tool = self.tool
        self.DISABLE = mon.DISABLE
        self._local_events = ev.PY_RESUME | ev.PY_RETURN | ev.PY_YIELD | ev.LINE | ev.JUMP | ev.STOP_ITERATION
        callbacks = {
            ev.PY_START: self._py_start,
            ev.PY_RESUME: self._py_resume,
            ev.PY_THROW: self._py_throw,
            ev.PY_RETURN: self._py_return,
            ev.PY_YIELD: self._py_yield,
            ev.PY_UNWIND: self._py_unwind,
            ev.RAISE: self._raise,
            ev.STOP_ITERATION: self._stop_iteration,
            ev.LINE: self._line,
            ev.JUMP: self._jump,
        }
        if type(self.recorder) is Recorder and os.environ.get("WORLDTRACE_MONITORING_GENERAL") != "1":
            # The plain recorder: the three events that make up nearly all of a trace go
            # through closures that do the recorder's work inline (see _fast_callbacks).
            # WORLDTRACE_MONITORING_GENERAL=1 keeps the general path (tests compare both).
            callbacks.update(self._fast_callbacks())
        for event, fn in callbacks.items():
            mon.register_callback(tool, event, fn)
        # Locations disabled by an earlier trace in this process must fire again. Restarting
        # makes the interpreter re-instrument every code object it runs next, so only do it
        # when an earlier trace actually disabled something.
        global _EVENTS_DISABLED
        if _EVENTS_DISABLED:
            mon.restart_events()
            _EVENTS_DISABLED = False
        # PY_RESUME globally too: a generator or coroutine started before the trace (at import,
        # in call mode) resumes in it without a PY_START; out of scope, it is disabled as PY_START is.
        mon.set_events(tool, ev.PY_START | ev.PY_RESUME | ev.PY_THROW | ev.PY_UNWIND | ev.RAISE)
        self.recorder.on_halt = self._halt

    def installed(self) -> bool:
        tool = self.tool
        mon = sys.monitoring
        return tool is not None and mon.get_tool(tool) == _TOOL_NAME and mon.get_events(tool) != 0

    def _halt(self) -> None:
        # Recording stopped early: switch every event off so the program runs at full speed.
        if self.tool is None:
            return
        sys.monitoring.set_events(self.tool, 0)
        for code in self._instrumented.values():
            sys.monitoring.set_local_events(self.tool, code, 0)

    def stop(self) -> None:
        global _EVENTS_DISABLED
        if self.tool is None:
            return
        # Every trace that ran a callback may have returned DISABLE somewhere (out-of-scope
        # starts, forward jumps, or everything after an early halt).
        _EVENTS_DISABLED = _EVENTS_DISABLED or self._starts > 0 or self._disabled_codes > 0
        mon = sys.monitoring
        tool = self.tool
        mon.set_events(tool, 0)
        for code in self._instrumented.values():
            try:
                mon.set_local_events(tool, code, 0)
            except ValueError:
                pass
        for event in (1 << i for i in range(17)):
            try:
                mon.register_callback(tool, event, None)
            except ValueError:
                pass
        mon.free_tool_id(tool)
        self.tool = None
        self._instrumented.clear()
        self._suspended.clear()
        for stack in self.recorder.stacks.values():
            for act in stack:
                act.frame = act.proxy = None

    def stats(self) -> dict:
        return {
            "code_objects_instrumented": len(self._instrumented),
            "code_objects_disabled": self._disabled_codes,
            "starts_seen": self._starts,
        }

    # -- helpers --------------------------------------------------------------------------

    def _activate(self, act, frame) -> None:
        act.frame = frame
        # A module or class body's f_locals is its namespace dict, except while an inlined (PEP
        # 709) comprehension runs there: then it is a proxy of the hidden fast locals. So such
        # frames re-read f_locals at every event, exactly as settrace sees them.
        if _PROXY and not _is_body(act):  # PYBEHAVIOR: f_locals_is_proxy
            act.proxy = safe_locals(act, frame.f_locals)

    def _locals(self, act):
        proxy = act.proxy
        if proxy is not None:
            return proxy
        return act.frame.f_locals

    def _current(self, code):
        """The running activation of ``code`` in this thread, or None."""
        stack = self.recorder.stacks.get(get_ident())
        if stack:
            act = stack[-1]
            if act.code is code and act.frame is not None:
                return act
        return None

    # -- callbacks ------------------------------------------------------------------------

    def _instrument(self, code) -> bool:
        """Enable the local events on ``code`` if it is in scope; whether it is."""
        if id(code) in self._instrumented:
            return True
        if not self.recorder.in_scope(code):
            self._disabled_codes += 1
            return False
        sys.monitoring.set_local_events(self.tool, code, self._local_events)
        self._instrumented[id(code)] = code  # by id: code objects hash slowly
        return True

    def _py_start(self, code, offset):
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            self._starts += 1
            if not self._instrument(code):
                return self.DISABLE
            frame = _getframe(1)
            if self._suspended:
                self._suspended.pop(id(frame), None)  # a new frame where a dead one was
            act = rec.new_activation(code)
            act.frame = frame
            if not _PROXY or _is_body(act):  # PYBEHAVIOR: f_locals_is_proxy
                rec.enter(act, frame.f_lineno, frame.f_locals)
            else:
                proxy = act.proxy = safe_locals(act, frame.f_locals)
                rec.enter(act, frame.f_lineno, proxy)
        except BaseException as exc:
            rec.caught(exc)
        return None

    def _resume(self, code) -> None:
        rec = self.recorder
        frame = sys._getframe(2)
        act = self._suspended.pop(id(frame), None)
        # The activation suspended in this frame, unless the entry is a dead generator's whose
        # memory a new frame took (3.13 closes a generator without events): a started new frame
        # went through PY_START, which dropped the entry; one thrown into before it started
        # has not reached its first RESUME.
        if act is None or act.code is not code or frame.f_lasti < codeinfo.start_offset(code):
            act = rec.new_activation(code)
        self._activate(act, frame)
        rec.enter(act, frame.f_lineno, self._locals(act))

    def _py_resume(self, code, offset):
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            if not self._instrument(code):
                return self.DISABLE
            self._resume(code)
        except BaseException as exc:
            rec.caught(exc)
        return None

    def _py_throw(self, code, offset, exc):
        # Also the first event of a generator thrown into before it started (or of a task
        # cancelled before its first step): no PY_START comes before it.
        rec = self.recorder
        if not rec.active:
            return None
        try:
            if not self._instrument(code):
                return None
            self._resume(code)
        except BaseException as err:
            rec.caught(err)
        return None

    def _leave(self, code, value, unwind: bool, suspend: bool) -> None:
        rec = self.recorder
        act = self._current(code)
        if act is None:
            return
        frame = act.frame
        rec.leave(act, frame.f_lineno, value, unwind)
        if suspend:
            self._suspended[id(frame)] = act
        act.frame = act.proxy = None

    def _py_return(self, code, offset, value):
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            self._leave(code, value, False, False)
        except BaseException as exc:
            rec.caught(exc)
        return None

    def _py_yield(self, code, offset, value):
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            self._leave(code, value, False, True)
        except BaseException as exc:
            rec.caught(exc)
        return None

    def _py_unwind(self, code, offset, exc):
        rec = self.recorder
        if not rec.active or id(code) not in self._instrumented:
            return None
        try:
            self._leave(code, None, True, False)
        except BaseException as err:
            rec.caught(err)
        return None

    def _raise(self, code, offset, exc):
        rec = self.recorder
        if not rec.active or id(code) not in self._instrumented:
            return None
        try:
            act = self._current(code)
            if act is not None:
                rec.exception(act, act.frame.f_lineno, exc)
        except BaseException as err:
            rec.caught(err)
        return None

    def _stop_iteration(self, code, offset, value):
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            act = self._current(code)
            if act is not None:
                rec.exception(act, act.frame.f_lineno, value)
        except BaseException as err:
            rec.caught(err)
        return None

    def _line(self, code, lineno):
        # The hot path: one dict lookup for this thread's stack, no frame fetching.
        rec = self.recorder
        if not rec.active:
            return self.DISABLE
        try:
            stack = rec.stacks.get(get_ident())
            if stack:
                act = stack[-1]
                frame = act.frame
                if act.code is code and frame is not None:
                    proxy = act.proxy
                    rec.line(act, lineno, proxy if proxy is not None else frame.f_locals, frame)
        except BaseException as exc:
            rec.caught(exc)
        return None

    def _jump(self, code, src, dest):
        # settrace reports every backward jump within one line as a new line event
        # (one-line loops and comprehensions); sys.monitoring's LINE does not.
        rec = self.recorder
        if dest > src:
            return self.DISABLE
        try:
            lines = codeinfo.offset_lines(code)
            to_line = lines.get(dest)
            if to_line != lines.get(src):
                return self.DISABLE
            if not rec.active:
                return self.DISABLE
            if to_line is None or to_line < 0:
                return None
            act = self._current(code)
            if act is not None:
                rec.line(act, to_line, self._locals(act), act.frame)
        except BaseException as exc:
            rec.caught(exc)
        return None

    # -- the hot path -----------------------------------------------------------------------

    def _fast_callbacks(self) -> dict:
        """PY_START, PY_RETURN and LINE callbacks for a plain ``Recorder``.

        They do what ``_py_start``/``_py_return``/``_line`` plus ``Recorder.enter``/``leave``/
        ``line`` do, with the common cases inlined and everything bound to closure variables
        (a method call and a dozen attribute loads cost more than the work itself). Anything
        unusual (a module or class body, a resumed activation, a line whose effects need the
        bytecode analysis) goes through the recorder's general methods, which share the same
        activations, stacks and event buffer.
        """
        mon = sys.monitoring
        rec = self.recorder
        events = rec.events
        append = events.append
        limit = rec.limit
        stacks = rec.stacks
        thread_numbers = rec.thread_numbers
        render_keyed = rec.render_keyed
        render = rec.render
        renderer = rec.renderer
        refresh = renderer.refresh
        full_delta = rec.delta
        line_delta = rec.line_delta
        fids = rec._fids
        suspended = self._suspended
        DISABLE = mon.DISABLE
        instrument = self._instrument
        proxied = _PROXY
        full_scan = recorder_module.FULL_SCAN  # read when tracing starts (tests switch it)
        # id(code) -> (code, line effects, names bound at a fresh call in frame order, or
        # None when the code object needs the general path: module and class bodies).
        infos: dict = {}

        def code_info(code):
            if not instrument(code):
                return None
            module_level = code.co_name == "<module>"
            if module_level or not (code.co_flags & 1):  # CO_OPTIMIZED: a function body
                entry_names = None
            else:
                n_args = code.co_argcount + code.co_kwonlyargcount
                n_args += bool(code.co_flags & 4) + bool(code.co_flags & 8)  # *args, **kwargs
                entry_names = code.co_varnames[:n_args] + code.co_freevars
            info = (code, codeinfo.line_effects(code), entry_names, module_level)
            infos[id(code)] = info
            return info

        def body_locals(act, frame):
            # A module or class body (every frame on 3.12) keeps no proxy: its f_locals, without
            # the names that must not be read (SafeLocals), as Recorder.line reads them.
            return frame.f_locals if act.hidden is None else safe_locals(act, frame.f_locals)

        def truncate():
            rec.truncated_reason = "max_events"
            rec.halt()

        def py_start(code, offset):
            if not rec.active:
                return DISABLE
            try:
                self._starts += 1
                info = infos.get(id(code))
                if info is None or info[0] is not code:
                    info = code_info(code)
                    if info is None:
                        return DISABLE
                ident = get_ident()
                st = stacks.get(ident)
                tid = thread_numbers[ident] if st else rec.thread_number()
                frame = _getframe(1)
                if suspended:
                    suspended.pop(id(frame), None)  # a new frame where a dead one was
                act = Activation(next(fids), tid, code, info[1], info[3])
                act.frame = frame
                names = info[2]
                if names is None:
                    rec.enter(act, frame.f_lineno, frame.f_locals)
                    return None
                # 3.13: a live view, kept for the activation; 3.12: a snapshot, right here.
                proxy = frame.f_locals if act.hidden is None else safe_locals(act, frame.f_locals)
                if proxied:
                    act.proxy = proxy
                st = stacks[ident]
                depth = act.depth = len(st)
                st.append(act)
                act.prev_line = _ENTERED
                last = act.last
                delta = {}
                for name in names:
                    try:
                        value = proxy[name]
                    except KeyError:
                        continue
                    if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                        text = repr(value)
                        last[name] = (value, text, None)
                    else:
                        text, ids, key = render_keyed(value)
                        last[name] = (key, text, ids)
                    if name != IMPLICIT_ARG:
                        delta[name] = text
                n = len(events)
                if n >= limit:
                    truncate()
                    return None
                append((CALL, frame.f_lineno, code, act.fid, tid, depth, delta, None))
                act.clock = n + 1
            except BaseException as exc:
                rec.caught(exc)
            return None

        def py_return(code, offset, value):
            if not rec.active:
                return DISABLE
            try:
                st = stacks.get(get_ident())
                if st:
                    act = st[-1]
                    frame = act.frame
                    if act.code is code and frame is not None:
                        del st[-1]
                        if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                            text = repr(value)
                        else:
                            text = render(value)
                        act.frame = act.proxy = None
                        if len(events) >= limit:
                            truncate()
                            return None
                        lineno = frame.f_lineno
                        if lineno is None:  # the cleanup code of an ``except*`` block
                            lineno = rec.line_before(act)
                        append((RETURN, lineno, code, act.fid, act.tid, act.depth, None, text))
            except BaseException as exc:
                rec.caught(exc)
            return None

        def line(code, lineno):
            if not rec.active:
                return DISABLE
            try:
                st = stacks.get(get_ident())
                if not st:
                    return None
                act = st[-1]
                frame = act.frame
                if act.code is not code or frame is None:
                    return None
                act.raised = False
                prev = act.prev_line
                act.prev_line = lineno
                n = len(events)
                delta = None
                if prev is None or n != act.clock or act.rescan or full_scan:
                    delta = full_delta(act, act.proxy if act.proxy is not None else body_locals(act, frame))
                elif prev is _ENTERED:
                    pass  # nothing ran since the call event read every local
                else:
                    eff = act.effects.get(prev)
                    if eff is None:
                        delta = full_delta(act, act.proxy if act.proxy is not None else body_locals(act, frame))
                    elif eff.inert:  # the previous line can change nothing, unless it read a defaultdict
                        if eff.subscr and renderer.saw_defaultdict:
                            mapping = act.proxy if act.proxy is not None else body_locals(act, frame)
                            delta = line_delta(act, mapping, eff, frame, True)
                        elif eff.consumes and renderer.saw_lazy:  # ``if x in it:``, see Recorder.line
                            mapping = act.proxy if act.proxy is not None else body_locals(act, frame)
                            delta = line_delta(act, mapping, eff, frame, False)
                    else:
                        names = eff.simple
                        last = act.last
                        # A subscript may have read a defaultdict (a local's, self's, a global's),
                        # an iteration may have consumed a lazy iterator (see Recorder.line).
                        force = bool(eff.subscr) and renderer.saw_defaultdict
                        lazy = eff.consumes and renderer.saw_lazy
                        if force or lazy:
                            names = None
                        if names is None and not eff.mutating and not force and not lazy:
                            # Only calls to pure builtins: the line just stores locals, as
                            # long as those names still mean the builtins.
                            g = frame.f_globals
                            b = frame.f_builtins
                            # (the program's own mapping is never asked: see Recorder.line_delta)
                            if type(g) is dict and type(b) is dict:
                                for bname in eff.pure_calls:
                                    if bname in g or b.get(bname) is not _BUILTINS.get(bname):
                                        break
                                else:
                                    names = eff.ordered_writes
                        if names is not None and eff.inplace:
                            # ``x += ...`` on a container may mutate what other names share (a name not
                            # seen yet may be bound on the line itself: ``for r in rows: r += [0]``).
                            for name in names:
                                entry = last.get(name)
                                if entry is None or entry[2] is not None or name in eff.ordered_rebound:
                                    names = None
                                    break
                        mapping = act.proxy
                        if mapping is None:  # body_locals, inline: the common path
                            mapping = frame.f_locals if act.hidden is None else safe_locals(act, frame.f_locals)
                        if names is None:
                            delta = line_delta(act, mapping, eff, frame, force)
                        else:
                            # The common case: the line only stores locals (in frame order).
                            for name in names:
                                try:
                                    value = mapping[name]
                                except KeyError:
                                    if name in last:
                                        del last[name]
                                        if delta is None:
                                            delta = {}
                                        delta[name] = None
                                    continue
                                entry = last.get(name)
                                if entry is not None:
                                    key = entry[0]
                                    if key is value:
                                        continue
                                    if type(key) is tuple:  # a snapshot (see Recorder.delta)
                                        res = refresh(key, value)
                                        if res is None:
                                            continue
                                        text, ids, key = res
                                        if entry[1] != text:
                                            if delta is None:
                                                delta = {}
                                            delta[name] = text
                                        last[name] = (key, text, ids)
                                        continue
                                if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                                    text = repr(value)
                                    ids = None
                                else:
                                    text, ids, value = render_keyed(value)
                                if entry is None or entry[1] != text:
                                    if delta is None:
                                        delta = {}
                                    delta[name] = text
                                last[name] = (value, text, ids)
                if n >= limit:
                    truncate()
                    return None
                append((LINE, lineno, code, act.fid, act.tid, act.depth, delta, None))
                act.clock = n + 1
            except BaseException as exc:
                rec.caught(exc)
            return None

        ev = mon.events
        return {ev.PY_START: py_start, ev.PY_RETURN: py_return, ev.LINE: line}
