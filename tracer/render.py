"""Safe, bounded, deterministic rendering of live values to text.

Rendering never runs the traced program's code: exact builtin types are rendered like
``repr()`` (by the interpreter's own C code), containers recursively, and anything else
structurally from its instance ``__dict__`` / ``__slots__`` read through the type-level
descriptors (``Point(x=1, y=2)``), so no user ``__repr__``, ``__eq__``, ``__hash__``,
property, ``__getattr__`` or descriptor ever runs. Every rendering is bounded by a
character budget, an items budget and a depth budget; truncation keeps a head and a tail.
"""

from __future__ import annotations

import builtins
import sys
import types
from collections import defaultdict as _defaultdict
from gc import get_referents as _gc_referents
from itertools import compress, islice, repeat
from operator import is_, is_not

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .env import PYBEHAVIOR
from .jsonl import valid_text

DEFAULT_MAX_VALUE_CHARS = 1000
DEFAULT_MAX_ITEMS = 100
DEFAULT_MAX_DEPTH = 8
# A depth budget up to this cannot exhaust the interpreter's stack by itself (a few frames per
# level): a RecursionError while rendering within it means the program's stack is at its limit,
# and it goes to the program (Recorder.caught) instead of becoming an opaque rendering.
STACK_SAFE_DEPTH = 100

ELLIPSIS_MARK = "..."
_GAP = object()  # where a set's item list shows ELLIPSIS_MARK (see _set)
# A string inside a container is cut to the room left for it, but never below this: a shorter
# one that does not fit is left out whole.
_MIN_STR_ROOM = 16
# In a rendering's ids: the items budget or the depth budget left out items that may be mutable
# objects, so the ids are not every object the value holds (the recorder then re-reads every
# container after a line mutating it). Not marked: a long list or tuple whose shown head and tail
# are all small scalars (taken to hold scalars only), left-out items that are scalars or tuples of
# scalars (checked, up to _SCAN_LEFT_OUT of them), and what the character budget cut.
ELIDED = 0  # never the id of an object
_SCAN_LEFT_OUT = 1000

# Type-level accessors that bypass metaclass overrides (a metaclass may define a
# ``__name__`` property; reading it through ``type``'s own descriptor never runs it).
_type_name = type.__dict__["__name__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_module = type.__dict__["__module__"].__get__
type_module = _type_module  # a class's __module__, without its metaclass's code
_type_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_GetSetDescriptor = type(type.__dict__["__dict__"])
_MemberDescriptor = types.MemberDescriptorType
_dict_items = dict.items
# 3.15's builtin immutable mapping (not a dict subclass), or None before.
_FROZENDICT = getattr(builtins, "frozendict", None)
_list_getitem = list.__getitem__
_tuple_getitem = tuple.__getitem__
_exc_args = BaseException.__dict__["args"].__get__

# The recorder's key for a value whose identity says nothing (mutable or user objects):
# never ``is`` any live value, so such values are always re-rendered.
MUTABLE = object()

# Exact types whose repr() is the interpreter's own, cheap and deterministic.
_SCALARS = frozenset([int, float, complex, bool, type(None), type(Ellipsis), type(NotImplemented), range])

# Exact immutable scalar types: an unchanged identity means an unchanged rendering.
IMMUTABLE_TYPES = frozenset([int, float, complex, bool, str, bytes, type(None), range])
_SCALARS_OR_TUPLE = IMMUTABLE_TYPES | {tuple}

# Item types whose repr the fast path may join at C speed (strings only when short).
_FAST_KINDS = frozenset([float, type(None)])
_INT_BOOL = frozenset([int, bool])
_STR_ONLY = frozenset([str])
_FAST_STR_LEN = 100
_SEQ_TYPES = frozenset([list, tuple])
_TABLE = "table"  # marks a table key (see Renderer.render_keyed)
_FAST_INT_MAX = 1 << 3300
_FAST_INT_MIN = -_FAST_INT_MAX

# The same sets by the ids of their types. A set (or dict) lookup of a class hashes it and may
# compare it, which runs its metaclass's ``__hash__``/``__eq__``: user code when a program's
# metaclass defines them. The types of arbitrary values are therefore looked up by id (an int);
# the builtin types here live as long as the interpreter, so their ids are never reused.
_IMMUTABLE_IDS = frozenset(map(id, IMMUTABLE_TYPES))
_SCALAR_IDS = frozenset(map(id, _SCALARS))
_SCALARS_OR_TUPLE_IDS = frozenset(map(id, _SCALARS_OR_TUPLE))
_FAST_KINDS_IDS = frozenset(map(id, _FAST_KINDS))
_INT_BOOL_IDS = frozenset(map(id, _INT_BOOL))
_STR_ONLY_IDS = frozenset(map(id, _STR_ONLY))
_SEQ_IDS = frozenset(map(id, _SEQ_TYPES))
_STR_ID = id(str)


_WrapperDescriptor = types.WrapperDescriptorType
_BASE_EXC_STR = BaseException.__dict__["__str__"]


def _exc_str_reads() -> dict:
    """Each builtin exception ``__str__`` (its C slot) -> the attributes it formats besides
    ``args``, as ``(getter, allowed exact types)``.

    ``str(exc)`` is used only when these hold plain values: ``OSError.__str__`` formats
    ``filename`` with ``%R`` (a user ``__repr__``), ``SyntaxError.__str__`` its ``msg`` with
    ``str()``, and ``UnicodeDecodeError.__str__`` reads ``object`` as bytes whatever it is.
    A slot not listed here (a future builtin) is never trusted: its arguments are rendered.
    """
    plain = (int, str, bytes, float, bool, type(None))
    text = (str,)
    table = [
        (BaseException, ()),
        (AttributeError, ()),  # 3.10+: BaseException's, formats args only
        (NameError, ()),
        (ImportError, ()),  # its msg is used only when it is an exact str, else args
        (OSError, (("errno", plain), ("strerror", plain), ("filename", plain), ("filename2", plain))),
        (SyntaxError, (("msg", plain), ("filename", plain), ("lineno", plain))),
        (UnicodeEncodeError, (("encoding", text), ("object", (str,)), ("reason", text))),
        (UnicodeDecodeError, (("encoding", text), ("object", (bytes,)), ("reason", text))),
        (UnicodeTranslateError, (("object", (str,)), ("reason", text))),
    ]
    group = getattr(builtins, "BaseExceptionGroup", None)
    if group is not None:  # PYBEHAVIOR: 3.11+ exception groups; %S of their message
        table.append((group, (("message", text),)))
    reads = {}
    for cls, attrs in table:
        method = _type_dict(cls).get("__str__")
        if type(method) is not _WrapperDescriptor:
            continue  # inherited on this version: the base's entry covers it
        getters = []
        for name, allowed in attrs:
            desc = class_lookup(cls, name)
            if type(desc) not in (_MemberDescriptor, _GetSetDescriptor):
                break
            getters.append((desc.__get__, allowed))  # type: ignore[attr-defined]
        else:
            reads[method] = tuple(getters)
    return reads


# Bits in an int whose decimal form has about ~1000 digits; above that we do not format.
_MAX_INT_BITS = 3300


def class_lookup(cls: type, name: str) -> object:
    """Find ``name`` in the class dicts along ``cls``'s MRO without running any descriptor."""
    for klass in _type_mro(cls):
        d = _type_dict(klass)
        if name in d:
            return d[name]
    return None


def type_name(cls: type) -> str:
    """``cls.__name__`` read safely."""
    try:
        return _exact_str(_type_name(cls))
    except Exception:
        return "?"


def type_qualified_name(cls: type) -> str:
    """``module.QualName`` (just ``QualName`` for builtins), read safely."""
    try:
        qual = _exact_str(_type_qualname(cls))
        mod = _type_module(cls)
    except Exception:
        return type_name(cls)
    if type(mod) is not str or mod == "builtins":
        return qual
    return "%s.%s" % (mod, qual)


def instance_attrs(obj: object, cls: type, visited: list | None = None) -> list:
    """The (name, value) pairs of ``obj``'s instance dict and filled slots, no user code run;
    the instance dict's id goes to ``visited`` (``d = obj.__dict__`` aliases it)."""
    pairs = []
    desc = class_lookup(cls, "__dict__")
    # A getset descriptor for classes defined in Python; a member descriptor for a few C types
    # with an instance dict (types.SimpleNamespace).
    if type(desc) is _GetSetDescriptor or type(desc) is _MemberDescriptor:
        d = desc.__get__(obj, cls)
        if issubclass(type(d), dict):
            pairs.extend(_dict_items(d))
            if visited is not None:
                visited.append(id(d))
    seen = set()
    for klass in _type_mro(cls):
        slots = _type_dict(klass).get("__slots__")
        if slots is None:
            continue
        if type(slots) is str:
            slots = (slots,)
        if type(slots) is not tuple and type(slots) is not list:
            continue
        for name in slots:
            if type(name) is not str or name in seen or name in ("__dict__", "__weakref__"):
                continue
            seen.add(name)
            member = _type_dict(klass).get(name)
            if type(member) is not _MemberDescriptor:
                continue
            try:
                pairs.append((name, member.__get__(obj, cls)))
            except AttributeError:
                pass
    return pairs


# Instance attributes left out of the structural rendering of a stdlib class and its
# subclasses: values that differ between runs (thread ids, OS handles) or with scheduling
# (whether a started thread has finished yet), so that traces stay deterministic.
_OMITTED_ATTRS = (
    ("threading", "Thread", frozenset(["_ident", "_native_id", "_tstate_lock", "_handle", "_os_thread_handle", "_is_stopped"])),
)


def omitted_attrs(cls: type) -> frozenset:
    """The names in ``_OMITTED_ATTRS`` that apply to ``cls`` (empty for almost every class)."""
    out: frozenset = frozenset()
    for module, name, names in _OMITTED_ATTRS:
        base = _stdlib_type(module, name)
        if type(base) is type and issubclass(cls, base):  # type: ignore[arg-type]
            out |= names
    return out


# Iterators that call what they were given when consumed (``m = map(out.append, xs)``, later
# ``list(m)``): their renderings visit the objects those callables are bound to. By exact type;
# ``__reduce__`` of these builtins is C code that hands back their function and iterators.
_LAZY_ITERATORS = (map, filter, zip, enumerate, type(iter(int, 0)))
_LAZY_ITERATOR_IDS = frozenset(map(id, _LAZY_ITERATORS))
# dict.keys(), .values(), .items(): live views of a dict, rendered like their repr.
_DICT_VIEW_IDS = frozenset(map(id, (type({}.keys()), type({}.values()), type({}.items()))))


def _visit_callables(it: object, ids: list, depth: int) -> None:
    """Append to ``ids`` the objects the callables inside lazy iterator ``it`` are bound to."""
    t = type(it)
    if depth > 4 or id(t) not in _LAZY_ITERATOR_IDS:
        return
    try:
        parts = t.__reduce__(it)[1]
    except Exception:
        return
    for part in parts if type(parts) is tuple else ():
        pt = type(part)
        if pt is types.BuiltinMethodType or pt is types.MethodType:
            owner = part.__self__
            if owner is not None and type(owner) is not types.ModuleType:
                ids.append(id(owner))
        elif id(pt) in _LAZY_ITERATOR_IDS:
            _visit_callables(part, ids, depth + 1)


def type_ids(items) -> set:
    """The ids of the types of the sequence ``items`` (see _IMMUTABLE_IDS: never the types
    themselves); one id when all the items have the type of the first, the common case."""
    if not items:
        return set()
    first = type(items[0])
    for item in items:
        if type(item) is not first:
            return set(map(id, map(type, items)))
    return {id(first)}


def is_immutable_type(t: type) -> bool:
    """Whether ``t`` is one of IMMUTABLE_TYPES, without hashing ``t``."""
    return id(t) in _IMMUTABLE_IDS


# The stdlib's folder (that of a pure-Python stdlib module), with its separator ("" unknown).
_STDLIB_DIR = getattr(types, "__file__", "")[: -len("types.py")]


def _stdlib_module(name: str):
    """``sys.modules[name]`` if it is the stdlib's module (built in, or a file of the stdlib's
    folder outside any site-packages), else None: a program may have its own ``uuid.py`` beside
    it (first on sys.path), or put its own object in sys.modules, whose classes are its code."""
    mod = sys.modules.get(name)
    if mod is None or not issubclass(type(mod), types.ModuleType):
        return None
    where = mod.__dict__.get("__file__")  # from its dict: getattr could run a module __getattr__
    if where is None:
        return mod  # built into the interpreter
    if type(where) is str and _STDLIB_DIR and where.startswith(_STDLIB_DIR) and "-packages" not in where[len(_STDLIB_DIR):]:
        return mod
    return None


def _stdlib_type(module: str, name: str) -> object:
    """A stdlib type if its module is already imported (never import on the program's behalf)."""
    mod = _stdlib_module(module)
    return mod.__dict__.get(name) if mod is not None else None


def _is_stdlib_class(t: type, module: str, name: str) -> bool:
    """Whether ``t`` is the stdlib class ``module.name``: that attribute of the module, and
    defined there (a program, or a test's monkeypatch, may set ``datetime.date = MyDate``, a
    subclass whose own ``__repr__`` or properties the stdlib class's renderer would run)."""
    if t is not _stdlib_type(module, name):
        return False
    mod = _type_module(t)
    return type(mod) is str and (mod == module or mod.startswith(module + "."))  # pathlib._local


_EXC_STR_READS = _exc_str_reads()
# The builtin ``__str__`` slots that do not format ``args`` (only the attributes listed above):
# an exception group's says ``"<message> (<n> sub-exceptions)"`` whatever its exceptions are.
_EXC_STR_IGNORES_ARGS = frozenset(
    m for m in [_type_dict(getattr(builtins, "BaseExceptionGroup", BaseException)).get("__str__")]
    if m in _EXC_STR_READS and m is not _BASE_EXC_STR  # PYBEHAVIOR: 3.11+ exception groups
)


class _Budget:
    """Mutable per-rendering state: characters left, containers on the path (cycles)."""

    __slots__ = ("chars", "active", "ids", "elided", "cuts", "whole")

    def __init__(self, chars: int) -> None:
        self.chars = chars
        self.cuts = 0  # items cut or left out for want of room (see Renderer._seq)
        # Only a whole rendering is of use (an item of a container whose items must all fit): a
        # container that does not fit its room gives up at once (a cut) instead of fitting.
        self.whole = False
        self.active: set = set()
        self.ids: list = []  # every container / object visited (aliasing checks)
        self.elided = False  # items left out that may be mutable objects (see ELIDED)

    def left_out(self, items) -> None:
        """``items`` (an iterable) were left out by the items budget: mark the rendering
        incomplete unless they are scalars or tuples of scalars (checked up to _SCAN_LEFT_OUT)."""
        if self.elided:
            return
        some = list(islice(items, _SCAN_LEFT_OUT + 1))
        if len(some) > _SCAN_LEFT_OUT:
            self.elided = True
            return
        kinds = type_ids(some)
        if kinds <= _IMMUTABLE_IDS:
            return
        if kinds <= _SCALARS_OR_TUPLE_IDS and all(
            type_ids(item) <= _IMMUTABLE_IDS for item in some if type(item) is tuple
        ):
            return
        self.elided = True


def _whole_head(parts: list, head: int) -> list:
    """The texts of the head items an item-by-item pass rendered whole: all but the last item
    rendered (an item that did not fit leaves no room, so the pass stops after it), unless
    tail items were rendered after the head and its "..."."""
    if len(parts) > head + 1:
        return parts[:head]
    return parts[:max(min(len(parts), head) - 1, 0)]


class Renderer:
    """Render values to bounded text; ``render(value) -> str`` never raises."""

    def __init__(
        self,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.max_value_chars = max_value_chars if max_value_chars > 0 else sys.maxsize
        self.max_items = max_items if max_items > 0 else sys.maxsize
        self.max_depth = max_depth if max_depth > 0 else sys.maxsize
        # Types whose rendering failed once, and the rendering function of each type seen; both
        # by id(type) -> (type, ...), the type kept so that its id is not reused meanwhile.
        self._failed: dict = {}
        self._kinds: dict = {}
        # Whether a collections.defaultdict (or subclass) was rendered: the recorder then checks
        # the lines that subscript for one (reading a missing key inserts it).
        self.saw_defaultdict = False
        # A lazy map/filter/iter(f, s)/... has been rendered: lines that consume an iterator
        # without a call may run what it holds (see codeinfo.LineEffects.consumes).
        self.saw_lazy = False

    # -- public -------------------------------------------------------------------------

    def render(self, value: object) -> str:
        """Render ``value``; on any internal failure the type is marked and rendered opaquely."""
        t = type(value)
        if t is int:
            if -(1 << 60) < value < (1 << 60):  # type: ignore[operator]
                return repr(value)
        elif t is str:
            r = self._str(value)  # type: ignore[arg-type]
            return r if len(r) <= self.max_value_chars else self._cut(r)
        elif t is bool or t is float or value is None:
            return repr(value)
        try:
            text = self._render(value, 0, _Budget(self.max_value_chars))
        except RecursionError:
            if self.max_depth <= STACK_SAFE_DEPTH:
                raise  # not the value's nesting: the program's stack is at its limit
            return "<%s object>" % type_name(t)
        except Exception:
            self._failed[id(t)] = t
            return "<%s object>" % type_name(t)
        return self._cut(text)

    def render_keyed(self, value: object) -> tuple:
        """``(text, ids, key)``: the rendering, the ids of the containers/objects it visited
        (None for immutable scalars), and what the recorder keeps to skip re-rendering.

        The recorder uses the ids to find which other variables share an object that a line
        may have mutated. ``key`` is the value itself for immutable scalars (an unchanged
        identity means an unchanged rendering), a ``snapshot`` tuple for a list/tuple of
        immutable scalars (see ``unchanged``), and ``MUTABLE`` for everything else.
        """
        t = type(value)
        if id(t) in _IMMUTABLE_IDS:
            return self.render(value), None, value
        if t is list or t is tuple:
            n = len(value)  # type: ignore[arg-type]
            if 1 < n <= self.max_items:
                # The hot case (a mutated list of numbers): the interpreter's own repr, when
                # every item is a small exact scalar, is exactly what the item-by-item path
                # produces.
                kinds = type_ids(value)
                if len(kinds) == 1 or kinds == _INT_BOOL_IDS or kinds == _SEQ_IDS:
                    ok = False
                    if kinds <= _INT_BOOL_IDS:
                        ok = _FAST_INT_MIN < min(value) and max(value) < _FAST_INT_MAX  # type: ignore[type-var,call-overload]
                    elif kinds == _STR_ONLY_IDS:
                        ok = max(map(len, value)) <= _FAST_STR_LEN  # type: ignore[call-overload]
                    elif kinds <= _FAST_KINDS_IDS:
                        ok = True
                    elif kinds <= _SEQ_IDS and self.max_depth > 1 and all(map(self._flat_scalars, value)):  # type: ignore[call-overload]
                        # A table (a list of lists of small scalars, e.g. a matrix): likewise,
                        # keyed by its rows' items so that a changed cell re-renders one row.
                        reprs = list(map(repr, value))  # type: ignore[call-overload]
                        text = (("[%s]" if t is list else "(%s)") % ", ".join(reprs))
                        if len(text) <= self.max_value_chars:
                            rows = tuple((id(r), type(r), tuple(r)) for r in value)  # type: ignore[attr-defined]
                            key = (id(value), _TABLE, n, rows, reprs, t)
                            return text, frozenset(map(id, value)) | {id(value)}, key  # type: ignore[call-overload]
                    if ok:
                        text = repr(value)
                        if len(text) <= self.max_value_chars:
                            ident = id(value)
                            return text, frozenset((ident,)), (ident, t, n, tuple(value), None)  # type: ignore[call-overload]
            text, ids = self._render_ids(value, t)
            if ids is not None and len(ids) == 1:
                return text, ids, self.snapshot(value) or MUTABLE
            return text, ids, MUTABLE
        if t is dict and 0 < len(value) <= self.max_items:  # type: ignore[arg-type]
            # A dict of small exact scalars (word counts, memo tables): repr() is exactly
            # what the item-by-item path produces within the budgets.
            flat = self._flat_scalars
            if flat(list(value)) and flat(list(value.values())):  # type: ignore[call-overload,attr-defined]
                text = repr(value)
                if len(text) <= self.max_value_chars:
                    return text, frozenset((id(value),)), MUTABLE
        text, ids = self._render_ids(value, t)
        return text, ids, MUTABLE

    def _flat_scalars(self, seq) -> bool:
        """Whether an exact list/tuple renders exactly like ``repr()``: within the items
        budget and made only of small exact scalars (the fast path's conditions)."""
        n = len(seq)
        if n > self.max_items:
            return False
        if n == 0:
            return True
        kinds = type_ids(seq)
        if len(kinds) != 1 and kinds != _INT_BOOL_IDS:
            return False
        if kinds <= _INT_BOOL_IDS:
            return _FAST_INT_MIN < min(seq) and max(seq) < _FAST_INT_MAX
        if kinds == _STR_ONLY_IDS:
            return max(map(len, seq)) <= _FAST_STR_LEN
        return kinds <= _FAST_KINDS_IDS

    def _render_ids(self, value: object, t: type) -> tuple:
        budget = _Budget(self.max_value_chars)
        try:
            text = self._render(value, 0, budget)
        except RecursionError:
            if self.max_depth <= STACK_SAFE_DEPTH:
                raise  # not the value's nesting: the program's stack is at its limit
            return "<%s object>" % type_name(t), None
        except Exception:
            self._failed[id(t)] = t
            return "<%s object>" % type_name(t), None
        if budget.elided:
            budget.ids.append(ELIDED)
        return self._cut(text), (frozenset(budget.ids) if budget.ids else None)

    def snapshot(self, value: object) -> tuple | None:
        """A key that lets ``unchanged`` prove a list/tuple still renders the same, or None.

        Only for exact lists/tuples whose shown items (head and tail within the items
        budget) are all exact immutable scalars: their rendering is then a function of the
        type, the length and the identities of those items. The key holds the items, not
        the container (nothing of the program's is kept alive beyond immutable scalars).
        """
        t = type(value)
        if t is not list and t is not tuple:
            return None
        n = len(value)  # type: ignore[arg-type]
        if n <= self.max_items:
            items = tuple(value)  # type: ignore[call-overload]
        else:
            head, tail = self._items_plan(n)
            items = tuple(value[:head]) + tuple(value[n - tail:])  # type: ignore[index]
        if not type_ids(items) <= _IMMUTABLE_IDS:
            return None
        return (id(value), t, n, items, None)

    def refresh(self, key: tuple, value: object) -> tuple | None:
        """None when ``value`` still renders as the snapshot ``key`` says, else
        ``render_keyed(value)``: for a list of small scalars (within the budgets), only the
        items whose identity changed are re-rendered (a swap costs two reprs, not sixty)."""
        n = key[2]
        if key[1] is _TABLE:
            return self._refresh_table(key, value)
        if id(value) != key[0] or type(value) is not key[1] or len(value) != n:  # type: ignore[arg-type]
            return self.render_keyed(value)
        if n > self.max_items:
            return None if self.unchanged(key, value) else self.render_keyed(value)
        changed = list(compress(range(n), map(is_not, key[3], value)))  # type: ignore[call-overload]
        if not changed:
            return None
        if key[1] is not list or n < 2:
            return self.render_keyed(value)
        reprs = key[4]
        if reprs is None:
            return self._render_list_items(value, n, None, range(n))
        return self._render_list_items(value, n, reprs, changed)

    def _refresh_table(self, key: tuple, value) -> tuple | None:
        """``refresh`` for a table key: rows whose items kept their identities keep their
        repr; the others are re-rendered (if they are still flat rows of small scalars)."""
        ident, _, n, rows, reprs, t = key
        if id(value) != ident or type(value) is not t or len(value) != n:
            return self.render_keyed(value)
        new_rows = None
        for i, (row_id, row_type, items) in enumerate(rows):
            row = value[i]
            # Same object (the ids feed the alias checks), same type, same items.
            if id(row) == row_id and type(row) is row_type and len(row) == len(items) and all(map(is_, items, row)):
                continue
            if id(type(row)) not in _SEQ_IDS or not self._flat_scalars(row):
                return self.render_keyed(value)
            if new_rows is None:
                new_rows, reprs = list(rows), list(reprs)
            new_rows[i] = (id(row), type(row), tuple(row))
            reprs[i] = repr(row)
        if new_rows is None:
            return None
        text = ("[%s]" if t is list else "(%s)") % ", ".join(reprs)
        if len(text) > self.max_value_chars:
            return self.render_keyed(value)
        return text, frozenset(map(id, value)) | {ident}, (ident, _TABLE, n, tuple(new_rows), reprs, t)

    def _render_list_items(self, value, n: int, old: list | None, changed) -> tuple:
        """A list of small exact scalars from the item reprs (``changed`` ones re-done)."""
        reprs = list(old) if old is not None else [""] * n
        for i in changed:
            v = value[i]
            tv = type(v)
            if tv is int or tv is bool:
                if not (_FAST_INT_MIN < v < _FAST_INT_MAX):
                    return self.render_keyed(value)
            elif tv is str:
                if len(v) > _FAST_STR_LEN:
                    return self.render_keyed(value)
            elif id(tv) not in _FAST_KINDS_IDS:
                return self.render_keyed(value)
            reprs[i] = repr(v)
        text = "[" + ", ".join(reprs) + "]"
        if len(text) > self.max_value_chars:
            return self.render_keyed(value)
        ident = id(value)
        return text, frozenset((ident,)), (ident, list, n, tuple(value), reprs)

    def unchanged(self, key: tuple, value: object) -> bool:
        """Whether ``value`` is the object ``key`` (from ``snapshot``) describes, unchanged."""
        if id(value) != key[0] or type(value) is not key[1]:
            return False
        n = len(value)  # type: ignore[arg-type]
        if n != key[2]:
            return False
        if n <= self.max_items:
            return all(map(is_, key[3], value))  # type: ignore[call-overload]
        # Compare the shown head and tail in place: ``map`` stops at the shorter iterable,
        # so no copy of the (long) list is made.
        head, tail = self._items_plan(n)
        items = key[3]
        return all(map(is_, islice(items, head), value)) and all(  # type: ignore[call-overload]
            map(is_, islice(items, head, None), value[n - tail:]))  # type: ignore[call-overload,index]

    def render_exception(self, exc: BaseException) -> str:
        """``"TypeName: message"`` for an exception event or trace summary."""
        return "%s: %s" % (type_qualified_name(type(exc)), self.exception_message(exc))

    def exception_message(self, exc: BaseException) -> str:
        """What ``str(exc)`` would say, computed without running user code (a lone surrogate in
        it written out, as the output writes it: ``jsonl.valid_text``)."""
        return valid_text(self._exception_message(exc))

    def _exception_message(self, exc: BaseException) -> str:
        try:
            args = _exc_args(exc)
        except Exception:
            return ""
        cls = type(exc)
        if cls is not KeyError and self._builtin_str_is_safe(exc, cls, args):
            try:
                return self._cut(str(exc))
            except Exception:
                pass
        if type(args) is not tuple:
            return ""
        if len(args) == 0:
            return ""
        if len(args) == 1:
            a = args[0]
            if type(a) is str and cls is not KeyError:
                return self._cut(a)
            return self.render(a)
        return self.render(args)

    def _builtin_str_is_safe(self, exc: BaseException, cls: type, args: object) -> bool:
        """Whether ``str(exc)`` is a builtin exception's own ``__str__`` reading only plain
        values: its ``args`` and the attributes that ``__str__`` formats (``_EXC_STR_READS``)."""
        method = class_lookup(cls, "__str__")
        if type(method) is not _WrapperDescriptor:  # a Python-level __str__
            return False
        reads = _EXC_STR_READS.get(method)
        if reads is None or not (method is _BASE_EXC_STR or type_module_is_builtins(cls)):
            return False
        if method not in _EXC_STR_IGNORES_ARGS and not self._plain(args):
            return False
        for getter, allowed in reads:
            t = type(getter(exc))
            if not any([t is a for a in allowed]):  # by identity: a metaclass may define __eq__
                return False
        return True

    # -- internals ------------------------------------------------------------------------

    def _plain(self, value: object, depth: int = 0) -> bool:
        """True when ``value`` is built only of exact builtin scalars/containers (safe str())."""
        t = type(value)
        if id(t) in _IMMUTABLE_IDS:
            return True
        if depth < 3 and (t is tuple or t is list):
            return all(self._plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
        return False

    def _cut(self, text: str) -> str:
        """Apply the character budget to a finished rendering: head + mark + tail. Containers
        and strings fit the budget by themselves (whole items, see _seq); this is the last resort
        for the few renderings that are not (a ``str`` subclass's repr, a very long name)."""
        limit = self.max_value_chars
        if len(text) <= limit:
            return text
        if limit <= len(ELLIPSIS_MARK) + 2:
            return text[:limit]
        keep = limit - len(ELLIPSIS_MARK)
        head = keep - keep // 3
        tail = keep - head
        return text[:head] + ELLIPSIS_MARK + (text[-tail:] if tail else "")

    def _spend(self, budget: _Budget, text: str) -> str:
        budget.chars -= len(text)
        return text

    def _render(self, value: object, depth: int, budget: _Budget) -> str:
        t = type(value)
        if t is int:
            return self._spend(budget, self._int(value))  # type: ignore[arg-type]
        if t is str:
            return self._spend(budget, self._str(value, budget))  # type: ignore[arg-type]
        if id(t) in _SCALAR_IDS:
            return self._spend(budget, repr(value))
        if t is bytes:
            return self._spend(budget, self._bytes(value, budget))  # type: ignore[arg-type]
        budget.ids.append(id(value))
        if self._failed and self._failed.get(id(t)) is t:
            return self._spend(budget, "<%s object>" % type_name(t))
        if t is list:
            return self._seq(value, depth, budget, "[", "]", t)
        if t is tuple:
            if len(value) == 1:  # type: ignore[arg-type]
                budget.chars -= 3
                return "(" + self._render(_tuple_getitem(value, 0), depth + 1, budget) + ",)"  # type: ignore[arg-type]
            return self._seq(value, depth, budget, "(", ")", t)
        if t is dict:
            return self._dict(value, depth, budget, "{", "}")
        if t is _FROZENDICT:
            return self._frozendict(value, depth, budget, "frozendict")
        if t is set:
            if not value:
                return "set()"
            return self._set(value, depth, budget, "{", "}")
        if t is frozenset:
            if not value:
                return "frozenset()"
            return self._set(value, depth, budget, "frozenset({", "})")
        if t is bytearray:
            return self._spend(budget, "bytearray(%s)" % self._bytes(bytes(value)))  # type: ignore[arg-type]
        entry = self._kinds.get(id(t))
        if entry is None or entry[0] is not t:
            entry = self._kinds[id(t)] = (t, self._classify(t))
            if issubclass(t, _defaultdict):
                self.saw_defaultdict = True
        return entry[1](value, depth, budget)

    def _int(self, value: int) -> str:
        if value.bit_length() <= _MAX_INT_BITS:
            return repr(value)
        digits = int(value.bit_length() * 0.30103) + 1
        low = repr(abs(value) % 10**12).rjust(12, "0")
        sign = "-" if value < 0 else ""
        return "<int %s~%d digits ...%s>" % (sign, digits, low)

    def _str(self, value, budget: _Budget | None = None):
        """repr() of a str or bytes, or of its head and tail when it is over the character
        budget (or, with ``budget``, over the room left for it in a container)."""
        limit = self.max_value_chars
        if budget is not None:
            room = budget.chars
            if len(value) <= room:  # (the room is never more than the character budget)
                return repr(value)
            if room < limit:
                limit = room if room > _MIN_STR_ROOM else _MIN_STR_ROOM
                if len(value) > limit:
                    budget.cuts += 1
                    if budget.whole:  # of no use cut: no room left, the caller stops
                        budget.chars = 0
                        return ELLIPSIS_MARK
        if len(value) <= limit:
            return repr(value)
        keep = max(limit - 8, 2)
        head = value[: keep - keep // 3]
        tail = value[len(value) - keep // 3 :]
        return self._join_quoted(repr(head), repr(tail))

    _bytes = _str

    @staticmethod
    def _join_quoted(head: str, tail: str) -> str:
        # 'abc' + 'xyz' -> 'abc...xyz' when both use the same quote, else 'abc'...'xyz'.
        if head[-1:] == tail[-1:] and tail[-1:] in ("'", '"'):
            quote_at = tail.index(tail[-1])
            return head[:-1] + ELLIPSIS_MARK + tail[quote_at + 1 :]
        return head + ELLIPSIS_MARK + tail

    def _enter(self, value: object, depth: int, budget: _Budget, empty: str) -> str | None:
        """Common guard for containers: depth, cycle and exhausted budget."""
        if id(value) in budget.active:
            return empty
        if depth >= self.max_depth:
            budget.elided = True  # its items are not visited
            return empty
        if budget.chars <= 0:
            budget.cuts += 1
            return empty
        return None

    def _items_plan(self, n: int) -> tuple:
        """How many items to show from the head and from the tail of an ``n``-item container."""
        m = self.max_items
        if n <= m:
            return n, 0
        tail = m // 4
        return m - tail, tail

    # Containers: ``budget.chars`` is the room a container's whole text may take; each item is
    # rendered with what is left of it as its own room (a string or container item shows its
    # own head and tail to fit), and the container leaves ``budget.chars`` less its length.
    # What does not fit is left out by whole items (``_overflow``): a rendering never cuts a
    # number, a name or a string's quotes in the middle.

    def _seq(self, value, depth, budget, open_, close, t, prefix="", suffix=""):
        n = list.__len__(value) if issubclass(t, list) else tuple.__len__(value)
        if n == 0:
            return prefix + open_ + close + suffix
        guard = self._enter(value, depth, budget, prefix + open_ + ELLIPSIS_MARK + close + suffix)
        if guard is not None:
            return guard
        allow = budget.chars - 2  # room for the items (open_ and close are one character each)
        if prefix or suffix:
            allow -= len(prefix) + len(suffix)
        getitem = _list_getitem if issubclass(t, list) else _tuple_getitem
        head, tail = self._items_plan(n)
        inner = None
        fast = self._fast_items(getitem(value, slice(0, head)))
        if fast is not None:
            if not tail:
                inner = fast
            else:
                fast_tail = self._fast_items(getitem(value, slice(n - tail, n)))
                if fast_tail is not None:
                    inner = fast + ", " + ELLIPSIS_MARK + ", " + fast_tail
            if inner is not None and len(inner) > allow and not budget.whole:
                inner = self._scalars_overflow(value, getitem, n, head, tail, budget, allow)
        if inner is None or len(inner) > allow:
            budget.active.add(id(value))
            cuts = budget.cuts
            whole = budget.whole
            try:
                parts = []
                if inner is None:  # item by item; each leaves the room (budget.chars) less its length
                    budget.chars = allow
                    if n > 1:
                        budget.whole = True  # a cut item is of no use: _overflow then
                    render = self._render
                    d1 = depth + 1
                    for i in range(head):
                        if budget.chars <= 0:
                            break
                        parts.append(render(getitem(value, i), d1, budget))
                        budget.chars -= 2
                    else:
                        if tail:
                            parts.append(ELLIPSIS_MARK)
                            budget.chars -= 5
                            for i in range(n - tail, n):
                                if budget.chars <= 0:
                                    break
                                parts.append(render(getitem(value, i), d1, budget))
                                budget.chars -= 2
                            else:
                                inner = ", ".join(parts)
                        else:
                            inner = ", ".join(parts)
                    budget.whole = whole
                shown_head = head
                if inner is None or len(inner) > allow or (budget.cuts != cuts and (n > 1 or whole)):
                    inner, allow, shown_head, tail_from = self._refit(
                        n, head, tail, lambda: (map(getitem, repeat(value), range(n)),
                                                map(getitem, repeat(value), range(n - 1, -1, -1))),
                        False, depth, budget, allow, whole, parts)
                elif tail:
                    tail_from = n - tail
            finally:
                budget.active.discard(id(value))
                budget.whole = whole
            if head + tail < n and shown_head < tail_from:  # the items budget left out the middle
                budget.left_out(getitem(value, slice(shown_head, min(tail_from, shown_head + _SCAN_LEFT_OUT + 1))))
        budget.chars = allow - len(inner)
        return prefix + open_ + inner + close + suffix

    def _refit(self, n, head, tail, ends, pairs, depth, budget, allow, whole, parts) -> tuple:
        """``(text, allow, shown_head, tail_from)`` when not every item was whole in the room:
        whole items from both ends (``_overflow``; ``ends()`` gives its two iterators), or, where
        only a whole rendering is of use, nothing (``_give_up``: no room left)."""
        if whole:
            text, shown_head, tail_from = self._give_up(budget)
            return text, len(text), shown_head, tail_from
        front, back = ends()
        text, shown_head, tail_from = self._overflow(
            n, head, tail, front, back, pairs, depth, budget, allow, _whole_head(parts, head))
        return text, allow, shown_head, tail_from

    def _overflow(self, n, head, tail, front, back, pairs, depth, budget, allow, done=()):
        """``(text, shown_head, tail_from)``: the items of an ``n``-item container joined with
        ", " in ``allow`` characters, when the items budget's plan (``head`` items, then the
        last ``tail``) does not fit. Whole items from the front in two thirds of the room, then
        from the back in the rest, "..." for the items ``shown_head`` to ``tail_from`` left out;
        only the first item of each end is cut to fit when it cannot fit whole (a string or a
        container showing its own head and tail). ``front``/``back``: iterators over the items
        from the first / from the last (dict items when ``pairs``); ``done``: the whole texts of
        the first items, from the item-by-item pass that found the plan does not fit."""
        budget.cuts += 1
        if head + tail == n:
            tail = n  # the plan shows every item: the tail may reach back to the head's end
        room_all = allow - len(ELLIPSIS_MARK) - 2  # the "..." and one separator
        render = self._pair if pairs else self._render
        d1 = depth + 1
        ends: tuple = ([], [])
        used = 0
        for end, items, count, limit in ((0, front, head, room_all - room_all // 3), (1, back, tail, room_all)):
            parts = ends[end]
            for i, item in enumerate(islice(items, min(count, n - len(ends[0])))):
                room = limit - used
                if room <= 0:
                    break
                if not end and i < len(done) and (i or len(done[0]) <= room):
                    text = done[i]  # whole: rendered in the room it fits, it is this text again
                    if len(text) > room:
                        break
                    parts.append(text)
                    used += len(text) + 2
                    continue
                cuts = budget.cuts
                budget.chars = room
                # Whole if nothing in it was cut for want of room; only the first item of an end
                # is shown cut (a string or container showing its own head and tail).
                budget.whole = bool(parts)
                text = render(item, d1, budget)
                if len(text) > room or (parts and budget.cuts != cuts):
                    break
                parts.append(text)
                used += len(text) + 2
        budget.whole = False
        head_parts, tail_parts = ends
        tail_parts.reverse()
        shown_head, tail_from = len(head_parts), n - len(tail_parts)
        if shown_head < tail_from:
            head_parts.append(ELLIPSIS_MARK)
        return ", ".join(head_parts + tail_parts), shown_head, tail_from

    @staticmethod
    def _give_up(budget: _Budget) -> tuple:
        """``_overflow``'s result where only a whole rendering is of use (``budget.whole``): a
        cut, a text of no use (the caller leaves the item out; the container leaves no room, so
        the caller's item loop stops there: the items before are whole)."""
        budget.cuts += 1
        return ELLIPSIS_MARK, 0, 0

    def _scalars_overflow(self, value, getitem, n, head, tail, budget, allow):
        """``_overflow``'s text for a sequence whose shown items are all small exact scalars
        (``_fast_items``), from their reprs at C speed; None when the first item at an end is a
        string it would have to cut (then ``_overflow`` does)."""
        budget.cuts += 1
        if head + tail == n:
            front = back = list(map(repr, getitem(value, slice(0, n))))
            tail = n
        else:
            front = list(map(repr, getitem(value, slice(0, head))))
            back = list(map(repr, getitem(value, slice(n - tail, n))))
        room_all = allow - len(ELLIPSIS_MARK) - 2
        limit = room_all - room_all // 3
        used = 0
        head_parts = []
        for text in front:
            if len(text) > limit - used:
                break
            head_parts.append(text)
            used += len(text) + 2
        if not head_parts and type(getitem(value, 0)) is str:
            return None
        tail_parts = []
        for text in islice(reversed(back), min(tail, n - len(head_parts))):
            if len(text) > room_all - used:
                break
            tail_parts.append(text)
            used += len(text) + 2
        if not tail_parts and len(head_parts) < n and type(getitem(value, n - 1)) is str:
            return None
        tail_parts.reverse()
        if len(head_parts) + len(tail_parts) < n:
            head_parts.append(ELLIPSIS_MARK)
        return ", ".join(head_parts + tail_parts)

    def _labelled(self, name: str, pairs: list, more: bool, depth: int, budget: _Budget) -> str:
        """``name(label=value, ...)`` in the room ``budget.chars``: the (label, value) ``pairs``
        in order while whole ones fit, then "..." (also when ``more`` were left out before)."""
        allow = budget.chars - len(name) - 2
        budget.chars = allow
        cuts = budget.cuts
        parts = []
        render = self._render
        d1 = depth + 1
        for label, value in pairs:
            if budget.chars <= 0:
                break
            budget.chars -= len(label) + 1
            parts.append(label + "=" + render(value, d1, budget))
            budget.chars -= 2
        else:
            inner = ", ".join(parts)
            if not more and len(inner) <= allow and (budget.cuts == cuts or not budget.whole):
                budget.chars = allow - len(inner)
                return name + "(" + inner + ")"
        # Whole pairs in the room left beside the "...".
        budget.cuts += 1
        if budget.whole:  # of no use cut: no room left, the caller stops (see _give_up)
            budget.chars = 0
            return name + "(" + ELLIPSIS_MARK + ")"
        room_all = allow - len(ELLIPSIS_MARK) - 2
        parts = []
        used = 0
        for label, value in pairs:
            room = room_all - used - len(label) - 1
            if room <= 0:
                break
            budget.chars = room
            text = label + "=" + render(value, d1, budget)
            if used + len(text) > room_all:
                break
            parts.append(text)
            used += len(text) + 2
        parts.append(ELLIPSIS_MARK)
        inner = ", ".join(parts)
        budget.chars = allow - len(inner)
        return name + "(" + inner + ")"

    @staticmethod
    def _fast_items(items):
        """``", ".join(map(repr, items))`` when every item is a small exact scalar, else None.

        The common case (lists of ints, floats, short strings) at C speed; exactly what the
        item-by-item path produces when it fits the character budget.
        """
        kinds = type_ids(items)
        if len(kinds) != 1 and kinds != _INT_BOOL_IDS:
            return None
        if kinds <= _INT_BOOL_IDS:
            if not (_FAST_INT_MIN < min(items) and max(items) < _FAST_INT_MAX):
                return None  # huge ints take the _int path (digit estimate)
        elif _STR_ID in kinds:
            if max(map(len, items)) > _FAST_STR_LEN:
                return None
        elif not kinds <= _FAST_KINDS_IDS:
            return None
        try:
            return ", ".join(map(repr, items))
        except ValueError:  # an int beyond the int-to-str digit limit
            return None

    def _pair(self, kv, depth: int, budget: _Budget) -> str:
        """``key: value`` of a dict item, in the room ``budget.chars``."""
        key = self._render(kv[0], depth, budget)
        budget.chars -= 2
        return key + ": " + self._render(kv[1], depth, budget)

    def _frozendict(self, value, depth, budget, name):
        """A frozendict (3.15) as its repr: ``frozendict({'a': 1})``, ``frozendict()``."""
        n = _FROZENDICT.__len__(value)  # type: ignore[union-attr]
        if n == 0:
            return self._spend(budget, name + "()")
        items = _FROZENDICT.items(value)  # type: ignore[union-attr]
        return self._dict(value, depth, budget, "{", "}", prefix=name + "(", suffix=")", items=items, length=n)

    def _dict(self, value, depth, budget, open_, close, prefix="", suffix="", items=None, length=None):
        n = dict.__len__(value) if length is None else length
        if n == 0:
            return prefix + open_ + close + suffix
        guard = self._enter(value, depth, budget, prefix + open_ + ELLIPSIS_MARK + close + suffix)
        if guard is not None:
            return guard
        allow = budget.chars - 2  # room for the items (open_ and close are one character each)
        if prefix or suffix:
            allow -= len(prefix) + len(suffix)
        head, tail = self._items_plan(n)
        budget.active.add(id(value))
        parts = []
        inner = None
        cuts = budget.cuts
        whole = budget.whole
        try:
            budget.chars = allow
            if n > 1:
                budget.whole = True  # a cut item is of no use: _overflow then
            render = self._render
            d1 = depth + 1
            for k, v in islice(_dict_items(value) if items is None else items, head):
                if budget.chars <= 0:
                    break
                parts.append(render(k, d1, budget) + ": " + render(v, d1, budget))
                budget.chars -= 4
            else:
                if tail:
                    parts.append(ELLIPSIS_MARK)
                    budget.chars -= 5
                    last = list(islice(reversed(_dict_items(value) if items is None else items), tail))
                    for k, v in reversed(last):
                        if budget.chars <= 0:
                            break
                        parts.append(render(k, d1, budget) + ": " + render(v, d1, budget))
                        budget.chars -= 4
                    else:
                        inner = ", ".join(parts)
                else:
                    inner = ", ".join(parts)
            budget.whole = whole
            shown_head, tail_from = head, n - tail
            if inner is None or len(inner) > allow or (budget.cuts != cuts and (n > 1 or whole)):
                entries = _dict_items(value) if items is None else items
                inner, allow, shown_head, tail_from = self._refit(
                    n, head, tail, lambda: (iter(entries), reversed(entries)), True, depth, budget, allow, whole, parts)
            if head + tail < n and shown_head < tail_from:  # the items budget left out the middle
                rest = islice(_dict_items(value) if items is None else items, shown_head,
                              min(tail_from, shown_head + _SCAN_LEFT_OUT + 1))
                budget.left_out(x for kv in rest for x in kv)
        finally:
            budget.active.discard(id(value))
            budget.whole = whole
        budget.chars = allow - len(inner)
        return prefix + open_ + inner + close + suffix

    def _set(self, value, depth, budget, open_, close, prefix=""):
        guard = self._enter(value, depth, budget, prefix + open_ + ELLIPSIS_MARK + close)
        if guard is not None:
            return guard
        allow = budget.chars - len(prefix + open_ + close)  # room for the items
        is_set = issubclass(type(value), set)
        n = set.__len__(value) if is_set else frozenset.__len__(value)
        head, tail = self._items_plan(n)
        budget.active.add(id(value))
        parts = []
        inner = None
        cuts = budget.cuts
        whole = budget.whole
        try:
            elems = self._set_order(value, n, is_set, depth)
            budget.chars = allow
            if n > 1:
                budget.whole = True  # a cut item is of no use: _overflow then
            render = self._render
            d1 = depth + 1
            for e in (elems[:head] + [_GAP] + elems[n - tail:]) if tail else elems:
                if budget.chars <= 0:
                    break
                if e is _GAP:
                    parts.append(ELLIPSIS_MARK)
                    budget.chars -= 5
                    continue
                parts.append(render(e, d1, budget))
                budget.chars -= 2
            else:
                inner = ", ".join(parts)
            budget.whole = whole
            shown_head, tail_from = head, n - tail
            if inner is None or len(inner) > allow or (budget.cuts != cuts and (n > 1 or whole)):
                inner, allow, shown_head, tail_from = self._refit(
                    n, head, tail, lambda: (iter(elems), reversed(elems)), False, depth, budget, allow, whole, parts)
            if head + tail < n and shown_head < tail_from:  # the items budget left out the middle
                budget.left_out(set.__iter__(value) if is_set else frozenset.__iter__(value))
        finally:
            budget.active.discard(id(value))
            budget.whole = whole
        budget.chars = allow - len(inner)
        return prefix + open_ + inner + close

    def _set_order(self, value, n, is_set, depth) -> list:
        """A set's elements in a deterministic order: numbers, then strings, then by rendering.

        Iteration order of a set of strings depends on the hash seed, so a set is rendered
        sorted (for small non-negative ints this is also CPython's own order). A set of more
        than ten times ``max_items`` elements is too big to sort cheaply: iteration order.
        """
        elems = list(set.__iter__(value) if is_set else frozenset.__iter__(value))
        if n > 10 * self.max_items:
            return elems
        keyed = []
        for e in elems:
            t = type(e)
            if (t is int or t is bool) or (t is float and e == e):
                keyed.append(((0, e, ""), e))
            elif t is str:
                keyed.append(((1, 0, e), e))
            else:
                # Render with a throwaway budget so the sort key is complete and stable.
                keyed.append(((2, 0, self._render(e, depth + 1, _Budget(self.max_value_chars))), e))
        keyed.sort(key=lambda pair: pair[0])
        return [e for _key, e in keyed]

    # -- non-builtin types: chosen once per type --------------------------------------------

    def _classify(self, t: type):
        """Pick the rendering function for type ``t`` (cached per type). ``t`` is compared by
        identity and ``issubclass`` only (see _IMMUTABLE_IDS)."""
        name = type_name(t)
        if issubclass(t, BaseException):
            return self._make_exception(t)
        enum_mod = sys.modules.get("enum")
        if enum_mod is not None and issubclass(t, enum_mod.Enum):
            return self._make_enum(t)
        if issubclass(t, type):
            return self._holder_kind(lambda v: "<class '%s'>" % type_qualified_name(v))
        if _FROZENDICT is not None and issubclass(t, _FROZENDICT):
            return lambda v, d, b: self._frozendict(v, d, b, name)
        if t is types.FunctionType:
            return self._holder_kind(lambda v: "<function %s>" % _safe_str(v.__qualname__))
        if t is types.BuiltinFunctionType or t is types.BuiltinMethodType:
            return self._render_builtin_function
        if t is types.MethodWrapperType:
            def method_wrapper_kind(v, d, b):
                owner = v.__self__
                self._visit_self(owner, b)
                return self._spend(b, "<method-wrapper %r of %s object>" % (_safe_str(v.__name__), type_name(type(owner))))
            return method_wrapper_kind
        if t is types.MethodType:
            return self._render_method
        if id(t) in _LAZY_ITERATOR_IDS:
            def lazy_iterator_kind(v, d, b):
                self.saw_lazy = True
                _visit_callables(v, b.ids, 0)  # a later ``list(it)`` calls them
                return self._spend(b, "<%s object>" % name)
            return lazy_iterator_kind
        if id(t) in _DICT_VIEW_IDS:
            return self._render_dict_view
        if t is slice:
            return self._render_slice
        if t is memoryview:
            def memoryview_kind(v, d, b):
                try:
                    b.ids.append(id(v.obj))  # a write through it changes what it exposes
                except ValueError:  # released
                    pass
                return self._spend(b, "<memoryview object>")
            return memoryview_kind
        if t is types.ModuleType:
            return self._holder_kind(lambda v: "<module %r>" % _safe_str(v.__name__))
        if t is types.GeneratorType or t is types.CoroutineType or t is types.AsyncGeneratorType:
            kind = "generator" if t is types.GeneratorType else "coroutine" if t is types.CoroutineType else "async_generator"
            return lambda v, d, b: self._spend(b, "<%s object %s>" % (kind, _safe_str(v.__qualname__)))
        special = self._stdlib_kind(t)
        if special is not None:
            return special
        # Exact type checks: ``isinstance`` would ask a class attribute for its ``__class__``.
        if issubclass(t, tuple) and type(class_lookup(t, "_fields")) is tuple:
            return self._make_namedtuple(t)
        fields = class_lookup(t, "__dataclass_fields__")
        if type(fields) is dict:
            return self._make_dataclass(t, fields)  # type: ignore[arg-type]
        # Subclasses of builtins render as their base's value; their instance attributes are
        # not shown, only visited (``x = b.extra`` aliases one: see _visit_hidden).
        hidden = self._visit_hidden
        for base, open_, close in ((list, "[", "]"), (tuple, "(", ")")):
            if issubclass(t, base):
                return lambda v, d, b, open_=open_, close=close, base=base: hidden(v, t, b) or self._seq(
                    v, d, b, open_, close, base, prefix=name + "(", suffix=")")
        if issubclass(t, dict):
            return lambda v, d, b: hidden(v, t, b) or self._dict(v, d, b, "{", "}", prefix=name + "(", suffix=")")
        if issubclass(t, (set, frozenset)):
            return lambda v, d, b: hidden(v, t, b) or self._set(v, d, b, "{", "})", prefix=name + "(")
        for base in (int, float, str, bytes, complex):
            if issubclass(t, base):
                return lambda v, d, b, base=base: hidden(v, t, b) or self._spend(b, "%s(%s)" % (name, base.__repr__(v)))
        return self._make_object(t)

    @staticmethod
    def _visit_hidden(v: object, t: type, b: _Budget, shown: tuple = ()) -> None:
        """Record the ids of the instance state a rendering does not show (a dataclass's other
        attributes, an exception's, an enum member's or a builtin subclass's): a local holding
        one of them aliases it, and is re-read when a line mutates it through the object."""
        _note_hidden(instance_attrs(v, t, b.ids), shown, b.ids)

    def _holder_kind(self, text_of):
        """The renderer of a class, function or module: ``text_of(value)``. A local holding one
        (``K = Registry``) marks its rendering elided: the object's attributes (class attributes,
        a function's defaults and globals, a module's names) are state that other locals may
        alias. Not one inside a container."""
        def holder_kind(v, d, b):
            if d == 0:
                b.elided = True
            return self._spend(b, text_of(v))
        return holder_kind

    def _render_slice(self, v, depth, budget):
        budget.chars -= 11  # "slice(" ", " ", " ")"
        parts = [self._render(part, depth + 1, budget) for part in (v.start, v.stop, v.step)]
        return "slice(%s)" % ", ".join(parts)

    def _render_dict_view(self, v, depth, budget):
        """``dict_keys([...])``, ``dict_values([...])``, ``dict_items([(k, v), ...])``: the view's
        dict read through the view at C level (no ``__iter__`` of a dict subclass runs), only
        the head and tail the items budget shows. The dict is visited: a view shows its changes."""
        name = type_name(type(v))
        for target in _gc_referents(v):  # the view's one referent: its dict
            budget.ids.append(id(target))
        if id(v) in budget.active:  # a dict holding its own values view
            return self._spend(budget, ELLIPSIS_MARK)  # as its repr
        n = len(v)
        head, tail = self._items_plan(n)
        if tail:
            # The items budget shows the head and the tail: the middle stands in one item that
            # the plan of one more item than the budget leaves out (shown as "...").
            items = list(islice(v, head)) + [_GAP] + list(islice(reversed(v), tail))[::-1]
        else:
            items = list(v)
        budget.active.add(id(v))
        try:
            return self._seq(items, depth, budget, "[", "]", list, prefix=name + "(", suffix=")")
        finally:
            budget.active.discard(id(v))

    def _render_array(self, v, depth, budget):
        """``array('i', [1, 2])`` like its repr; a text array ('u', 'w') as its type."""
        code = v.typecode
        if code == "u" or code == "w":
            return self._spend(budget, "<array object>")
        n = len(v)
        if not n:
            return self._spend(budget, "array(%r)" % code)
        head, tail = self._items_plan(n)
        # As a dict view's items (see _render_dict_view): only what the items budget shows.
        items = v[:head].tolist() + [_GAP] + v[n - tail :].tolist() if tail else v.tolist()
        return self._seq(items, depth, budget, "[", "]", list, prefix="array(%r, " % code, suffix=")")

    def _render_path(self, v, depth, budget):
        """``PosixPath('/a/b')`` like its repr, for the exact pathlib classes only: their
        ``as_posix`` is pathlib's own code on the path's strings (it may cache them on the path,
        as pathlib itself does when the program asks); a subclass renders structurally."""
        name = type_name(type(v))
        budget.chars -= len(name) + 2
        return "%s(%s)" % (name, self._str(type(v).as_posix(v), budget))

    def _render_builtin_function(self, v, depth, budget):
        owner = v.__self__
        fname = _safe_str(v.__name__)
        if owner is None or type(owner) is types.ModuleType:
            return self._spend(budget, "<built-in function %s>" % fname)
        self._visit_self(owner, budget)
        return self._spend(budget, "<built-in method %s of %s object>" % (fname, type_name(type(owner))))

    def _render_method(self, v, depth, budget):
        func = v.__func__
        ft = type(func)
        # Only a real function's name: a callable object's ``__qualname__`` lookup could
        # reach its ``__getattr__``.
        if ft is types.FunctionType:
            qual = func.__qualname__
        elif ft is types.BuiltinFunctionType:
            qual = _builtin_qualname(func)
        else:
            qual = None
        self._visit_self(v.__self__, budget)
        return self._spend(budget, "<bound method %s>" % _safe_str(qual))

    @staticmethod
    def _visit_self(owner: object, budget: _Budget) -> None:
        """A bound method shows its ``__self__``: count it as visited, so that calling the
        method (``push = lst.append; push(1)``) makes the recorder re-read ``lst``. Not a
        module or a class (``print``, ``dict.fromkeys``): those are not what a call mutates."""
        ot = type(owner)
        if ot is not types.ModuleType and not issubclass(ot, type):
            budget.ids.append(id(owner))

    def _stdlib_kind(self, t: type):
        """Renderers for a few stdlib types whose repr is trusted or easy to rebuild."""
        mod = _type_module(t)
        if type(mod) is str and mod == "collections":
            if _is_stdlib_class(t, "collections", "deque"):
                def deque_kind(v, d, b):
                    maxlen = v.maxlen
                    return self._seq(list(v), d, b, "[", "]", list, prefix="deque(",
                                     suffix=(")" if maxlen is None else ", maxlen=%d)" % maxlen))
                return deque_kind
            if _is_stdlib_class(t, "collections", "OrderedDict"):
                def od_kind(v, d, b):
                    if not v:
                        return "OrderedDict()"
                    if PYBEHAVIOR.ordereddict_repr_is_dict:  # PYBEHAVIOR: ordereddict_repr_is_dict
                        return self._dict(dict(v), d, b, "{", "}", prefix="OrderedDict(", suffix=")")
                    return self._seq(list(v.items()), d, b, "[", "]", list, prefix="OrderedDict(", suffix=")")
                return od_kind
            if _is_stdlib_class(t, "collections", "Counter"):
                def counter_kind(v, d, b):
                    if not v:
                        return "Counter()"
                    pairs = sorted(_dict_items(v), key=lambda kv: kv[1] if type(kv[1]) is int or type(kv[1]) is float else 0,
                                   reverse=True)
                    # The sorted pairs, not a new dict: that would hash the keys again.
                    return self._dict(v, d, b, "{", "}", prefix="Counter(", suffix=")", items=pairs)
                return counter_kind
            if _is_stdlib_class(t, "collections", "defaultdict"):
                def dd_kind(v, d, b):
                    factory = self._render(v.default_factory, d + 1, b)
                    return self._dict(v, d, b, "{", "}", prefix="defaultdict(%s, " % factory, suffix=")")
                return dd_kind
        if _is_stdlib_class(t, "datetime", "datetime") or _is_stdlib_class(t, "datetime", "time"):
            return self._render_datetime
        if _is_stdlib_class(t, "datetime", "timezone"):
            return self._render_timezone
        if _is_stdlib_class(t, "functools", "partial"):
            return self._render_partial
        if _is_stdlib_class(t, "array", "array"):
            return self._render_array
        if type(mod) is str and mod.startswith("pathlib"):  # pathlib._local on 3.13
            for tname in ("PurePosixPath", "PosixPath", "PureWindowsPath", "WindowsPath"):
                if _is_stdlib_class(t, "pathlib", tname):
                    return self._unless_unfinished(self._render_path, t)
        if _is_stdlib_class(t, "re", "Pattern"):
            return self._render_pattern
        if _is_stdlib_class(t, "re", "Match"):
            return self._render_match
        trusted = (
            ("datetime", ("date", "timedelta")),
            ("decimal", ("Decimal",)),
            ("fractions", ("Fraction",)),
            ("uuid", ("UUID",)),
        )
        for module, names in trusted:
            for tname in names:
                if _is_stdlib_class(t, module, tname):
                    return self._unless_unfinished(lambda v, d, b: self._spend(b, repr(v)), t)
        return None

    def _unless_unfinished(self, kind, t: type):
        """``kind``, or for a value it fails on, the structural rendering. A stdlib type written
        in Python (``Fraction``, ``UUID``, paths) fails on an instance whose constructor has not
        finished, which the recorder sees when the stdlib is in scope (``--include``): that one
        value is shown by its attributes, and the type is not marked failed for good."""
        structural = self._make_object(t)

        def guarded(v, d, b):
            chars = b.chars
            try:
                return kind(v, d, b)
            except Exception:
                b.chars = chars
                return structural(v, d, b)
        return guarded

    # The reprs of these stdlib types would call repr() on what they hold (a tzinfo, a
    # timezone's name, a pattern): trusted only when that is None or of an exact builtin
    # type, else rebuilt around the renderer's own rendering of it.

    def _render_datetime(self, v, depth, budget):
        tz = v.tzinfo
        if tz is None or self._plain_timezone(tz):
            return self._spend(budget, repr(v))
        naive = repr(v.replace(tzinfo=None))  # keeps fold=1; repr puts tzinfo= last
        return self._spend(budget, naive[:-1]) + ", tzinfo=" + self._render(tz, depth + 1, budget) + ")"

    @staticmethod
    def _plain_timezone(tz: object) -> bool:
        return _is_stdlib_class(type(tz), "datetime", "timezone") and type(tz.tzname(None)) is str  # type: ignore[attr-defined]

    def _render_timezone(self, v, depth, budget):
        if self._plain_timezone(v):
            return self._spend(budget, repr(v))
        offset = repr(v.utcoffset(None))
        return self._spend(budget, "datetime.timezone(%s, " % offset) + self._render(v.tzname(None), depth + 1, budget) + ")"

    def _render_partial(self, v, depth, budget):
        # The exact type only (``_stdlib_kind``): its func/args/keywords are the C type's own
        # members. Rendered through the renderer, so the objects it holds count as visited
        # (``push = partial(list.append, lst); push(1)`` makes the recorder re-read ``lst``).
        parts = [self._render(v.func, depth + 1, budget)]
        parts.extend(self._render(a, depth + 1, budget) for a in v.args)
        parts.extend("%s=%s" % (k, self._render(a, depth + 1, budget)) for k, a in v.keywords.items()
                     if type(k) is str)
        return self._spend(budget, "functools.partial(") + ", ".join(parts) + ")"

    def _render_pattern(self, v, depth, budget):
        source = v.pattern
        st = type(source)
        if st is str or st is bytes:
            return self._spend(budget, repr(v))
        flags = v.flags & ~32 if issubclass(st, str) else v.flags  # re.UNICODE, implied for str
        text = "re.compile(" + self._render(source, depth + 1, budget)
        return text + (", %d)" % flags if flags else ")")

    def _render_match(self, v, depth, budget):
        start, end = v.span()
        subject = v.string
        st = type(subject)
        if st is str or st is bytes:
            matched = v.group(0)
        elif issubclass(st, str):
            matched = str.__getitem__(subject, slice(start, end))
        elif issubclass(st, bytes):
            matched = bytes.__getitem__(subject, slice(start, end))
        else:  # a bytearray, an mmap, a buffer: not read again
            return self._spend(budget, "<re.Match object; span=(%d, %d)>" % (start, end))
        return self._spend(budget, "<re.Match object; span=(%d, %d), match=%s>" % (
            start, end, self._render(matched, depth + 1, budget)))

    def _make_exception(self, t: type):
        name = type_name(t)

        def exc_kind(v, d, b):
            self._visit_hidden(v, t, b)
            args = _exc_args(v)
            if type(args) is not tuple:
                args = ()
            if len(args) == 1:
                b.chars -= len(name) + 2
                return name + "(" + self._render(args[0], d + 1, b) + ")"
            return self._seq(args, d, b, "(", ")", tuple, prefix=name)

        return exc_kind

    def _make_enum(self, t: type):
        cls_name = type_name(t)

        def enum_kind(v, d, b):
            self._visit_hidden(v, t, b, ("_name_", "_value_"))
            attrs = _str_keyed(instance_attrs(v, t))
            member = attrs.get("_name_")
            value = attrs.get("_value_")
            return "<%s.%s: %s>" % (cls_name, _safe_str(member), self._render(value, d + 1, b))

        return enum_kind

    def _make_namedtuple(self, t: type):
        cls_name = type_name(t)
        fields = class_lookup(t, "_fields")

        def nt_kind(v, d, b):
            self._visit_hidden(v, t, b)  # a subclass's instance attributes (not shown)
            n = tuple.__len__(v)
            pairs = [(fields[i] if i < len(fields) and type(fields[i]) is str else "_%d" % i,  # type: ignore[index,arg-type]
                      _tuple_getitem(v, i)) for i in range(n)]
            return self._labelled(cls_name, pairs, False, d, b)

        return nt_kind

    def _make_dataclass(self, t: type, fields: dict):
        try:
            cls_name = str(_type_qualname(t))
        except Exception:
            cls_name = type_name(t)
        names = [n for n, f in _dict_items(fields) if type(n) is str and _dc_field_in_repr(f)]
        shown = frozenset(names)

        def dc_kind(v, d, b):
            if id(v) in b.active or d >= self.max_depth:
                b.elided = b.elided or d >= self.max_depth
                return cls_name + "(" + ELLIPSIS_MARK + ")"
            attrs = _str_keyed(instance_attrs(v, t, b.ids))
            _note_hidden(_dict_items(attrs), shown, b.ids)  # not fields, or not in the repr
            b.active.add(id(v))
            try:
                return self._labelled(cls_name, [(n, attrs[n]) for n in names if n in attrs], False, d, b)
            finally:
                b.active.discard(id(v))

        return dc_kind

    def _make_object(self, t: type):
        cls_name = "namespace" if t is types.SimpleNamespace else type_name(t)  # as its repr
        omit = omitted_attrs(t)

        def obj_kind(v, d, b):
            if id(v) in b.active or d >= self.max_depth:
                b.elided = b.elided or d >= self.max_depth
                return cls_name + "(" + ELLIPSIS_MARK + ")"
            attrs = instance_attrs(v, t, b.ids)
            if omit:
                attrs = [(k, val) for k, val in attrs if not (type(k) is str and k in omit)]
            dict_desc = type(class_lookup(t, "__dict__"))
            has_storage = (attrs or dict_desc is _GetSetDescriptor or dict_desc is _MemberDescriptor
                           or class_lookup(t, "__slots__") is not None)
            if not has_storage:
                return self._spend(b, "<%s object>" % cls_name)
            head, _tail = self._items_plan(len(attrs))
            more = head < len(attrs)
            if more:
                b.elided = True  # attributes the items budget leaves out are not visited
            b.active.add(id(v))
            try:
                if not more:  # the common case inline (see _labelled)
                    allow = b.chars - len(cls_name) - 2
                    b.chars = allow
                    cuts = b.cuts
                    parts = []
                    for k, val in attrs:
                        if b.chars <= 0:
                            break
                        label = _safe_str(k)
                        b.chars -= len(label) + 1
                        parts.append(label + "=" + self._render(val, d + 1, b))
                        b.chars -= 2
                    else:
                        inner = ", ".join(parts)
                        if len(inner) <= allow and (b.cuts == cuts or not b.whole):
                            b.chars = allow - len(inner)
                            return cls_name + "(" + inner + ")"
                    b.chars = allow + len(cls_name) + 2
                return self._labelled(cls_name, [(_safe_str(k), val) for k, val in attrs[:head]], more, d, b)
            finally:
                b.active.discard(id(v))

        return obj_kind


def _note_hidden(pairs, shown, ids: list) -> None:
    """Append to ``ids`` the ids of the mutable values among (name, value) ``pairs`` whose name
    is not in ``shown``: state a rendering leaves out but a local may alias."""
    for k, val in pairs:
        # (a key that is not an exact str is never compared: its __eq__ is the program's)
        if (type(k) is not str or k not in shown) and id(type(val)) not in _IMMUTABLE_IDS:
            ids.append(id(val))


def _dc_field_in_repr(field: object) -> bool:
    """Whether a dataclass field is shown: its ``repr`` flag is never asked for its truth
    (a user object's ``__bool__``); only an exact ``False`` (or falsy builtin) hides it."""
    try:
        attrs = _str_keyed(instance_attrs(field, type(field)))
    except Exception:
        return True
    flag = attrs.get("repr", True)
    shown = flag is not False and flag is not None
    return shown and attrs.get("_field_type", None) is not _stdlib_type("dataclasses", "_FIELD_CLASSVAR")


def type_module_is_builtins(cls: type) -> bool:
    try:
        mod = _type_module(cls)  # a class's __module__ may be any object: compare exact str only
    except Exception:
        return False
    return type(mod) is str and mod == "builtins"


def _safe_str(value: object) -> str:
    """A name-like attribute as text, without calling anything on user objects."""
    return value if type(value) is str else "?"


def _builtin_qualname(func) -> str:
    """A builtin's ``__qualname__`` rebuilt from type-level names (its own getter asks the
    owner's class for ``__qualname__``, which a metaclass may turn into a property)."""
    name = _safe_str(func.__name__)
    owner = func.__self__
    if owner is None or type(owner) is types.ModuleType:
        return name
    cls = owner if issubclass(type(owner), type) else type(owner)
    try:
        return "%s.%s" % (_exact_str(_type_qualname(cls)), name)
    except Exception:
        return name


def _exact_str(value: object) -> str:
    """An exact ``str`` copy of a str (subclass) without its own ``__str__``; ``?`` otherwise.

    A class's ``__name__``/``__qualname__`` may be a str subclass (the setters accept one).
    """
    if type(value) is str:
        return value  # type: ignore[return-value]
    if issubclass(type(value), str):
        return str.__str__(value)  # type: ignore[arg-type]
    return "?"


def _str_keyed(pairs: list) -> dict:
    """``dict(pairs)`` keeping only exact-str keys (hashing any other key could run user code)."""
    return {k: v for k, v in pairs if type(k) is str}
