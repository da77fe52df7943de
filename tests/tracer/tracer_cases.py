"""Tracer behaviour as data: program source in, expected events out.

Stdlib only: the same cases are checked by pytest on the host interpreter and, through
``tracer_golden_runner.py check``, under every CPython 3.8-3.13 from pyenv with each backend.
Each case gives ``source``, ``entry``, ``input`` and the expected events as tuples
``(kind, lineno, function, depth, locals, arg)``; ``status`` and ``return_value`` too.
"""

from __future__ import annotations

import sys

PY312 = sys.version_info >= (3, 12)
V = sys.version_info[:2]


def _class_body_comprehension_events() -> list:
    """The class body's locals follow its ``f_locals``, which differs by version while an inlined
    comprehension runs in it (docs/tracer.md, "Backends")."""
    k = "f.<locals>.K"
    ns = {"__module__": "'class_body_comprehension'", "__qualname__": "'f.<locals>.K'"}
    if V >= (3, 13):
        ns["__firstlineno__"] = "2"
    events = [
        ("call", 1, "f", 0, {"a": "1"}, None),
        ("line", 2, "f", 0, {}, None),
        ("call", 2, k, 1, {}, None),
        ("line", 2, k, 1, {}, None),
        ("line", 3, k, 1, dict(ns), None),
    ]
    if V < (3, 12):  # the comprehension has a frame of its own
        lc = k + ".<listcomp>"
        events += [
            ("call", 3, lc, 2, {"a": "1"}, None),
            ("line", 3, lc, 2, {}, None),
            ("line", 3, lc, 2, {"_": "'a'"}, None),
            ("line", 3, lc, 2, {"_": "'b'"}, None),
            ("return", 3, lc, 2, {}, "[1, 1]"),
            ("line", 4, k, 1, {"y": "[1, 1]"}, None),
        ]
    elif V == (3, 12):  # its variable joins the namespace dict while it runs
        events += [
            ("line", 3, k, 1, {"_": "'a'"}, None),
            ("line", 3, k, 1, {"_": "'b'"}, None),
            ("line", 4, k, 1, {"y": "[1, 1]", "_": None}, None),
        ]
    else:  # f_locals is a proxy of the body's fast locals instead of the namespace
        fast = {"_": "'a'"}
        if V >= (3, 14):  # also the cell that holds the namespace (the body has a def), and a
            fast["__classdict__"] = (
                "{'__module__': 'class_body_comprehension', '__qualname__': 'f.<locals>.K', '__firstlineno__': 2}"
            )
            fast["a"] = "1"
        events += [
            ("line", 3, k, 1, dict(fast, **dict.fromkeys(ns)), None),
            ("line", 3, k, 1, {"_": "'b'"}, None),
            ("line", 4, k, 1, dict(ns, y="[1, 1]", **dict.fromkeys(fast)), None),
        ]
    return events + [
        ("return", 4, k, 1, {}, "None"),
        ("line", 6, "f", 0, {"K": "<class 'class_body_comprehension.f.<locals>.K'>"}, None),
        ("return", 6, "f", 0, {}, "[1, 1]"),
    ]


CASES = [
    {
        # First on purpose: every later case runs in the same process after a trace that
        # stopped early (the backend switched its events off and must switch them on again).
        "name": "truncated_at_max_events",
        "source": "def f(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total\n",
        "entry": "f",
        "input": "1000",
        "max_events": 6,
        "status": "ok",
        "return_value": "499500",
        "truncated_reason": "max_events",
        "events": [
            ("call", 1, "f", 0, {"n": "1000"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"total": "0"}, None),
            ("line", 4, "f", 0, {"i": "0"}, None),
            ("line", 3, "f", 0, {}, None),
            ("line", 4, "f", 0, {"i": "1"}, None),
        ],
    },
    {
        "name": "assignments_and_return",
        "source": "def f(a, b):\n    c = a + b\n    c = c * 2\n    return c\n",
        "entry": "f",
        "input": "1, 2",
        "status": "ok",
        "return_value": "6",
        "events": [
            ("call", 1, "f", 0, {"a": "1", "b": "2"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"c": "3"}, None),
            ("line", 4, "f", 0, {"c": "6"}, None),
            ("return", 4, "f", 0, {}, "6"),
        ],
    },
    {
        "name": "mutation_is_a_change",
        "source": "def f(xs):\n    ys = xs\n    ys.append(1)\n    del ys\n    return xs\n",
        "entry": "f",
        "input": "[]",
        "status": "ok",
        "return_value": "[1]",
        "events": [
            ("call", 1, "f", 0, {"xs": "[]"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"ys": "[]"}, None),
            ("line", 4, "f", 0, {"xs": "[1]", "ys": "[1]"}, None),
            ("line", 5, "f", 0, {"ys": None}, None),
            ("return", 5, "f", 0, {}, "[1]"),
        ],
    },
    {
        # A table row replaced by an equal copy renders the same, but the copy is what an
        # alias then mutates: the table must be re-read after ``r.append(5)``.
        "name": "table_row_alias",
        "source": "def f():\n    c = [[1, 2], [3, 4]]\n    c[0] = list(c[0])\n    r = c[0]\n    r.append(5)\n    return c\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "[[1, 2, 5], [3, 4]]",
        "events": [
            ("call", 1, "f", 0, {}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"c": "[[1, 2], [3, 4]]"}, None),
            ("line", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {"r": "[1, 2]"}, None),
            ("line", 6, "f", 0, {"c": "[[1, 2, 5], [3, 4]]", "r": "[1, 2, 5]"}, None),
            ("return", 6, "f", 0, {}, "[[1, 2, 5], [3, 4]]"),
        ],
    },
    {
        "name": "nested_calls_depth",
        "source": "def g(x):\n    return x * 2\n\ndef f(n):\n    y = g(n)\n    return g(y)\n",
        "entry": "f",
        "input": "3",
        "status": "ok",
        "return_value": "12",
        "events": [
            ("call", 4, "f", 0, {"n": "3"}, None),
            ("line", 5, "f", 0, {}, None),
            ("call", 1, "g", 1, {"x": "3"}, None),
            ("line", 2, "g", 1, {}, None),
            ("return", 2, "g", 1, {}, "6"),
            ("line", 6, "f", 0, {"y": "6"}, None),
            ("call", 1, "g", 1, {"x": "6"}, None),
            ("line", 2, "g", 1, {}, None),
            ("return", 2, "g", 1, {}, "12"),
            ("return", 6, "f", 0, {}, "12"),
        ],
    },
    {
        "name": "one_line_loop_reports_every_iteration",
        "source": "def f(n):\n    t = 0\n    for i in range(n): t += i\n    return t\n",
        "entry": "f",
        "input": "3",
        "status": "ok",
        "return_value": "3",
        "events": [
            ("call", 1, "f", 0, {"n": "3"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"t": "0"}, None),
            ("line", 3, "f", 0, {"i": "0"}, None),
            ("line", 3, "f", 0, {"i": "1", "t": "1"}, None),
            ("line", 3, "f", 0, {"i": "2", "t": "3"}, None),
            ("line", 4, "f", 0, {}, None),
            ("return", 4, "f", 0, {}, "3"),
        ],
    },
    {
        "name": "exception_escapes",
        "source": "def g():\n    raise ValueError('bad')\n\ndef f():\n    g()\n",
        "entry": "f",
        "input": "",
        "status": "exception",
        "return_value": None,
        "events": [
            ("call", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {}, None),
            ("call", 1, "g", 1, {}, None),
            ("line", 2, "g", 1, {}, None),
            ("exception", 2, "g", 1, {}, "ValueError: bad"),
            ("return", 2, "g", 1, {}, None),
            ("exception", 5, "f", 0, {}, "ValueError: bad"),
            ("return", 5, "f", 0, {}, None),
        ],
    },
    {
        "name": "exception_caught",
        "source": "def f(d):\n    try:\n        v = d['k']\n    except KeyError:\n        v = 0\n    return v\n",
        "entry": "f",
        "input": "{}",
        "status": "ok",
        "return_value": "0",
        "events": [
            ("call", 1, "f", 0, {"d": "{}"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {}, None),
            ("exception", 3, "f", 0, {}, "KeyError: 'k'"),
            ("line", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {}, None),
            ("line", 6, "f", 0, {"v": "0"}, None),
            ("return", 6, "f", 0, {}, "0"),
        ],
    },
    {
        "name": "generator_yield_is_return_resume_is_call",
        "source": "def g(n):\n    for i in range(n):\n        yield i\n\ndef f():\n    return list(g(2))\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "[0, 1]",
        "events": [
            ("call", 5, "f", 0, {}, None),
            ("line", 6, "f", 0, {}, None),
            ("call", 1, "g", 1, {"n": "2"}, None),
            ("line", 2, "g", 1, {}, None),
            ("line", 3, "g", 1, {"i": "0"}, None),
            ("return", 3, "g", 1, {}, "0"),
            ("call", 3, "g", 1, {}, None),
            ("line", 2, "g", 1, {}, None),
            ("line", 3, "g", 1, {"i": "1"}, None),
            ("return", 3, "g", 1, {}, "1"),
            ("call", 3, "g", 1, {}, None),
            ("line", 2, "g", 1, {}, None),
            ("return", 2, "g", 1, {}, "None"),
            ("return", 6, "f", 0, {}, "[0, 1]"),
        ],
    },
    {
        "name": "objects_render_structurally",
        "source": (
            "class P:\n"
            "    def __init__(self, x):\n"
            "        self.x = x\n"
            "    def __repr__(self):\n"
            "        raise RuntimeError('user repr must not run')\n"
            "\n"
            "def f():\n"
            "    p = P.__new__(P)\n"
            "    p.__dict__['x'] = 1\n"
            "    return p\n"
        ),
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "P(x=1)",
        "events": [
            ("call", 7, "f", 0, {}, None),
            ("line", 8, "f", 0, {}, None),
            ("line", 9, "f", 0, {"p": "P()"}, None),
            ("line", 10, "f", 0, {"p": "P(x=1)"}, None),
            ("return", 10, "f", 0, {}, "P(x=1)"),
        ],
    },
    {
        # settrace passes None for both; the frame returned normally after a caught exception.
        "name": "return_none_after_a_caught_exception_is_not_an_unwind",
        "source": "import contextlib\n\ndef f(s):\n    with contextlib.suppress(ValueError): int(s)\n",
        "entry": "f",
        "input": "'x'",
        "status": "ok",
        "return_value": "None",
        "events": [
            ("call", 3, "f", 0, {"s": "'x'"}, None),
            ("line", 4, "f", 0, {}, None),
            ("exception", 4, "f", 0, {}, "ValueError: invalid literal for int() with base 10: 'x'"),
            ("return", 4, "f", 0, {}, "None"),
        ],
    },
    {
        "name": "stop_iteration_ends_a_one_line_loop_then_return_none",
        "source": (
            "class It:\n"
            "    def __iter__(self):\n"
            "        return self\n"
            "    def __next__(self):\n"
            "        raise StopIteration\n"
            "\n"
            "def f():\n"
            "    for x in It(): pass\n"
        ),
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "None",
        "events": [
            ("call", 7, "f", 0, {}, None),
            ("line", 8, "f", 0, {}, None),
            ("call", 2, "It.__iter__", 1, {"self": "It()"}, None),
            ("line", 3, "It.__iter__", 1, {}, None),
            ("return", 3, "It.__iter__", 1, {}, "It()"),
            ("call", 4, "It.__next__", 1, {"self": "It()"}, None),
            ("line", 5, "It.__next__", 1, {}, None),
            ("exception", 5, "It.__next__", 1, {}, "StopIteration: "),
            ("return", 5, "It.__next__", 1, {}, None),
            ("exception", 8, "f", 0, {}, "StopIteration: "),
            ("return", 8, "f", 0, {}, "None"),
        ],
    },
    {
        # No call and no store, yet the line changes ``d``.
        "name": "reading_a_defaultdict_inserts",
        "source": "from collections import defaultdict\n\ndef f():\n    d = defaultdict(int)\n    d['a']\n    x = d['b']\n    return len(d)\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "2",
        "events": [
            ("call", 3, "f", 0, {}, None),
            ("line", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {"d": "defaultdict(<class 'int'>, {})"}, None),
            ("line", 6, "f", 0, {"d": "defaultdict(<class 'int'>, {'a': 0})"}, None),
            ("line", 7, "f", 0, {"d": "defaultdict(<class 'int'>, {'a': 0, 'b': 0})", "x": "0"}, None),
            ("return", 7, "f", 0, {}, "2"),
        ],
    },
    {
        # A builtin that consumes an iterator runs the C-level callables it wraps (no events).
        "name": "builtin_consuming_a_map_of_a_bound_method",
        "source": "def f(xs):\n    out = []\n    list(map(out.append, xs))\n    return out\n",
        "entry": "f",
        "input": "[1, 2]",
        "status": "ok",
        "return_value": "[1, 2]",
        "events": [
            ("call", 1, "f", 0, {"xs": "[1, 2]"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"out": "[]"}, None),
            ("line", 4, "f", 0, {"out": "[1, 2]"}, None),
            ("return", 4, "f", 0, {}, "[1, 2]"),
        ],
    },
    {
        # The method's rendering carries the id of the list it is bound to (an alias).
        "name": "stored_bound_method_mutates_its_list",
        "source": "def f():\n    lst = []\n    push = lst.append\n    push(1)\n    return lst\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "[1]",
        "events": [
            ("call", 1, "f", 0, {}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 3, "f", 0, {"lst": "[]"}, None),
            ("line", 4, "f", 0, {"push": "<built-in method append of list object>"}, None),
            ("line", 5, "f", 0, {"lst": "[1]"}, None),
            ("return", 5, "f", 0, {}, "[1]"),
        ],
    },
    {
        "name": "global_bound_method_mutates_a_local_alias",
        "source": "lst = []\npush = lst.append\n\ndef f():\n    mine = lst\n    push(1)\n    return mine\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "[1]",
        "events": [
            ("call", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {}, None),
            ("line", 6, "f", 0, {"mine": "[]"}, None),
            ("line", 7, "f", 0, {"mine": "[1]"}, None),
            ("return", 7, "f", 0, {}, "[1]"),
        ],
    },
    {
        # A partial renders what it holds, so calling it makes the recorder re-read the list.
        "name": "partial_holding_a_list_mutates_it",
        "source": "import functools\n\ndef f():\n    lst = []\n    push = functools.partial(list.append, lst)\n    push(1)\n    return lst\n",
        "entry": "f",
        "input": "",
        "status": "ok",
        "return_value": "[1]",
        "events": [
            ("call", 3, "f", 0, {}, None),
            ("line", 4, "f", 0, {}, None),
            ("line", 5, "f", 0, {"lst": "[]"}, None),
            ("line", 6, "f", 0, {"push": "functools.partial(<method_descriptor object>, [])"}, None),
            ("line", 7, "f", 0, {"lst": "[1]", "push": "functools.partial(<method_descriptor object>, [1])"}, None),
            ("return", 7, "f", 0, {}, "[1]"),
        ],
    },
    {
        "name": "closure_and_nested_qualname",
        "source": "def f(k):\n    def add(x):\n        return x + k\n    return add(1)\n",
        "entry": "f",
        "input": "2",
        "status": "ok",
        "return_value": "3",
        "events": [
            ("call", 1, "f", 0, {"k": "2"}, None),
            ("line", 2, "f", 0, {}, None),
            ("line", 4, "f", 0, {"add": "<function f.<locals>.add>"}, None),
            ("call", 2, "f.<locals>.add", 1, {"x": "1", "k": "2"}, None),
            ("line", 3, "f.<locals>.add", 1, {}, None),
            ("return", 3, "f.<locals>.add", 1, {}, "3"),
            ("return", 4, "f", 0, {}, "3"),
        ],
    },
    {
        # A class body re-reads its f_locals at every event: the monitoring backend once kept a
        # 3.13+ class body's first f_locals (its namespace dict) as if it were a function's proxy.
        "name": "class_body_comprehension",
        "source": "def f(a):\n    class K:\n        y = [a for _ in 'ab']\n        def m(self):\n"
                  "            return 0\n    return K.y\n",
        "entry": "f",
        "input": "1",
        "status": "ok",
        "return_value": "[1, 1]",
        "events": _class_body_comprehension_events(),
    },
]


def event_tuples(trace: dict) -> list:
    """The comparable part of each event."""
    return [
        (e["kind"], e["lineno"], e["function"], e["depth"], e["locals"], e["arg"])
        for e in trace["events"]
    ]


def check_case(case: dict, trace: dict) -> list:
    """Differences between a case's expectations and a trace (empty when it matches)."""
    problems = []
    if trace["status"] != case["status"]:
        problems.append(f"status {trace['status']!r} != {case['status']!r} ({trace['tracer_error']})")
    if trace["return_value"] != case["return_value"]:
        problems.append(f"return_value {trace['return_value']!r} != {case['return_value']!r}")
    if trace["truncated_reason"] != case.get("truncated_reason"):
        problems.append(f"truncated_reason {trace['truncated_reason']!r} != {case.get('truncated_reason')!r}")
    got = event_tuples(trace)
    want = [tuple(e) for e in case["events"]]
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                problems.append(f"event {i}: got {g!r}, want {w!r}")
                break
        else:
            problems.append(f"got {len(got)} events, want {len(want)}")
    return problems
