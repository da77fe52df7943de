"""The event sink shared by all backends: activations, locals deltas, budgets, events.

A backend translates its mechanism's raw events into four calls on a ``Recorder``:
``enter`` (call / resume), ``line``, ``leave`` (return / yield / unwind) and
``exception``. The recorder owns everything else: frame-activation ids, per-thread call
stacks and thread numbers, rendering of locals into deltas, the event budget and the
final conversion of buffered tuples into the event objects of schemas/trace_stream.md.
"""

from __future__ import annotations

import _signal  # signal's C functions: its wrappers look builtins up live (_builtins.py)
import builtins
import gc
import itertools
import json
import os
import sys
import threading
import types

from . import codeinfo
from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .env import NEWEST_TESTED, PYBEHAVIOR
from .render import _LAZY_ITERATOR_IDS, ELIDED, Renderer, is_immutable_type, type_module

try:
    from _thread import get_ident
except ImportError:  # pragma: no cover
    from threading import get_ident


# The newest CPython the per-line bytecode analysis (codeinfo.line_effects) was checked on. It
# reads opcodes by name, and each release renames, splits and adds some (3.14 turned
# BINARY_SUBSCR into a BINARY_OP): on a newer interpreter a line's effects could be missed.
NEWEST_ANALYSED = NEWEST_TESTED


def full_scan_default(version: tuple, setting: str | None) -> bool:
    """Whether every local is re-read and re-rendered at every line instead of the analysis:
    WORLDTRACE_FULL_SCAN=1 (a debugging switch) or =0 (the analysis even so); unset, on an
    interpreter newer than NEWEST_ANALYSED (exact, and slower: docs/tracer.md)."""
    if setting in ("0", "1"):
        return setting == "1"
    return tuple(version[:2]) > NEWEST_ANALYSED


FULL_SCAN = full_scan_default(sys.version_info, os.environ.get("WORLDTRACE_FULL_SCAN"))

_BUILTINS = dict(vars(builtins))
_SMALL_INT = 1 << 60



class SafeLocals(object):
    """A frame's ``f_locals`` without the ``hidden`` names, which are never read: on CPython
    3.13.0-3.13.2 reading a cell variable that an inlined comprehension's variable shadows,
    while the comprehension runs, crashes the interpreter (gh-128396; codeinfo.shadowed_cells).
    Those variables are left out of the frame's events (they appear nowhere in its trace)."""

    __slots__ = ("proxy", "hidden")

    def __init__(self, proxy, hidden: frozenset) -> None:
        self.proxy = proxy
        self.hidden = hidden

    def __getitem__(self, name):
        if name in self.hidden:
            raise KeyError(name)
        return self.proxy[name]

    def __contains__(self, name) -> bool:
        return name not in self.hidden and name in self.proxy

    def items(self) -> list:
        proxy, hidden = self.proxy, self.hidden
        out = []
        for name in list(proxy.keys()):  # the names only: no value is read
            if name not in hidden:
                try:
                    out.append((name, proxy[name]))
                except KeyError:
                    pass
        return out


def safe_locals(act, mapping):
    """``mapping``, or its SafeLocals where the activation has names that must not be read."""
    if act.hidden is None or type(mapping) is SafeLocals:
        return mapping
    return SafeLocals(mapping, act.hidden)


def _lazy_among(names: tuple, mapping) -> tuple:
    """The names of ``names`` that hold a lazy iterator (map, filter, iter(f, s), ...)."""
    found: tuple = ()
    for name in names:
        try:
            value = mapping[name]
        except KeyError:
            continue
        if id(type(value)) in _LAZY_ITERATOR_IDS:
            found += (name,)
    return found


def _inert_global(value) -> bool:
    """Whether a line may read this global without that making its effects unknowable: a
    function, class or module. Not a bound builtin method (``push = lst.append``), which
    mutates the object it is bound to. By type, never ``isinstance`` (a user ``__class__``)."""
    t = type(value)
    if t is types.FunctionType or t is types.ModuleType or issubclass(t, type):
        return True
    if t is types.BuiltinFunctionType:
        owner = value.__self__
        return owner is None or type(owner) is types.ModuleType
    return False


CALL, LINE, RETURN, EXCEPTION = "call", "line", "return", "exception"
# The compiler's name for the iterator argument of a generator expression (and, before 3.12, of a
# comprehension): not a variable of the program (no source can name it) and always rendered
# ``<list_iterator object>`` or the like, so left out of call events. It is never re-rendered
# differently later (an iterator renders opaquely), so it appears in no event.
IMPLICIT_ARG = ".0"

# A str as JSON text, as json.dumps(ensure_ascii=False) writes it (the C function where it exists).
_json_string = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring

# A buffered event is a flat tuple that references no activation (so activations die with
# their frames and the garbage collector has little to walk):
#   (kind, lineno, code, frame id, thread number, depth, locals delta or None, arg)

_dict_items = dict.items
_SHADOW_CRASH = PYBEHAVIOR.comprehension_shadowed_cell_crash  # PYBEHAVIOR: comprehension_shadowed_cell_crash
_dict_contains = dict.__contains__
_ANY_CONTAINER = frozenset([ELIDED])  # ids that alias every container local (see line_delta)
_CO_OPTIMIZED = 0x1  # inspect.CO_OPTIMIZED: a function body (fast locals)

# An activation's ``prev_line`` right after its call event (which read every local): when
# no other event came in between, its first line event has nothing new to read.
_ENTERED = -(1 << 62)


class Activation:
    """One activation of an in-scope frame (a resumed generator keeps its activation)."""

    __slots__ = ("fid", "depth", "tid", "code", "last", "frame", "proxy", "module_level", "rescan", "hidden",
                 "raised", "prev_line", "clock", "effects")

    def __init__(self, fid: int, tid: int, code, effects: dict, module_level: bool) -> None:
        self.fid = fid
        self.tid = tid
        self.code = code
        self.depth = 0
        # name -> (key from Renderer.render_keyed, rendered text, ids visited or None)
        self.last: dict = {}
        # The line of this activation's previous line event (None: next line rescans all)
        # and the recorder's event clock after its last event (to notice other frames ran).
        self.prev_line = None
        self.clock = -1
        self.effects = effects  # codeinfo.line_effects(code)
        self.frame = None  # the live frame, held only while it runs (monitoring backend)
        self.proxy = None  # 3.13: the frame's f_locals proxy, a live view
        self.module_level = module_level
        # Module and class bodies read their names by LOAD_NAME (from a dict the line analysis
        # does not see through): every line event rescans them. They are short.
        self.rescan = module_level or not (code.co_flags & _CO_OPTIMIZED)
        self.raised = False  # last event of this activation was an exception
        # Locals never read (CPython 3.13.0-3.13.2, see SafeLocals), or None.
        self.hidden = (codeinfo.shadowed_cells(code) or None) if _SHADOW_CRASH else None


class TracerLimitReached(Exception):
    """Internal: the event budget is spent."""



class Deadline(BaseException):
    """Raised into the program at its in-process deadline (``tracer.api``): a timeout, not an
    interruption of the trace."""



def _exception_text(exc: BaseException) -> str:
    """``str(exc)`` as traceback shows it ("<exception str() failed>" when that raises)."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _raised_by_signal_handler(exc: BaseException) -> bool:
    """Whether a Python signal handler of the program is on ``exc``'s traceback: it ran inside a
    callback (signals are handled between any two bytecodes) and raised."""
    tb = exc.__traceback__
    if tb is None:
        return False
    handlers = set()
    for signum in _signal.valid_signals():
        try:
            handler = _signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        # By exact type: a callable object's attributes are the program's code.
        if type(handler) is types.MethodType:
            handler = handler.__func__
        if type(handler) is types.FunctionType:
            handlers.add(handler.__code__)
    while tb is not None:
        if tb.tb_frame.f_code in handlers:
            return True
        tb = tb.tb_next
    return False

class Recorder:
    """Collects normalised events from a backend, bounded by the event budget."""

    def __init__(self, renderer: Renderer, scope, max_events: int = 0) -> None:
        self.renderer = renderer
        self.render = renderer.render
        self.render_keyed = renderer.render_keyed
        self.scope = scope
        self.max_events = max_events
        # Recording stops when ``len(events)`` reaches the limit.
        self.limit = max_events if max_events > 0 else sys.maxsize
        # Buffered event tuples (see the layout above). ``len(events)`` is also the event
        # clock: an activation whose clock is behind it knows another frame ran meanwhile.
        self.events: list = []
        self.active = True
        self.truncated_reason: str | None = None
        self.error: str | None = None
        self.stacks: dict = {}
        self.thread_numbers: dict = {}  # get_ident() -> thread number (see thread_number)
        self._thread_local = threading.local()
        self._thread_count = itertools.count()
        self._fids = itertools.count()
        # Set by the backend: called once when recording stops early (budget, failure) so
        # the rest of the program runs untraced at full speed.
        self.on_halt = None
        self._scope_by_code: dict = {}
        self._state_holders: dict = {}  # id -> (global, whether it is the program's: _holds_state)
        self._effects: dict = {}
        # Folders whose files the events name relative to them ("helper.py", not
        # "/tmp/program/helper.py"): a program run with its modules (tracer/batch.py).
        self.relative_to: tuple = ()

    # -- scope --------------------------------------------------------------------------

    def in_scope(self, code) -> bool:
        """Whether ``code`` is recorded (cached per code object)."""
        # Keyed by id: hashing a code object hashes its bytecode and constants (~0.5 us).
        # The entry holds the code object, so its id cannot be reused while cached.
        entry = self._scope_by_code.get(id(code))
        if entry is None or entry[0] is not code:
            entry = self._scope_by_code[id(code)] = (code, bool(self.scope(code.co_filename)))
        return entry[1]

    # -- the four entry points used by backends ------------------------------------------

    def stack(self) -> list:
        """The calling thread's stack of activations."""
        ident = get_ident()
        st = self.stacks.get(ident)
        if st is None:
            self.thread_number()
            st = self.stacks[ident]
        return st

    def thread_number(self) -> int:
        """The calling thread's number (in order of first event), asked whenever its stack is
        empty: a thread that ended leaves its ident to the next one started, which must not
        get the ended thread's number (a thread-local value tells them apart)."""
        ident = get_ident()
        local = self._thread_local
        number = getattr(local, "number", None)
        if number is None:
            number = local.number = next(self._thread_count)
        self.thread_numbers[ident] = number
        self.stacks.setdefault(ident, [])
        return number

    def reset_thread_numbers(self) -> None:
        """Number threads afresh, the calling one 0."""
        self.thread_numbers = {}
        self._thread_local = threading.local()
        self._thread_count = itertools.count()
        self.thread_number()

    def new_activation(self, code) -> Activation:
        ident = get_ident()
        st = self.stacks.get(ident)
        tid = self.thread_numbers[ident] if st else self.thread_number()
        info = self._effects.get(id(code))
        if info is None or info[0] is not code:
            info = self._effects[id(code)] = (code, codeinfo.line_effects(code), code.co_name == "<module>")
        return Activation(next(self._fids), tid, code, info[1], info[2])

    def enter(self, act: Activation, lineno: int, mapping) -> None:
        """A call event: ``act`` starts or resumes; ``mapping`` is the frame's locals."""
        if act.hidden is not None:
            mapping = safe_locals(act, mapping)
        ident = get_ident()
        st = self.stacks.get(ident)
        # A generator or coroutine may resume in another thread than it started in.
        if st:
            act.tid = self.thread_numbers[ident]
        else:
            act.tid = self.thread_number()
            st = self.stacks[ident]
        act.depth = len(st)
        st.append(act)
        act.raised = False
        # A resumed generator continues in the middle of its yield line (``x = yield``
        # stores after resuming): only a fresh activation may skip its first rescan.
        act.prev_line = _ENTERED if act.clock < 0 else None
        if not lineno:  # a module body starts at line 0 on 3.11+ (no instruction has run)
            lineno = act.code.co_firstlineno
        delta = self.delta(act, mapping)
        if IMPLICIT_ARG in delta:  # kept in ``act.last``, never shown (see IMPLICIT_ARG)
            del delta[IMPLICIT_ARG]
        self._emit((CALL, lineno, act.code, act.fid, act.tid, act.depth, delta, None))
        act.clock = len(self.events)

    def line(self, act: Activation, lineno: int, mapping, frame) -> None:
        """A line event; ``frame`` is the live frame (for its globals and builtins)."""
        prev = act.prev_line
        if act.hidden is not None:
            mapping = safe_locals(act, mapping)
        act.raised = False
        act.prev_line = lineno
        events = self.events
        n = len(events)
        if prev is None or n != act.clock or act.rescan or FULL_SCAN:
            delta = self.delta(act, mapping)
        elif prev is _ENTERED:
            delta = None  # nothing ran since the call event read every local
        else:
            eff = act.effects.get(prev)
            if eff is None:
                delta = self.delta(act, mapping)
            elif eff.inert:
                delta = None  # the previous line can change nothing (a test, a jump, pass)
                if eff.subscr and self.renderer.saw_defaultdict:
                    delta = self.line_delta(act, mapping, eff, frame, True)
                elif eff.consumes and self.renderer.saw_lazy:  # ``if x in it:``
                    delta = self.line_delta(act, mapping, eff, frame, False)
            else:
                names = eff.simple
                if eff.consumes and self.renderer.saw_lazy:
                    names = None  # the iterator it consumed may be a lazy one (line_delta)
                last = act.last
                force = False
                if eff.subscr and self.renderer.saw_defaultdict:  # a subscript may have read one
                    names = None
                    force = True
                if names is not None and eff.inplace:
                    # ``x += ...`` on a container may mutate what other names share (a name not
                    # seen yet may be bound on the line itself: ``for r in rows: r += [0]``).
                    for name in names:
                        entry = last.get(name)
                        if entry is None or entry[2] is not None or name in eff.ordered_rebound:
                            names = None
                            break
                if names is None:
                    delta = self.line_delta(act, mapping, eff, frame, force)
                else:
                    # The common case: the line only stores locals (in variable order). Inline,
                    # not through line_delta: a call per store-only line costs settrace ~15%.
                    delta = {}
                    for name in names:
                        try:
                            value = mapping[name]
                        except KeyError:
                            if name in last:
                                del last[name]
                                delta[name] = None
                            continue
                        entry = last.get(name)
                        if entry is not None:
                            key = entry[0]
                            if key is value:
                                continue
                            if type(key) is tuple:  # a snapshot (see delta)
                                res = self.renderer.refresh(key, value)
                                if res is None:
                                    continue
                                text, ids, key = res
                                if entry[1] != text:
                                    delta[name] = text
                                last[name] = (key, text, ids)
                                continue
                        if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                            text = repr(value)
                            if entry is None or entry[1] != text:
                                delta[name] = text
                            last[name] = (value, text, None)
                            continue
                        text, ids, key = self.render_keyed(value)
                        if entry is None or entry[1] != text:
                            delta[name] = text
                        last[name] = (key, text, ids)
        if n >= self.limit:
            self.truncated_reason = "max_events"
            self.halt()
            return
        events.append((LINE, lineno, act.code, act.fid, act.tid, act.depth, delta, None))
        act.clock = n + 1

    def leave(self, act: Activation, lineno: int, value, unwind: bool) -> None:
        """A return event (return, yield, or unwinding by exception when ``unwind``)."""
        st = self.stacks.get(get_ident())
        if st:
            if st[-1] is act:
                del st[-1]
            elif act in st:
                st.remove(act)
        act.raised = False
        if lineno is None:
            lineno = self.line_before(act)
        if unwind:
            text = None
        elif type(value) is int and -_SMALL_INT < value < _SMALL_INT:
            text = repr(value)
        else:
            text = self.render(value)
        self._emit((RETURN, lineno, act.code, act.fid, act.tid, act.depth, None, text))

    def exception(self, act: Activation, lineno: int, exc) -> None:
        act.raised = True
        act.prev_line = None
        if lineno is None:
            lineno = self.line_before(act)
        if issubclass(type(exc), BaseException):
            text = self.renderer.render_exception(exc)
        else:
            text = "StopIteration: %s" % self.render(exc)
        self._emit((EXCEPTION, lineno, act.code, act.fid, act.tid, act.depth, None, text))

    def line_before(self, act: Activation) -> int:
        """The line of ``act``'s latest event: for an event where CPython reports no line
        (``f_lineno`` is None in the cleanup code of an ``except*`` block, 3.11+)."""
        fid = act.fid
        for event in reversed(self.events):
            if event[3] == fid and event[1]:
                return event[1]
        return 0

    # -- internals --------------------------------------------------------------------------

    def delta(self, act: Activation, mapping) -> dict:
        """Locals new or changed (by rendering) since the activation's previous event."""
        last = act.last
        out = {}
        render = self.render_keyed
        refresh = self.renderer.refresh
        seen = 0
        module_level = act.module_level
        # A class body's namespace can be the program's dict subclass (``__prepare__``): read
        # it as a dict, never through methods it overrides.
        as_dict = type(mapping) is not dict and issubclass(type(mapping), dict)
        for name, value in (_dict_items(mapping) if as_dict else mapping.items()):
            if module_level and name[:2] == "__":
                continue
            seen += 1
            prev = last.get(name)
            if prev is not None:
                key = prev[0]
                if key is value:
                    continue
                if type(key) is tuple:  # a snapshot: unchanged, or re-rendered incrementally
                    res = refresh(key, value)
                    if res is None:
                        continue
                    text, ids, key = res
                    if prev[1] != text:
                        out[name] = text
                    last[name] = (key, text, ids)
                    continue
            if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                text = repr(value)
                if prev is None or prev[1] != text:
                    out[name] = text
                last[name] = (value, text, None)
                continue
            text, ids, key = render(value)
            if prev is None or prev[1] != text:
                out[name] = text
            last[name] = (key, text, ids)
        if seen != len(last):
            has = _dict_contains if as_dict else type(mapping).__contains__
            for name in [n for n in last if not has(mapping, n)]:
                del last[name]
                out[name] = None
        return out

    def line_delta(self, act: Activation, mapping, eff, frame, mutated: bool = False) -> dict | None:
        """Like ``delta``, but only for the variables the previous line can have changed.

        From ``eff``, the bytecode analysis of the previous line (``codeinfo.LineEffects``): the locals it
        stored or deleted; if it could mutate objects (a call that is not a known pure
        builtin, a subscript/attribute store), also the locals it read; and for those and
        for in-place operators, every other local sharing an object with them (aliases,
        found through the ids each rendering visited). A mutating line that reads a
        mutable global, and any line after another frame ran (a callee), rescans all.
        ``mutated``: treat the line as mutating whatever its bytecode says (it read a
        defaultdict once one was rendered in this trace). None when nothing changed.
        """
        if eff.rescan_all:  # exec/eval of a string, a write through a frame's f_locals
            return self.delta(act, mapping)
        last = act.last
        mutating = eff.mutating or mutated
        if eff.pure_calls and frame is not None:
            g = frame.f_globals
            b = frame.f_builtins
            if type(g) is not dict or type(b) is not dict:
                # The program's own mapping (``FunctionType(code, Namespace())``): never asked.
                mutating = True
            else:
                for bname in eff.pure_calls:
                    if bname in g or b.get(bname) is not _BUILTINS.get(bname):
                        mutating = True
                        break
        if mutating:
            if eff.globals and frame is not None:
                g = frame.f_globals
                if type(g) is not dict:  # (see above)
                    return self.delta(act, mapping)
                for gname in eff.globals:
                    gval = g.get(gname)
                    if gval is not None and not is_immutable_type(type(gval)) and not _inert_global(gval):
                        return self.delta(act, mapping)
            names = eff.ordered_both
            shared = eff.ordered_both if eff.inplace else eff.ordered_loads
            # What the line mutated may be reachable from no name it reads: a value an earlier
            # line left on the stack, or a class, function or module of the program.
            unattributed = eff.continued or eff.class_attrs or eff.result_attrs or (
                bool(eff.global_attrs) and frame is not None and self._holds_state(eff.global_attrs, frame.f_globals)
            )
        else:
            names = eff.ordered_writes
            shared = names if eff.inplace else ()
            unattributed = False
            if eff.consumes and self.renderer.saw_lazy:
                # A lazy iterator consumed without a call (``a, b = m``, ``for x in it``) ran
                # what it holds: what those are bound to was visited by its rendering.
                shared = shared + _lazy_among(eff.ordered_loads, mapping)
        # Objects the line may have mutated in place: any other local showing one of them
        # (an alias) must be re-read as well.
        extra = self._aliases_of(shared, last, names, unattributed) if shared or unattributed else None
        reorder = bool(extra)
        if extra:
            names = names + tuple(extra)
        # A name the line binds and then mutates through (``for r in rows: r += [0]``,
        # ``first = next(it); first.append(1)``): its new object's aliases are found after it
        # is re-read, below.
        rebound = eff.ordered_rebound if (mutating or eff.inplace) else ()
        if not names:
            return None
        out = None
        render = self.render_keyed
        refresh = self.renderer.refresh
        todo = list(names)
        i = 0
        while True:
            if i == len(todo):
                if not rebound:
                    break
                more = self._aliases_of(rebound, last, todo)
                rebound = ()
                if not more:
                    break
                todo += more
                reorder = True
            name = todo[i]
            i += 1
            try:
                value = mapping[name]
            except KeyError:
                if name in last:
                    del last[name]
                    if out is None:
                        out = {}
                    out[name] = None
                continue
            prev = last.get(name)
            if prev is not None:
                key = prev[0]
                if key is value:
                    continue
                if type(key) is tuple:  # a snapshot: unchanged, or re-rendered incrementally
                    res = refresh(key, value)
                    if res is None:
                        continue
                    text, ids, key = res
                    if prev[1] != text:
                        if out is None:
                            out = {}
                        out[name] = text
                    last[name] = (key, text, ids)
                    continue
            if type(value) is int and -_SMALL_INT < value < _SMALL_INT:
                text = repr(value)  # the common case, without two calls into the renderer
                ids = None
            else:
                text, ids, value = render(value)
            if prev is None or prev[1] != text:
                if out is None:
                    out = {}
                out[name] = text
            last[name] = (value, text, ids)
        if reorder and out is not None and len(out) > 1:
            # Put the delta in the frame's variable order, so the output does not depend on
            # the order aliases were found in.
            order = codeinfo.variable_order(act.code)
            out = {k: out[k] for k in sorted(out, key=lambda k: (order.get(k, len(order)), k))}
        return out

    @staticmethod
    def _aliases_of(names, last: dict, exclude, everything: bool = False) -> list:
        """The container locals not in ``exclude`` that share an object with the current
        renderings of ``names`` (all of them with ``everything``, or when a rendering left
        objects out: any container may share one of those)."""
        ids = _ANY_CONTAINER if everything else None
        for n in names:
            entry = last.get(n)
            if entry is not None and entry[2] is not None:
                ids = entry[2] if ids is None else ids | entry[2]
        if ids is None:
            return []
        if ELIDED in ids:
            return [n for n, entry in last.items() if entry[2] is not None and n not in exclude]
        return [n for n, entry in last.items()
                if entry[2] is not None and n not in exclude and not ids.isdisjoint(entry[2])]

    def _holds_state(self, names, g: dict) -> bool:
        """Whether one of the globals ``names`` is a function, class or module of the program
        (in scope), whose attributes can hold objects that locals alias."""
        if type(g) is not dict:
            return True  # the program's own mapping, never asked (see line_delta)
        cache = self._state_holders
        for name in names:
            value = g.get(name)
            if value is None:
                continue
            entry = cache.get(id(value))
            if entry is None or entry[0] is not value:
                entry = cache[id(value)] = (value, self._program_object(value))
            if entry[1]:
                return True
        return False

    def _program_object(self, value) -> bool:
        t = type(value)
        if t is types.FunctionType:
            return bool(self.scope(value.__code__.co_filename))
        if t is types.ModuleType:
            file = value.__dict__.get("__file__")
            return type(file) is str and bool(self.scope(file))
        if issubclass(t, type):
            name = type_module(value)
            module = sys.modules.get(name) if type(name) is str else None
            file = module.__dict__.get("__file__") if type(module) is types.ModuleType else None
            return type(file) is not str or bool(self.scope(file))
        return False

    def _emit(self, event: tuple) -> None:
        events = self.events
        if len(events) >= self.limit:
            self.truncated_reason = "max_events"
            self.halt()
            return
        events.append(event)

    def caught(self, exc: BaseException) -> None:
        """An exception escaped a backend callback. The program's own, raised while a callback
        ran (by a signal handler of the program; KeyboardInterrupt, SystemExit, the deadline:
        any BaseException), is re-raised into the program: recording stops there
        (``truncated_reason`` "interrupted"), the program goes on as it would untraced. Anything
        else is the tracer's failure: recorded (``fail``) and swallowed, except that running out
        of memory only stops the recording (``truncated_reason`` "memory")."""
        if issubclass(type(exc), RecursionError):
            # The program's stack is at the recursion limit: it gets the RecursionError here,
            # a few frames before it would untraced, as when the interpreter cannot start a
            # callback at the limit. Swallowed, the program would recurse on past the limit
            # (on 3.8 into "Cannot recover from stack overflow").
            if self.truncated_reason is None:
                self.truncated_reason = "events_lost"
            try:
                self.halt()
            except RecursionError:  # no room for the backend's hook: the callbacks see this
                self.active = False
            raise exc
        if issubclass(type(exc), Exception) and not _raised_by_signal_handler(exc):
            if issubclass(type(exc), MemoryError):
                if self.truncated_reason is None:
                    self.truncated_reason = "memory"
                self.halt()
            else:
                self.fail(exc)
            return
        if self.truncated_reason is None and not issubclass(type(exc), Deadline):
            self.truncated_reason = "interrupted"
        self.halt()
        raise exc

    def check_complete(self) -> None:
        """After the traced run, in its thread: a frame still on the stack never got its return
        event, so the interpreter dropped events (the program replaced the trace function or
        the monitoring tool, or a callback could not run at the recursion limit)."""
        if self.active and self.truncated_reason is None and self.stacks.get(get_ident()):
            self.truncated_reason = "events_lost"

    def fail(self, exc: BaseException) -> None:
        """The tracer itself failed: stop recording and remember why."""
        if self.error is None:
            # Written here rather than by traceback's functions, which look their builtins up
            # live (a program may have replaced them: _builtins.py).
            cls = type(exc)
            name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else "%s.%s" % (
                cls.__module__, cls.__qualname__)
            message = _exception_text(exc)
            self.error = "%s: %s" % (name, message) if message else name
            tb = exc.__traceback__
            if tb is not None:
                while tb.tb_next is not None:
                    tb = tb.tb_next
                code = tb.tb_frame.f_code
                self.error += " (at %s:%s in %s)" % (code.co_filename, tb.tb_lineno, code.co_name)
        self.halt()

    def halt(self) -> None:
        """Stop recording for good; let the backend detach what it can."""
        was_active = self.active
        self.active = False
        hook = self.on_halt
        if was_active and hook is not None:
            self.on_halt = None
            try:
                hook()
            except Exception:
                pass

    # -- output --------------------------------------------------------------------------

    def event_dicts(self) -> list:
        """The buffered events as the dicts of schemas/trace_stream.md.

        Runs after the traced code, with the cyclic garbage collector paused: the tens of
        thousands of new dicts would otherwise trigger collections that walk them all again
        and again (more than doubling the time), and none of them can form a cycle.
        """
        return _without_gc(self._event_dicts)

    def events_json(self) -> str:
        """The buffered events as the JSON text of ``json.dumps(self.event_dicts(),
        ensure_ascii=False, separators=(",", ":"))``, written straight from the tuples: no
        per-event dicts (the batch child and the command line write traces this way). The
        garbage collector is paused as in ``event_dicts``."""
        return _without_gc(self._events_json)

    def _events_json(self) -> str:
        string = _json_string
        parts = []
        append = parts.append
        # id(code) -> (its '"function":..,"file":..,"depth":' text, its file,
        #               {(kind, lineno): the event's text up to "depth"})
        infos: dict = {}
        source_line = codeinfo.source_line
        for kind, lineno, code, fid, tid, depth, local_delta, arg in self.events:
            info = infos.get(id(code))
            if info is None:
                info = infos[id(code)] = (
                    ',"function":%s,"file":%s,"depth":' % (
                        string(codeinfo.qualname(code)), string(self._shown_file(code.co_filename))),
                    code.co_filename,
                    {},
                )
            sources = info[2]
            head = sources.get((kind, lineno))
            if head is None:
                source = source_line(info[1], lineno) if lineno else ""
                head = sources[(kind, lineno)] = '{"kind":"%s","lineno":%d,"source":%s%s' % (
                    kind, lineno if lineno is not None else 0, string(source), info[0])
            if local_delta:
                locals_text = "{" + ",".join([
                    string(name) + (":null" if text is None else ":" + string(text))
                    for name, text in local_delta.items()
                ]) + "}"
            else:
                locals_text = "{}"
            append('%s%d,"frame_id":%d,"thread_id":%d,"locals":%s,"arg":%s}' % (
                head, depth, fid, tid, locals_text, "null" if arg is None else string(arg)))
        return "[" + ",".join(parts) + "]"

    def _shown_file(self, filename: str) -> str:
        """The name events give ``filename``: relative to a folder of ``relative_to`` it is in."""
        for folder in self.relative_to:
            if filename.startswith(folder) and len(filename) > len(folder):
                return filename[len(folder):]
        return filename

    def _event_dicts(self) -> list:
        out = []
        append = out.append
        # id(code) -> (qualname, file, its name in events, {lineno: source line}); the events keep the
        # code objects alive, so their ids are stable (code objects hash slowly).
        infos: dict = {}
        source_line = codeinfo.source_line
        for kind, lineno, code, fid, tid, depth, local_delta, arg in self.events:
            info = infos.get(id(code))
            if info is None:
                info = infos[id(code)] = (
                    codeinfo.qualname(code), code.co_filename, self._shown_file(code.co_filename), {})
            sources = info[3]
            source = sources.get(lineno)
            if source is None:
                source = sources[lineno] = source_line(info[1], lineno) if lineno else ""
            append({
                "kind": kind,
                "lineno": lineno if lineno is not None else 0,
                "source": source,
                "function": info[0],
                "file": info[2],
                "depth": depth,
                "frame_id": fid,
                "thread_id": tid,
                "locals": local_delta if local_delta is not None else {},
                "arg": arg,
            })
        return out


def _without_gc(build):
    """``build()`` with the cyclic garbage collector paused (it stays as it was)."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return build()
    finally:
        if enabled:
            gc.enable()
