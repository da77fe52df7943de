"""The per-line analysis (re-read only what the previous line can have changed) never misses a
change: programs written to slip past it give exactly the events of full rescans, under each
backend of every CPython 3.8-3.13 that pyenv lists.

Each program mutates an object through a path the names on the line do not show: an alias of
a class or function attribute, a class body's names, a lazy builtin consumed on the same line,
a name bound and mutated on one line, a method call split over lines, a ``map`` stored and
consumed later, an instance's ``__dict__``, a memoryview, an attribute or item of what a call out
of scope returned, a multi-line comprehension's store that 3.14+ runs without a line event. (And one that crashed CPython 3.13.0-3.13.2 when its locals were read: an
inlined comprehension whose variable shadows a cell.) The module also runs as a script (stdlib only).
"""

from __future__ import annotations

import json
import os
import sys

from tracer import recorder
from tracer.api import trace_call

PROGRAMS = {
    "views_of_a_dict_mutated_through_it_or_an_alias": """\
def f():
    d = {'a': 1}
    k = d.keys()
    d['b'] = 2
    n = 0
    e = d
    e['c'] = [3]
    n = 1
    e['c'].append(4)
    n = 2
    items = e.items()
    del d['a']
    n = 3
    d.clear()
    return list(k), list(items)
""",
    "class_and_function_attributes": """\
class Reg:
    items = []

def helper():
    pass
helper.cache = {}

def f():
    loc = Reg.items
    c = helper.cache
    Reg.items.append(1)
    helper.cache['k'] = 1
    n = 0
    K = Reg
    K.items.append(4)
    n = 1
    h = helper
    h.cache['k'] = 3
    n = 2
    return loc, c
""",
    "class_attributes_through_an_object": """\
class Reg:
    items = []
    marks = {}

def f():
    r = Reg()
    loc = Reg.items
    seen = Reg.marks
    type(r).items.append(1)
    n = 0
    r.__class__.marks['k'] = 2
    n = 1
    return loc, seen
""",
    "class_body": """\
def f():
    class C:
        x = []
        y = x
        y.append(1)
        z = 0
    return C.x
""",
    "lazy_builtins_consumed_on_the_line": """\
def f():
    stack = [1, 2, 3, 4, 5, 6, 7]
    a, b = map(stack.pop, [0, 0])
    n = 0
    x = [*map(stack.pop, [0])]
    n = 1
    y = 9 in map(stack.pop, [0, 0])
    n = 2
    out = []
    r = [v for v in map(out.append, [1, 2])]
    n = 3
    kept = list(filter(None, iter(stack.pop, 6)))
    return stack, out, kept
""",
    "bound_and_mutated_on_one_line": """\
def f():
    rows = [[1], [2], [3]]
    for r in rows: r += [0]
    n = 0
    y = [1]
    x = y; x += [2]
    n = 1
    z = [5]
    w = None
    if (w := z) is not None: w += [6]
    n = 2
    grid = [[1], [2]]
    it = iter(grid)
    first = next(it); first.append(5)
    n = 3
    total = 0
    for k in range(3): total += k
    return rows, y, z, grid, total
""",
    "method_call_over_lines": """\
def f():
    b = []
    v = (b
         .append(7))
    n = 0
    q = [3, 1, 2]
    (q
     .sort())
    n = 1
    return b, q
""",
    "lazy_iterators_consumed_later": """\
def f():
    out = []
    m = map(out.append, [1, 2])
    r = list(m)
    n = 0
    stack = [1, 2, 3]
    it = iter(stack.pop, 1)
    z = zip(map(out.append, [3]), [0])
    r = list(it)
    n = 1
    s = sum(1 for _ in z)
    n = 2
    return out, stack
""",
    "what_a_call_returned": """\
import operator
from logging import getLogger

def f():
    hs = getLogger("worldtrace-test").handlers
    getLogger("worldtrace-test").handlers.append(1)
    rows = [[1], [2]]
    loc = rows[0]
    it = iter(rows)
    del rows
    next(it).append(9)
    pair = [[5], [6]]
    first = pair[1]
    keep = (pair,)
    del pair
    operator.itemgetter(0)(keep)[1].append(7)
    getLogger("worldtrace-test").handlers.clear()
    return hs, loc, first
""",
    "hidden_instance_state": """\
import enum
import types
from dataclasses import dataclass, field
from typing import NamedTuple

class P(NamedTuple):
    x: int

class Q(P):
    pass

@dataclass
class S:
    name: str
    tags: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        self.cache = []

class Bag(list):
    pass

class Color(enum.Enum):
    RED = 1

def f():
    s = S('a')
    c = s.cache
    t = s.tags
    s.cache.append(1)
    n = 0
    s.tags.append(2)
    n = 1
    e = ValueError('x')
    e.payload = []
    p = e.payload
    e.payload.append(3)
    n = 2
    b = Bag()
    b.extra = {}
    x = b.extra
    b.extra['k'] = 4
    n = 3
    Color.RED.seen = []
    seen = Color.RED.seen
    red = Color.RED
    red.seen.append(5)
    n = 4
    Color.RED.seen = []
    ns = types.SimpleNamespace(a=[1])
    a = ns.a
    ns.a.append(2)
    n = 5
    q = Q(1)
    q.extra = [1]
    qe = q.extra
    q.extra.append(2)
    n = 6
    return c, t, p, x, seen, a, qe, ns
""",
    "a_context_manager_out_of_scope": """\
import contextlib

def f():
    log = []
    with contextlib.ExitStack() as st:
        st.callback(log.append, 1)
        n = 0
    n = 1
    return log
""",
    "exec_and_frame_locals": """\
import os
import sys

def f():
    lst = []
    exec("lst.append(1)")
    n = 0
    x = 1
    fr = sys._getframe()
    fr.f_locals['x'] = 2
    n = 1
    return lst, x
""",
    "lazy_iterators_consumed_without_a_call": """\
def f():
    stack = [1, 2, 3, 4, 5, 6, 7, 8]
    keep = stack
    m = map(stack.pop, [0, 0])
    a, b = m
    n = 0
    m = map(stack.pop, [0, 0])
    found = 7 in m
    n = 1
    it = iter(stack.pop, 5)
    out = []
    for x in it:
        out.append(x)
    return keep, out
""",
    # 3.14+: a loop's exit (END_FOR, POP_ITER) runs the comprehension's store, back on its first
    # line, without a line event of its own: under the ``for`` line's event.
    "multi_line_comprehensions_stored_on_their_first_line": """\
def f():
    xs = [1, 2]
    out = []
    t = [x + 1
         for x in xs]
    n = 0
    out.extend([x * 2
                for x in xs])
    n = 1
    d = {x: [x]
         for x in xs}
    n = 2
    return t, out, d
""",
    "comprehension_shadowing_a_cell": """\
def f():
    k = 1
    def g(x):
        return k + x
    r = [k * 2 for k in range(3)]
    s = [g(k) for k in r]
    t = [k + 1
         for k in r]
    try:
        u = [1 // (k - 2) for k in r]
    except ZeroDivisionError:
        u = None
    fs = [lambda: x for x in range(3)]
    return r, s, t, u, k, g(0), [h() for h in fs]
""",
    "instance_dict_and_memoryview": """\
class O:
    pass

def f():
    o = O()
    o.x = 1
    dct = o.__dict__
    dct['y'] = 2
    n = 0
    o.z = 3
    n = 1
    ba = bytearray(b'abc')
    mv = memoryview(ba)
    mv[0] = 65
    n = 2
    return o, ba
""",
}

if sys.version_info >= (3, 10):  # 3.8/3.9 leave it to the next full rescan (docs/tracer.md)
    # The implicit ``del e`` ending an except handler whose last line did not run, inside a
    # try/finally: 3.10 gives that cleanup no line (found by the fuzzer's locals check).
    PROGRAMS["except_handler_left_by_an_untaken_branch"] = """\
def f():
    log = []
    b = 1
    try:
        try:
            raise ValueError('x')
        except Exception as e:
            log.append(1)
            if b == 2:
                log.append(2)
    finally:
        x = 1
    return x
"""


def backends() -> list:
    return ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def problems(backend: str) -> list:
    """Where the analysed trace differs from the full-rescan trace, per program."""
    found = []
    for name, source in sorted(PROGRAMS.items()):
        traces = []
        for full in (False, True):
            recorder.FULL_SCAN = full
            try:
                t = trace_call(name + ".py", "f", "", source=source, backend=backend)
            finally:
                recorder.FULL_SCAN = False
            if t["status"] != "ok":
                found.append({"program": name, "backend": backend, "status": t["status"],
                              "error": t.get("tracer_error") or t.get("exception_message")})
            traces.append(t["events"])
        for i, (a, b) in enumerate(zip(*traces)):
            if a != b:
                found.append({"program": name, "backend": backend, "event": i, "line": a["lineno"],
                              "analysed": a["locals"], "full_scan": b["locals"]})
                break
        else:
            if len(traces[0]) != len(traces[1]):
                found.append({"program": name, "backend": backend, "lengths": [len(t) for t in traces]})
    return found


def test_the_analysis_sees_what_full_rescans_see() -> None:
    for backend in backends():
        assert problems(backend) == [], json.dumps(problems(backend), indent=1)


if "pytest" in sys.modules:  # as a script, the module prints its problems (stdlib only)
    from tracer_testutil import no_problems_under_every_python

    test_under_every_python = no_problems_under_every_python(__file__)


if __name__ == "__main__":
    sys.stdout.write(json.dumps([p for b in backends() for p in problems(b)]) + "\n")


def test_an_interpreter_newer_than_the_analysis_was_checked_on_gets_the_full_scan() -> None:
    """The analysis reads opcodes by name, and each CPython release renames some (3.14 replaced
    BINARY_SUBSCR by BINARY_OP): on a newer interpreter than it was checked on, every local is
    re-read at every line (the full scan, which the tests above hold equal to the analysis),
    unless WORLDTRACE_FULL_SCAN says otherwise."""
    assert recorder.NEWEST_ANALYSED >= (3, 13)
    newer = (recorder.NEWEST_ANALYSED[0], recorder.NEWEST_ANALYSED[1] + 1, 0)
    assert recorder.full_scan_default(newer, None) is True
    assert recorder.full_scan_default(newer, "0") is False
    assert recorder.full_scan_default(recorder.NEWEST_ANALYSED + (9,), None) is False
    assert recorder.full_scan_default((3, 8, 18), "1") is True
    assert recorder.FULL_SCAN is recorder.full_scan_default(sys.version_info, os.environ.get("WORLDTRACE_FULL_SCAN"))
