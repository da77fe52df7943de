"""Per-code-object facts computed once: qualified name, source lines, offset -> line."""

from __future__ import annotations

import dis
import linecache

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .env import PYBEHAVIOR


def qualname(code) -> str:
    """The code object's qualified name (``f``, ``C.m``, ``f.<locals>.g``)."""
    name = getattr(code, "co_qualname", None)  # PYBEHAVIOR: co_qualname (3.11+)
    if name is not None:
        return name
    found = _qualnames_for_file(code.co_filename).get((code.co_name, code.co_firstlineno))
    return found if found is not None else code.co_name


_QUALNAME_CACHE: dict = {}


def _qualnames_for_file(filename: str) -> dict:
    """(co_name, firstlineno) -> qualname for every code object compiled from ``filename``."""
    cached = _QUALNAME_CACHE.get(filename)
    if cached is not None:
        return cached
    out: dict = {}
    _QUALNAME_CACHE[filename] = out
    source = "".join(_source_lines(filename))
    if not source:
        return out
    try:
        module = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return out

    def walk(code, prefix: str) -> None:
        for const in code.co_consts:
            if not hasattr(const, "co_code"):
                continue
            name = const.co_name
            qual = prefix + name
            out.setdefault((name, const.co_firstlineno), qual)
            if _looks_like_class_body(const):
                walk(const, qual + ".")
            else:
                walk(const, qual + ".<locals>.")

    walk(module, "")
    return out


def _looks_like_class_body(code) -> bool:
    """A class body stores ``__qualname__``/``__module__`` and has no arguments."""
    return code.co_argcount == 0 and "__module__" in code.co_names and "__qualname__" in code.co_names


def _source_lines(filename: str) -> list:
    """linecache's lines of a file; a file it already holds is read from its cache here, by the
    tracer's own code (linecache's functions look their builtins up live: a program that replaced
    ``len`` would see the recorder's calls, tracer/_builtins.py)."""
    entry = linecache.cache.get(filename)
    if entry is not None and len(entry) == 4:
        return entry[2]
    return linecache.getlines(filename)


def source_line(filename: str, lineno: int) -> str:
    """The text of one source line without its line ending ("" if unknown)."""
    lines = _source_lines(filename)
    return lines[lineno - 1].rstrip("\r\n") if 0 < lineno <= len(lines) else ""


_LINE_TABLES: dict = {}


def offset_lines(code) -> dict:
    """Bytecode offset -> line number (None where the instruction has no line); 3.10+."""
    # Keyed by id (hashing a code object hashes its bytecode); the entry keeps it alive.
    entry = _LINE_TABLES.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    table = {}
    for start, end, line in code.co_lines():
        for off in range(start, end, 2):
            table[off] = line
    _LINE_TABLES[id(code)] = (code, table)
    return table


_START_OFFSETS: dict = {}
_RESUME = dis.opmap.get("RESUME")
_RETURN_GENERATOR = dis.opmap.get("RETURN_GENERATOR")


def start_offset(code) -> int:
    """Offset of the ``RESUME`` where a frame of ``code`` starts (3.11+): a generator frame whose
    ``f_lasti`` is before it has not started yet. In a generator's code, the first ``RESUME``
    after ``RETURN_GENERATOR`` (3.15's generator expression runs a ``RESUME`` and ``GET_ITER``
    before it, in its creator's call)."""
    entry = _START_OFFSETS.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    co = code.co_code
    after = next((i + 2 for i in range(0, len(co), 2) if co[i] == _RETURN_GENERATOR), 0)
    offset = next((i for i in range(after, len(co), 2) if co[i] == _RESUME), 0)
    _START_OFFSETS[id(code)] = (code, offset)
    return offset


_RETURN_OPS = frozenset(
    dis.opmap[name] for name in ("RETURN_VALUE", "RETURN_CONST", "YIELD_VALUE", "RESUME") if name in dis.opmap
)
_YIELD_FROM = dis.opmap.get("YIELD_FROM")
_CODE_BYTES: dict = {}


def stopped_at_return(code, lasti: int) -> bool:
    """Whether a frame whose ``f_lasti`` is ``lasti`` is leaving by return/yield (not unwinding)."""
    co = _CODE_BYTES.get(code)
    if co is None:
        co = code.co_code
        _CODE_BYTES[code] = co
    if lasti < 0 or lasti >= len(co):
        return False
    if co[lasti] in _RETURN_OPS:
        return True
    if PYBEHAVIOR.has_yield_from_opcode and _YIELD_FROM is not None:  # PYBEHAVIOR: has_yield_from_opcode
        return lasti + 2 < len(co) and co[lasti + 2] == _YIELD_FROM
    return False


class LineEffects:
    """What the instructions of one source line can change, from the bytecode.

    ``writes``: locals stored or deleted; ``loads``: locals read; ``globals``: global or
    module names read; ``mutating``: the line can mutate objects it reaches (a call, a
    subscript/attribute store, an in-place operator, iteration or resumption of other code).
    """

    __slots__ = ("writes", "loads", "globals", "mutating", "inplace", "pure_calls", "calls", "pure_callees",
                 "inert", "simple", "ordered_writes", "ordered_both", "ordered_loads", "subscript", "subscr",
                 "continued", "global_attrs", "class_attrs", "calls_type", "result_attrs", "rebound",
                 "ordered_rebound", "rescan_all", "consumes")

    def __init__(self) -> None:
        self.writes: set = set()
        self.loads: set = set()
        self.globals: set = set()
        self.mutating = False
        # An in-place operator (``x += ...``) may mutate the old value of a stored name.
        self.inplace = False
        # When every call on the line is to one of these builtins (checked at run time to
        # still be the real builtins), the calls cannot mutate the frame's objects.
        self.pure_calls: set = set()
        self.calls = 0
        self.pure_callees = 0
        self.inert = False  # nothing to re-read after this line (set once the table is built)
        # When the line can only store locals (no mutation, no call to check at run time):
        # ``writes`` in the frame's variable order, else None (set once the table is built).
        self.simple: tuple | None = None
        # The same sets as tuples in the frame's variable order (set once the table is
        # built): writes, writes and loads together, and loads.
        self.ordered_writes: tuple = ()
        self.ordered_both: tuple = ()
        self.ordered_loads: tuple = ()
        # Reading ``d[k]`` inserts into a ``collections.defaultdict``: a line that subscripts
        # is checked at run time for a defaultdict among the locals it loads (``subscr``: those
        # locals in variable order; empty when the line does not subscript).
        self.subscript = False
        self.subscr: tuple = ()
        # The line goes on with a value an earlier line left on the stack (``(xs\n.append(1))``,
        # a method chain over several lines): what it mutates is not among the names it reads.
        self.continued = False
        # Globals whose attributes the line reads (``Registry.items.append(x)``): a class,
        # function or module can hold state that locals alias.
        self.global_attrs: set = set()
        # The line reads an attribute of an object's class (``type(obj).items``,
        # ``obj.__class__.items``): class state that locals may alias, which no rendering of
        # the object shows. ``calls_type``: the line calls the builtin ``type``.
        self.class_attrs = False
        self.calls_type = False
        # The line reads an attribute or item of what a call returned (``registry().items``,
        # ``get().append``, ``f()[k]``): an object that locals may alias but no name it reads
        # reaches.
        self.result_attrs = False
        # The line can change locals the bytecode does not show: ``exec``/``eval`` of a string,
        # a write through a frame's ``f_locals``. Every local is re-read after it.
        self.rescan_all = False
        # The line consumes an iterator without a call (``for x in it``, ``a, b = it``,
        # ``x in it``, ``[*it]``): a lazy ``map``/``filter``/``iter(f, s)`` it reads calls
        # what it holds (``m = map(stack.pop, xs)``), so its aliases are re-read (see
        # Recorder.line_delta; only once such an iterator was rendered in the trace).
        self.consumes = False
        # Locals the line reads after storing them (``x = y; x += [1]``, a one-line ``for``
        # loop's variable): their new object may be mutated on the line itself. Not ``x += 1``,
        # which reads before it stores. ``ordered_rebound``: the same in variable order.
        self.rebound: set = set()
        self.ordered_rebound: tuple = ()

    def merge(self, other: LineEffects) -> None:
        self.writes |= other.writes
        self.loads |= other.loads
        self.globals |= other.globals
        self.mutating = self.mutating or other.mutating
        self.inplace = self.inplace or other.inplace
        self.pure_calls |= other.pure_calls
        self.calls += other.calls
        self.pure_callees += other.pure_callees
        self.global_attrs |= other.global_attrs
        self.class_attrs = self.class_attrs or other.class_attrs
        self.result_attrs = self.result_attrs or other.result_attrs
        self.rescan_all = self.rescan_all or other.rescan_all
        self.consumes = self.consumes or other.consumes
        self.subscript = self.subscript or other.subscript

    def absorb(self, other: LineEffects) -> None:
        """Add what ``other``'s line does when it runs as part of this one (no event between)."""
        self.merge(other)
        self.rebound |= other.rebound
        self.continued = self.continued or other.continued


_NAME_WRITE_OPS = frozenset(["STORE_NAME", "DELETE_NAME"])  # a module's or class body's names
_GLOBAL_OPS = frozenset(["LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"])
_ATTR_OPS = frozenset(["LOAD_ATTR", "LOAD_METHOD"])
# BINARY_SUBSCR: also 3.14+'s ``BINARY_OP`` for ``[]`` (NB_SUBSCR), named so by _instruction_lines.
_SUBSCR_OPS = frozenset(["BINARY_SUBSCR", "STORE_SUBSCR", "DELETE_SUBSCR"])
# LOAD_SPECIAL: 3.14+ looks ``__enter__``/``__exit__`` (and the async pair) up with it and calls
# them with CALL; before, BEFORE_WITH / BEFORE_ASYNC_WITH did both.
_WITH_OPS = frozenset([
    "BEFORE_WITH", "BEFORE_ASYNC_WITH", "SETUP_WITH", "SETUP_ASYNC_WITH", "WITH_CLEANUP_START",
    "WITH_EXCEPT_START", "LOAD_SPECIAL",
])
# Iteration without a call: FOR_ITER, unpacking, ``in``, star-unpacking into a display or call,
# ``yield from`` (GET_YIELD_FROM_ITER; 3.15+: GET_ITER with an argument, and GET_ITER is listed
# whatever its argument: the other lines that run it, a ``for`` or comprehension, consume anyway).
_CONSUMING_OPS = frozenset([
    "FOR_ITER", "UNPACK_SEQUENCE", "UNPACK_EX", "CONTAINS_OP", "LIST_EXTEND", "SET_UPDATE",
    "CALL_FUNCTION_EX", "BUILD_LIST_UNPACK", "BUILD_TUPLE_UNPACK", "BUILD_SET_UNPACK",
    "BUILD_TUPLE_UNPACK_WITH_CALL", "GET_YIELD_FROM_ITER", "GET_ITER",
])
# Names whose use lets a line change locals the bytecode does not show (builtins, attributes).
_RESCAN_NAMES = frozenset(["exec", "eval", "f_locals"])
# Instructions that work on a value already on the stack: a line starting with one of them
# continues an expression of an earlier line.
_CONTINUING_OPS = frozenset([
    "LOAD_ATTR", "LOAD_METHOD", "BINARY_SUBSCR", "STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR",
    "DELETE_ATTR", "CALL", "CALL_KW", "CALL_FUNCTION", "CALL_FUNCTION_KW", "CALL_FUNCTION_EX",
    "CALL_METHOD", "PRECALL",
])
# (CACHE entries are never listed.) NOT_TAKEN (3.14+) marks the fall-through of a conditional
# jump for sys.monitoring's BRANCH events; it does nothing.
_TRANSPARENT_OPS = frozenset(["EXTENDED_ARG", "NOP", "RESUME", "NOT_TAKEN"])
# Instructions the interpreter never marks as a line start (sys.monitoring's line table, 3.12+).
_NO_LINE_START_OPS = frozenset(["END_FOR", "END_SEND", "END_ASYNC_FOR", "RESUME", "POP_ITER"])
_HIDING_POP_ITER = PYBEHAVIOR.pop_iter_hides_next_line
# Iteration (FOR_ITER) and suspension (YIELD/SEND/await) are not listed: in-scope code
# they run emits its own events (which forces a full rescan), and a suspended frame is
# rescanned when it resumes.
_MUTATING_OPS = frozenset([
    "STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR", "DELETE_ATTR", "STORE_SLICE", "DELETE_SLICE",
    "BEFORE_WITH", "BEFORE_ASYNC_WITH", "SETUP_WITH", "SETUP_ASYNC_WITH", "WITH_EXCEPT_START",
    "WITH_CLEANUP_START", "LOAD_SPECIAL", "IMPORT_NAME", "IMPORT_STAR", "IMPORT_FROM", "STORE_GLOBAL",
    "DELETE_GLOBAL", "EXEC_STMT",
])
# Builtins that never mutate their arguments (any user code they trigger, like __lt__ or
# __iter__ defined in the program, is in scope and emits events of its own). Builtins that
# consume an iterator or call what they are given are not listed: C-level callables have side
# effects without events (``list(map(out.append, xs))``, ``sum(iter(stack.pop, 0))``), and
# ``print`` writes to its ``file``. Nor the lazy ones that call what they are given (map,
# filter, two-argument iter): the same line can consume them without a call (``a, b =
# map(stack.pop, xs)``, ``[*map(...)]``, ``x in map(...)``, an inlined comprehension).
PURE_BUILTINS = frozenset([
    "abs", "bin", "bool", "chr", "divmod", "enumerate", "float", "hex", "int",
    "isinstance", "issubclass", "len", "oct", "ord", "pow", "range", "repr",
    "reversed", "round", "str", "type", "zip",
])


def _instruction_lines(code) -> list:
    """(line or None, opname, argval, pushes NULL) for every instruction of ``code``.

    The facts ``line_effects`` needs, read straight from the bytecode: ``dis.get_instructions``
    builds an Instruction (positions, argrepr text) per instruction, which in a freshly forked
    batch child costs ~1-2 ms and ~150-200 copy-on-write page faults per program.
    ``argval`` is the name an instruction refers to (a local, cell, global or attribute name;
    a pair for the 3.13 two-local instructions), else None; "pushes NULL" marks 3.11+'s
    ``LOAD_GLOBAL`` of a callee (dis shows it as "NULL + name").
    """
    raw = code.co_code
    lines = _line_of_offsets(code)
    names = code.co_names
    varname = getattr(code, "_varname_from_oparg", None)  # PYBEHAVIOR: localsplus opargs (3.11+)
    if varname is None:
        fast_names = code.co_varnames
        deref_names = code.co_cellvars + code.co_freevars
    out = []
    ext = 0
    for offset in range(0, len(raw), 2):
        op = raw[offset]
        arg = raw[offset + 1] | ext
        if op == _EXTENDED_ARG:
            ext = arg << 8
            out.append((lines[offset], "EXTENDED_ARG", None, False))
            continue
        ext = 0
        if op == _CACHE:
            continue
        name = _OPNAME[op]
        argval = None
        null = False
        kind = _ARG_KINDS.get(name)
        if kind is not None:
            if kind == "fast":
                argval = varname(arg) if varname is not None else fast_names[arg]
            elif kind == "deref":
                argval = varname(arg) if varname is not None else deref_names[arg]
            elif kind == "pair":
                argval = (varname(arg >> 4), varname(arg & 15))
            elif kind == "attr":
                # PYBEHAVIOR: load_attr_has_method_flag
                argval = names[arg >> 1] if PYBEHAVIOR.load_attr_has_method_flag and name == "LOAD_ATTR" else names[arg]
            elif kind == "global" and varname is not None:  # 3.11+: low bit = push NULL
                argval = names[arg >> 1]
                null = bool(arg & 1)
            else:
                argval = names[arg]
        elif name == "BINARY_OP":
            if arg in _NB_INPLACE:
                name = "BINARY_OP_INPLACE"
            elif arg == _NB_SUBSCR:
                name = "BINARY_SUBSCR"  # 3.14+: ``x[k]`` is BINARY_OP's NB_SUBSCR
        elif name == "COMPARE_OP" and not PYBEHAVIOR.has_contains_op and arg in (6, 7):
            name = "CONTAINS_OP"  # PYBEHAVIOR: has_contains_op (3.8: ``in`` is COMPARE_OP 6, 7)
        out.append((lines[offset], name, argval, null))
    return out


def _line_of_offsets(code) -> list:
    """The line of the instruction at each offset (None where there is none), by offset."""
    table: list = [None] * len(code.co_code)
    if PYBEHAVIOR.has_co_lines:  # PYBEHAVIOR: has_co_lines (3.10+)
        # Not "the last line start before it" on 3.10: its compiler leaves an except handler's
        # cleanup (``e = None; del e``) without a line where several exits share it, and that
        # runs after whichever line left the handler, not after the line above it.
        for start, end, line in code.co_lines():
            table[start:end] = [line] * (end - start)
        return table
    # 3.8/3.9: every instruction belongs to the last line start before it.
    starts = _line_starts(code)
    line = None
    for offset in range(0, len(table), 2):
        line = starts.get(offset, line)
        table[offset] = line
    return table



def _line_starts(code) -> dict:
    """Offset -> line of each instruction that starts a new line, as ``dis.findlinestarts`` gives
    them (3.8-3.10), computed here: dis's pure-Python code would look its builtins up live."""
    starts = {}
    last = None
    if PYBEHAVIOR.has_co_lines:  # PYBEHAVIOR: has_co_lines (3.10+)
        for start, _end, line in code.co_lines():
            if line is not None and line != last:
                starts[start] = last = line
        return starts
    # 3.8/3.9: co_lnotab holds (bytecode increment, signed line increment) byte pairs; a line
    # starts where the bytecode moves on after its line number changed.
    table = code.co_lnotab
    size = len(code.co_code)
    offset = 0
    line = code.co_firstlineno
    for i in range(0, len(table), 2):
        step, delta = table[i], table[i + 1]
        if step:
            if line != last:
                starts[offset] = last = line
            offset += step
            if offset >= size:
                return starts
        line += delta - 256 if delta >= 128 else delta
    if line != last and offset < size:
        starts[offset] = line
    return starts

_OPNAME = dis.opname
_EXTENDED_ARG = dis.EXTENDED_ARG
_CACHE = dis.opmap.get("CACHE", -1)
# BINARY_OP's operators (3.11+), by name: the in-place ones (``x += ...``, NB_INPLACE_ADD ..
# NB_INPLACE_XOR) and 3.14+'s subscript (NB_SUBSCR); dis's table where it has one.
_NB_NAMES = [op[0] for op in getattr(dis, "_nb_ops", ())]
_NB_INPLACE = frozenset(
    [i for i, nb in enumerate(_NB_NAMES) if nb.startswith("NB_INPLACE_")] if _NB_NAMES else range(13, 26)
)
_NB_SUBSCR = _NB_NAMES.index("NB_SUBSCR") if "NB_SUBSCR" in _NB_NAMES else None


def _local_accesses(name: str) -> tuple:
    """How an instruction that names locals uses each: "load" or "write", one per LOAD/STORE/DELETE
    in its name (two for 3.13+'s two-local instructions like ``STORE_FAST_LOAD_FAST``)."""
    if name == "LOAD_FAST_AND_CLEAR":
        return ("write",)  # saves and clears an inlined comprehension's variable (3.12+)
    return tuple("load" if word == "LOAD" else "write" for word in name.split("_")
                 if word in ("LOAD", "STORE", "DELETE"))


# The instructions that name locals, cells or free variables, from dis's own tables
# (``haslocal``/``hasfree``), so that a variant a new CPython adds is read like its family
# (3.14's LOAD_FAST_BORROW, LOAD_FAST_BORROW_LOAD_FAST_BORROW); the names listed too cover
# the interpreters whose tables miss them. Name -> accesses, see ``_local_accesses``.
_LOCAL_OPS = {}
for _name in sorted({_OPNAME[op] for op in list(dis.haslocal) + list(dis.hasfree) if op < len(_OPNAME)} | {
        "STORE_FAST", "DELETE_FAST", "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR",
        "STORE_FAST_MAYBE_NULL", "LOAD_FAST_LOAD_FAST", "STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST",
        "STORE_DEREF", "DELETE_DEREF", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF",
        "LOAD_FROM_DICT_OR_DEREF", "MAKE_CELL"}):
    if not _name.startswith("<"):
        _LOCAL_OPS[_name] = _local_accesses(_name)
_ARG_KINDS = {}
for _name, _accesses in _LOCAL_OPS.items():
    if len(_accesses) == 2:
        _ARG_KINDS[_name] = "pair"
    elif "FAST" in _name.split("_"):
        _ARG_KINDS[_name] = "fast"
    else:  # cells and free variables: their own index space before 3.11
        _ARG_KINDS[_name] = "deref"
for _name in ("LOAD_ATTR", "LOAD_METHOD"):
    _ARG_KINDS[_name] = "attr"
for _name in ("STORE_NAME", "DELETE_NAME", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"):
    _ARG_KINDS[_name] = "name"
_ARG_KINDS["LOAD_GLOBAL"] = "global"


_EFFECTS: dict = {}


def line_effects(code) -> dict:
    """Line number -> ``LineEffects`` for ``code``, computed once per code object.

    Instructions without a line number (exception-handler cleanup) run as part of whatever
    line was executing, so their effects are added to every line.
    """
    table = _EFFECTS.get(code)
    if table is not None:
        return table
    table = {}
    unlined = LineEffects()
    prev_line, prev_name, prev_argval = None, None, None
    before_prev = None  # the instruction before the previous one, on this line
    # PYBEHAVIOR: pop_iter_hides_next_line. (line of a loop's POP_ITER, line that runs after it
    # without an event of its own), found as the interpreter marks line starts: ``current`` is
    # the line of the last instruction before, in offset order, that the marking does not skip.
    hidden = []
    current, after_pop_iter = None, None
    for line, name, argval, null in _instruction_lines(code):
        eff = table.get(line) if line is not None else unlined
        if eff is None:
            eff = table[line] = LineEffects()
        if _HIDING_POP_ITER:
            if name in _NO_LINE_START_OPS:
                if name == "POP_ITER":
                    after_pop_iter = line
            else:
                if (after_pop_iter is not None and line is not None and line == current
                        and line != after_pop_iter):
                    hidden.append((after_pop_iter, line))
                after_pop_iter = None
                current = line
        if name in _TRANSPARENT_OPS:
            continue
        if line is not None and line != prev_line and name in _CONTINUING_OPS:
            eff.continued = True
        if name in _WITH_OPS:
            # The context manager's __enter__/__exit__ run on these lines (3.10+: both on the
            # ``with`` line; before, __exit__ on the body's last line) and are called on what
            # is on the stack, not on a name the line reads: out of scope they emit no events.
            eff.continued = True
        elif name in _CONSUMING_OPS:
            eff.consumes = True
        after_call = prev_line == line and prev_name is not None and prev_name.startswith("CALL")
        if name in _ATTR_OPS:
            if prev_name in _GLOBAL_OPS and prev_line == line and isinstance(prev_argval, str):
                eff.global_attrs.add(prev_argval)
            if argval == "__class__" or (eff.calls_type and after_call):
                eff.class_attrs = True
            if after_call:
                eff.result_attrs = True
        elif name in _GLOBAL_OPS and argval == "type":
            eff.calls_type = True
        if argval in _RESCAN_NAMES and (name in _GLOBAL_OPS or name in _ATTR_OPS):
            eff.rescan_all = True
        elif name in _SUBSCR_OPS and before_prev is not None and before_prev.startswith("CALL"):
            eff.result_attrs = True  # ``f()[k]``: the key was loaded in between
        before_prev = prev_name if prev_line == line else None
        prev_line, prev_name, prev_argval = line, name, argval
        accesses = _LOCAL_OPS.get(name)
        if accesses is not None:
            for access, local in zip(accesses, argval if isinstance(argval, tuple) else (argval,)):
                if not isinstance(local, str):
                    continue
                if access == "write":
                    eff.writes.add(local)
                else:
                    if local in eff.writes:  # stored earlier on this line (offset order)
                        eff.rebound.add(local)
                    eff.loads.add(local)
        elif name in _NAME_WRITE_OPS:
            if isinstance(argval, str):
                eff.writes.add(argval)
        elif name in _GLOBAL_OPS:
            if isinstance(argval, str):
                eff.globals.add(argval)
                # 3.11+: "NULL + len" / "len + NULL" marks a global loaded as a callee.
                if argval in PURE_BUILTINS and null:
                    eff.pure_callees += 1
                    eff.pure_calls.add(argval)
        if name.startswith("CALL") and not name.startswith("CALL_INTRINSIC"):
            eff.calls += 1
        elif name.startswith("INPLACE_") or name == "BINARY_OP_INPLACE":
            eff.inplace = True
        elif name in _MUTATING_OPS:
            eff.mutating = True
        elif name == "BINARY_SUBSCR":
            eff.subscript = True
    if (unlined.writes or unlined.loads or unlined.globals or unlined.mutating or unlined.calls or unlined.inplace
            or unlined.subscript or unlined.global_attrs or unlined.class_attrs or unlined.result_attrs
            or unlined.rescan_all or unlined.consumes):
        for eff in table.values():
            eff.merge(unlined)
    for event_line, line in hidden:
        # All of the hidden line, though only its instructions up to its next line start run
        # under the loop line's event: more to re-read, never less.
        table[event_line].absorb(table[line])
    for eff in table.values():
        # Every call needs a callee; if all of them are pure builtins the calls are harmless.
        if eff.calls and eff.calls > eff.pure_callees:
            eff.mutating = True
        if eff.mutating or not eff.calls:
            eff.pure_calls = set()
        eff.inert = not (eff.writes or eff.mutating or eff.inplace or eff.pure_calls)
        order = variable_order(code)

        def in_order(names, order=order):
            return tuple(sorted(names, key=lambda k: (order.get(k, len(order)), k)))

        eff.ordered_writes = in_order(eff.writes)
        eff.ordered_both = in_order(eff.writes | eff.loads)
        eff.ordered_loads = in_order(eff.loads)
        eff.ordered_rebound = in_order(eff.rebound)
        eff.subscr = eff.ordered_loads if eff.subscript else ()
        if not (eff.mutating or eff.pure_calls):
            eff.simple = eff.ordered_writes
    _EFFECTS[code] = table
    return table


_SHADOWED: dict = {}


def shadowed_cells(code) -> frozenset:
    """Cell variables of ``code`` that an inlined comprehension's variable shadows (``k = 1;
    g = lambda: k; r = [k * 2 for k in xs]``): while the comprehension runs, reading one through
    ``f_locals`` crashes the interpreters PYBEHAVIOR.comprehension_shadowed_cell_crash names, and
    a program's line cannot tell the tracer when that is (a comprehension over several lines, an
    exception inside it). Not a variable the comprehension makes a cell again (``[lambda: x for
    x in xs]``: MAKE_CELL inside it). Empty on every other interpreter."""
    if not PYBEHAVIOR.comprehension_shadowed_cell_crash:  # PYBEHAVIOR: comprehension_shadowed_cell_crash
        return frozenset()
    names = _SHADOWED.get(code)
    if names is None:
        cells = set(code.co_cellvars) | set(code.co_freevars)
        cleared: set = set()
        recelled: set = set()
        if cells:
            for _, name, argval, _ in _instruction_lines(code):
                if name == "LOAD_FAST_AND_CLEAR" and argval in cells:
                    cleared.add(argval)
                elif name == "MAKE_CELL" and argval in cleared:
                    recelled.add(argval)
        names = _SHADOWED[code] = frozenset(cleared - recelled)
    return names


_ORDERS: dict = {}


def variable_order(code) -> dict:
    """Name -> position in the frame's locals (varnames, then cells, then free variables)."""
    entry = _ORDERS.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    order: dict = {}
    for name in code.co_varnames + code.co_cellvars + code.co_freevars:
        order.setdefault(name, len(order))
    _ORDERS[id(code)] = (code, order)
    return order
