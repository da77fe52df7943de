"""Check codeinfo's bytecode walker against ``dis`` in one interpreter; print the differences.

``python tracer_bytecode_check.py [CORPUS.jsonl ...]`` compiles the tracer test programs, the
tracer's own modules and every program of the given corpora (``code`` or ``source`` fields),
and compares ``codeinfo._instruction_lines`` with what ``dis.get_instructions`` says about each
instruction of every code object: its line, its name, the name it refers to and whether a
``LOAD_GLOBAL`` pushes NULL. Prints a JSON object: code objects checked and the first
differences. Stdlib only (runs under CPython 3.8-3.13).
"""

from __future__ import annotations

import dis
import glob
import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

from tracer import codeinfo  # noqa: E402


def dis_view(code) -> list:
    out = []
    current = None
    # 3.10: dis shows only line starts, but the interpreter's table (co_lines) also leaves
    # instructions without a line (an except handler's shared cleanup), as 3.11+ dis shows.
    line_of = {}
    if sys.version_info[:2] == (3, 10):
        for start, end, lineno in code.co_lines():
            for offset in range(start, end, 2):
                line_of[offset] = lineno
    for inst in dis.get_instructions(code):
        if hasattr(inst, "line_number"):  # 3.13+
            line = inst.line_number
        elif getattr(inst, "positions", None) is not None:  # 3.11-3.12
            line = inst.positions.lineno
        elif line_of:  # 3.10
            line = line_of.get(inst.offset)
        else:  # 3.8/3.9: the last line start
            if inst.starts_line is not None:
                current = inst.starts_line
            line = current
        name = inst.opname
        if name == "BINARY_OP" and "=" in (inst.argrepr or ""):
            name = "BINARY_OP_INPLACE"
        elif name == "BINARY_OP" and inst.argrepr == "[]":  # 3.14+: NB_SUBSCR
            name = "BINARY_SUBSCR"
        elif name == "COMPARE_OP" and inst.argval in ("in", "not in"):  # 3.8
            name = "CONTAINS_OP"
        kind = codeinfo._ARG_KINDS.get(name)
        argval = inst.argval if kind is not None else None
        null = name == "LOAD_GLOBAL" and "NULL" in (inst.argrepr or "")
        out.append((line, name, argval, null))
    return out


def unrecorded_locals(code) -> list:
    """Locals that an instruction names (dis's ``haslocal``/``hasfree``) but that
    ``codeinfo.line_effects`` records neither as read nor as written on the instruction's line
    (an instruction it does not know names locals: 3.14's LOAD_FAST_BORROW was one)."""
    table = codeinfo.line_effects(code)
    naming = set(dis.haslocal) | set(dis.hasfree)
    out = []
    for (line, _, _, _), inst in zip(dis_view(code), dis.get_instructions(code)):
        if inst.opcode not in naming or inst.opname in ("MAKE_CELL", "COPY_FREE_VARS"):
            continue
        # An instruction without a line counts on every line (line_effects merges it into all).
        eff = table.get(line) if line is not None else next(iter(table.values()), None)
        if eff is None:
            continue
        names = inst.argval if isinstance(inst.argval, tuple) else (inst.argval,)
        out.extend((line, inst.opname, n) for n in names if n not in eff.loads and n not in eff.writes)
    return out


def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from walk(const)


def main() -> None:
    sources = []
    for pattern in ("tests/tracer/programs/*.py", "tracer/*.py", "tracer/backends/*.py"):
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            with open(path) as f:
                sources.append(f.read())
    for corpus in sys.argv[1:]:
        with open(corpus) as f:
            for line in f:
                row = json.loads(line)
                sources.append(row.get("code") or row.get("source") or "")
    checked = 0
    problems = []
    warnings.simplefilter("ignore")  # invalid escape sequences in corpus programs
    for source in sources:
        try:
            module = compile(source, "program.py", "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue
        for code in walk(module):
            checked += 1
            ours, theirs = codeinfo._instruction_lines(code), dis_view(code)
            if ours != theirs and len(problems) < 5:
                first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
                problems.append({"code": code.co_name, "index": first,
                                 "ours": repr(ours[first:first + 1]), "dis": repr(theirs[first:first + 1])})
            missed = unrecorded_locals(code)
            if missed and len(problems) < 5:
                problems.append({"code": code.co_name, "unrecorded_locals": repr(missed[:3])})
    print(json.dumps({"checked": checked, "problems": problems}))


if __name__ == "__main__":
    main()
