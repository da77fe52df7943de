"""Per-code-object facts computed once: qualified name, source lines, offset -> line."""

from __future__ import annotations

import dis
import linecache

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
    source = "".join(linecache.getlines(filename))
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


def source_line(filename: str, lineno: int) -> str:
    """The text of one source line without its line ending ("" if unknown)."""
    line = linecache.getline(filename, lineno)
    return line.rstrip("\r\n")


_LINE_TABLES: dict = {}


def offset_lines(code) -> dict:
    """Bytecode offset -> line number (None where the instruction has no line); 3.10+."""
    table = _LINE_TABLES.get(code)
    if table is None:
        table = {}
        for start, end, line in code.co_lines():
            for off in range(start, end, 2):
                table[off] = line
        _LINE_TABLES[code] = table
    return table


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
