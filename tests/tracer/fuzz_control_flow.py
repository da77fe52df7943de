"""Differential fuzz of the tracer's events on random control-flow-heavy programs (not collected).

Generates seeded random programs (nested try/except/else/finally, ``with`` managers that suppress
or not, generators driven by for/next/send/throw/close/yield from, async functions and async
generators under ``asyncio.run`` or a manual ``send(None)`` loop, closures, decorators, recursion,
comprehensions, ``match`` (3.10+), ``except*`` (3.11+), class bodies, ...), traces each program's
``f()`` with ``tracer.api.trace_call`` and compares, per program:

1. the ``monitoring`` and ``settrace`` backends' events (every field but ``source``; 3.12+);
2. each backend against an independent oracle: a raw ``sys.settrace`` logger (every version)
   and, on 3.12+, a raw ``sys.monitoring`` logger, recording (kind, function, line, depth,
   frame id, whether a return unwinds, exception type) for the program's own code, mapped to the
   tracer's four kinds as docs/tracer.md says;
3. the traced result (status, return value, exception, stdout) against the untraced run;
4. the ``locals`` deltas: both oracles also snapshot the frame's locals at each ``call`` and
   ``line`` event (the values whose type is exactly int, str, bool, None or float, or a
   tuple/list/dict of those, as ``repr()``; other values are not compared). The tracer's deltas
   are folded per activation (``call`` and ``line`` carry what is new or changed, a deleted
   variable is null) and, at each event up to the first difference found by check 2, every
   snapshotted variable must have the oracle's text (where the tracer's text is not cut: it has
   no ``...``), and the fold must hold no variable the frame no longer has (on 3.8/3.9 but an
   ``except ... as`` name: a documented residual). ``--no-locals`` skips this check.

Usage (the interpreter under test runs the programs; the tracer is imported from this checkout)::

    PYTHONPATH=. /root/.pyenv/versions/3.12.1/bin/python tests/tracer/fuzz_control_flow.py \\
        --seeds 0:500 [--show SEED] [--backends monitoring,settrace] [--no-locals] [--data-flow]

Prints one line per program that differs (seed, check, first difference) and a summary.
"""

# The generated program text is built with %-formatting (it reads like the code it writes).
# ruff: noqa: UP031

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import io
import json
import random
import re
import sys
import time
import traceback
import warnings

FILE = "fuzzprog.py"
V = sys.version_info[:2]
# The oracles read each frame's f_locals at call and line events, as the recorder does: on
# 3.8-3.12 that keeps a value a local held alive until the next event ("Object lifetimes" in the
# residual list). Not at exception and return events, where the recorder does not read them
# either: on 3.12 settrace writes f_locals back into the frame after a callback that read them,
# and after an exception inside an inlined comprehension of a class body that assigns None to
# the comprehension's variable (the value the next line event then shows).
READ_LOCALS = True
# The oracles snapshot the locals of exact builtin types at call and line events (check 4).
SNAP_LOCALS = True

# ---------------------------------------------------------------------------------------------
# program generator


class Gen:
    """Builds one random program; ``seed`` and the interpreter's features make it reproducible."""

    EXCS = ("ValueError", "KeyError", "TypeError", "ZeroDivisionError", "RuntimeError")

    def __init__(self, seed: int, version=V, data_flow: bool = False) -> None:
        self.r = random.Random(seed)
        self.version = version
        self.data_flow = data_flow  # also statements that alias and mutate locals (s_data)
        self.helpers: list = []  # module-level definitions (lists of lines)
        self.n = 0
        self.gens: list = []  # names of generator helpers
        self.agens: list = []  # async generator helpers
        self.coros: list = []  # async def helpers
        self.funcs: list = []  # plain helpers taking one int

    def name(self, prefix: str) -> str:
        self.n += 1
        return "%s%d" % (prefix, self.n)

    def cond(self) -> str:
        r = self.r
        v = r.choice(("a", "b", "a + b", "len(log)"))
        return "%s %s %d" % (v, r.choice(("<", ">", "==", "!=", ">=")), r.randint(-1, 4))

    def exc(self) -> str:
        r = self.r
        e = r.choice(self.EXCS)
        return "{}({!r})".format(e, "m%d" % r.randint(0, 9))

    # statements: each returns a list of lines (without the base indentation)
    def block(self, depth: int, ctx: dict, n: int | None = None) -> list:
        r = self.r
        out = []
        for _ in range(n if n is not None else r.randint(1, 3)):
            out.extend(self.stmt(depth, ctx))
        return out or ["pass"]

    def ind(self, lines: list) -> list:
        return ["    " + ln for ln in lines]

    def stmt(self, depth: int, ctx: dict) -> list:
        r = self.r
        simple = [self.s_assign, self.s_assign, self.s_log, self.s_call, self.s_raise_if, self.s_lambda,
                  self.s_comp, self.s_assert, self.s_del]
        if self.data_flow:
            simple += [self.s_data, self.s_data]
        if ctx.get("loop"):
            simple += [self.s_break, self.s_continue]
        if ctx.get("func"):
            simple += [self.s_return_if]
        if ctx.get("gen"):
            simple += [self.s_yield, self.s_yield]
        if ctx.get("async"):
            simple += [self.s_await, self.s_await]
        compound = [self.s_if, self.s_for, self.s_while, self.s_try, self.s_try, self.s_with,
                    self.s_gen_use, self.s_closure, self.s_class]
        if not ctx.get("gen") and not ctx.get("async"):
            compound += [self.s_async_use]
        if self.version >= (3, 10):
            compound.append(self.s_match)
        if self.version >= (3, 11):
            compound.append(self.s_except_star)
        if depth <= 0 or r.random() < 0.45:
            return r.choice(simple)(ctx)
        return r.choice(compound)(depth - 1, ctx)

    def s_assign(self, ctx):
        r = self.r
        t = r.choice(("a", "b"))
        return ["%s = %s %s %d" % (t, r.choice(("a", "b")), r.choice(("+", "-", "*")), r.randint(0, 3))]

    def s_log(self, ctx):
        return ["log.append({})".format(self.r.choice(("a", "b", "'x'", "(a, b)")))]

    def s_call(self, ctx):
        r = self.r
        if not self.funcs or r.random() < 0.3:
            self.funcs.append(self.make_func())
        fn = r.choice(self.funcs)
        line = "{} = {}({})".format(r.choice(("a", "b")), fn, r.choice(("a", "b", "2")))
        if r.random() < 0.5:
            return ["try:", "    " + line, "except {} as e:".format(r.choice(("Exception", "ValueError", "KeyError"))),
                    "    log.append(type(e).__name__)"]
        return [line]

    def s_raise_if(self, ctx):
        return [f"if {self.cond()}:", f"    raise {self.exc()}"]

    def s_return_if(self, ctx):
        val = "" if ctx.get("async_gen") else self.r.choice(("a", "b", "(a, b)", "log[-1:]"))
        return [f"if {self.cond()}:", (f"    return {val}").rstrip()]

    def s_break(self, ctx):
        return [f"if {self.cond()}:", "    break"]

    def s_continue(self, ctx):
        return [f"if {self.cond()}:", "    continue"]

    def s_yield(self, ctx):
        r = self.r
        if ctx.get("async_gen"):
            return ["b = yield a"] if r.random() < 0.5 else ["yield b"]
        if r.random() < 0.25 and self.gens:
            return [f"a = yield from {r.choice(self.gens)}(b)"]
        return [r.choice(("b = yield a", "yield b", "sent = yield (a, b)", "log.append((yield a))"))]

    def s_await(self, ctx):
        r = self.r
        if self.agens and r.random() < 0.25:
            ag = r.choice(self.agens)
            return [f"ag = {ag}(b)", "try:", "    log.append(await ag.__anext__())",
                    "    log.append(await ag.asend(%d))" % r.randint(0, 3),
                    f"    log.append(await ag.athrow({self.exc()}))",
                    "except (StopAsyncIteration, Exception) as ae:", "    log.append(type(ae).__name__)",
                    "finally:", "    await ag.aclose()"]
        if self.coros and r.random() < 0.6:
            return [f"a = await {r.choice(self.coros)}(b)"]
        return ["await asyncio.sleep(0)"]

    def s_lambda(self, ctx):
        r = self.r
        return ["b = (lambda q: q %s %d)(a)" % (r.choice(("+", "*", "//")), r.randint(0, 2))]

    def s_comp(self, ctx):
        r = self.r
        return [r.choice((
            "b = sum([i * a for i in range(3)])",
            "b = len({i: i for i in range(a % 3)})",
            "log.extend(x for x in range(2) if x != a)",
            "b = [i for i in range(3) if 1 // (i - a % 3 + 5)][-1]",
            "b = max((j for j in range(2)), default=0)",
        ))]

    def s_assert(self, ctx):
        return ["assert {}, {!r}".format(self.cond(), "a%d" % self.r.randint(0, 9))]

    def s_del(self, ctx):
        return ["tmp = a", "del tmp"]

    def s_data(self, ctx):
        """Aliasing, mutation and rebinding of locals: what the recorder's line analysis must
        follow to keep the ``locals`` deltas right (check 4)."""
        r = self.r
        return r.choice((
            ["c = log", "c.append(%s)" % r.choice(("a", "b", "(a, b)"))],
            ["log += [b]"],
            ["t = (a, log)", "log.append(a)"],
            ["m = [log, [a]]", "m[%d].append(b)" % r.randint(0, 1)],
            ["d = {'k': a, 'l': log}", "d['k'] += 1", "d['l'].append(len(d))"],
            ["p, q = divmod(a + 7, 3)"],
            ["if (w := a + b) > 2:", "    log.append(w)"],
            ["s = 'x' * (a %% 4) + %r" % r.choice(("", "'", '"', "\\n", "\u00e9"))],
            ["z = (a + 0.5) / 4"],
            ["nest = [[a, b], {'n': None}]", "nest[0][1] = nest[1]"],
            ["pushed = map(log.append, [a, b])", "list(pushed)"],
            ["c = log[:]", "c.extend((True, None))", "log = c"],
            ["u, *rest = (a, b, a)", "del rest"],
            ["log.sort(key=repr)" if r.random() < 0.5 else "log.reverse()"],
        ))

    def s_if(self, depth, ctx):
        out = [f"if {self.cond()}:"] + self.ind(self.block(depth, ctx))
        if self.r.random() < 0.4:
            out += [f"elif {self.cond()}:"] + self.ind(self.block(depth, ctx))
        if self.r.random() < 0.5:
            out += ["else:"] + self.ind(self.block(depth, ctx))
        return out

    def s_for(self, depth, ctx):
        r = self.r
        c = dict(ctx, loop=True)
        v = self.name("i")
        out = ["for %s in range(%d):" % (v, r.randint(0, 3))] + self.ind(self.block(depth, c))
        if r.random() < 0.4:
            out += ["else:"] + self.ind(self.block(depth, ctx))
        return out

    def s_while(self, depth, ctx):
        r = self.r
        c = dict(ctx, loop=True)
        v = self.name("n")
        out = ["%s = %d" % (v, r.randint(0, 3)), f"while {v} > 0:", f"    {v} -= 1"]
        out += self.ind(self.block(depth, c))
        if r.random() < 0.4:
            out += ["else:"] + self.ind(self.block(depth, ctx))
        return out

    def s_try(self, depth, ctx):
        r = self.r
        out = ["try:"] + self.ind(self.block(depth, ctx))
        nexc = r.randint(0, 2)
        for _i in range(nexc):
            et = r.choice(self.EXCS + ("Exception", "(ValueError, KeyError)", "ArithmeticError"))
            out.append("except %s as e%d:" % (et, depth))
            body = self.block(depth, ctx, r.randint(0, 2)) if r.random() < 0.8 else []
            k = r.random()
            if k < 0.15:
                body.append("raise")
            elif k < 0.3:
                body.append("raise %s from e%d" % (self.exc(), depth))
            elif k < 0.4:
                body.append(f"raise {self.exc()}")
            elif k < 0.45:
                body.append(f"raise {self.exc()} from None")
            out += self.ind(body or ["log.append(str(e%d))" % depth])
        if nexc and r.random() < 0.3:
            out += ["else:"] + self.ind(self.block(depth, ctx))
        if not nexc or r.random() < 0.5:
            fin = self.block(depth, ctx, r.randint(0, 2))
            k = r.random()
            if ctx.get("loop") and k < 0.15:
                fin.append(r.choice(("break", "continue")))
            elif ctx.get("func") and not ctx.get("gen") and not ctx.get("async_gen") and k < 0.25:
                fin.append("return a")
            out += ["finally:"] + self.ind(fin or ["log.append('fin')"])
        return out

    def s_with(self, depth, ctx):
        r = self.r
        sup = r.choice(("True", "False", "'raise'"))
        if ctx.get("async") and r.random() < 0.5:
            return ["async with ACM(%s, log) as cm%d:" % (sup, depth)] + self.ind(self.block(depth, ctx))
        out = ["with CM(%s, log) as cm%d:" % (sup, depth)] + self.ind(self.block(depth, ctx))
        return out

    def s_closure(self, depth, ctx):
        r = self.r
        fn = self.name("inner")
        body = ["nonlocal a", "a = a + 1"] + self.block(depth, {"func": True})
        if not any(ln.startswith("return") for ln in body):
            body.append("return a")
        out = []
        if r.random() < 0.5:
            out.append("@deco")
        out += [f"def {fn}(q):"] + self.ind(body)
        out += ["try:", f"    b = {fn}(b)", "except Exception as ce:", "    log.append(repr(ce))"]
        return out

    def s_class(self, depth, ctx):
        cn = self.name("K")
        return [f"class {cn}:", "    x = a", "    if x > 1:", "        y = x * 2", "    else:",
                "        y = [x for _ in range(2)]",
                "    def m(self):", "        return self.x", f"b = {cn}().m()"]

    def s_match(self, depth, ctx):
        r = self.r
        out = ["match {}:".format(r.choice(("a", "(a, b)", "log[-1:]")))]
        pats = ["case 0:", "case (1, _):", "case [x]:", "case int(n) if n > 2:", "case (q, w):"]
        for p in r.sample(pats, r.randint(1, 3)):
            out += ["    " + p] + self.ind(self.ind(self.block(depth, ctx)))
        if r.random() < 0.6:
            out += ["    case _:"] + self.ind(self.ind(self.block(depth, ctx)))
        return out

    def s_except_star(self, depth, ctx):
        r = self.r
        excs = ", ".join(self.exc() for _ in range(r.randint(1, 3)))
        out = ["try:"] + self.ind(self.block(max(depth - 1, 0), {"func": False}, 1))
        out += [f"    if {self.cond()}:", f"        raise ExceptionGroup('g', [{excs}])"]
        for et in r.sample(("ValueError", "KeyError", "TypeError", "(ZeroDivisionError, RuntimeError)"), r.randint(1, 2)):
            out += [f"except* {et} as eg:", "    log.append(len(eg.exceptions))"]
            if r.random() < 0.2:
                out.append("    raise")
        return out

    def make_func(self) -> str:
        r = self.r
        fn = self.name("h")
        kind = r.random()
        body = self.block(2, {"func": True})
        lines = []
        if kind < 0.3:
            # recursive
            lines = [f"def {fn}(a, b=0):", "    log = []", "    if a > 0 and b < 3:",
                     f"        a = {fn}(a - 1, b + 1)"] + self.ind(body) + ["    return a + b"]
        else:
            if r.random() < 0.3:
                lines.append("@deco")
            lines += [f"def {fn}(a):", "    b = 1", "    log = []"] + self.ind(body) + ["    return b"]
        self.helpers.append(lines)
        return fn

    def make_gen(self) -> str:
        fn = self.name("g")
        body = self.block(2, {"func": True, "gen": True})
        self.insert_top(body, "yield a")
        lines = [f"def {fn}(a):", "    b = 0", "    log = []"] + self.ind(body)
        self.helpers.append(lines)
        self.gens.append(fn)
        return fn

    def insert_top(self, body: list, line: str) -> None:
        """Insert ``line`` between two top-level statements of ``body``."""
        tops = [i for i, ln in enumerate(body) if not ln.startswith((" ", "else", "elif", "except", "finally", "def"))]
        body.insert(self.r.choice(tops + [len(body)]), line)

    def make_coro(self) -> str:
        fn = self.name("co")
        body = self.block(2, {"func": True, "async": True})
        lines = [f"async def {fn}(a):", "    b = 0", "    log = []"] + self.ind(body) + ["    return a"]
        self.helpers.append(lines)
        self.coros.append(fn)
        return fn

    def make_agen(self) -> str:
        fn = self.name("ag")
        body = self.block(2, {"func": True, "async": True, "gen": True, "async_gen": True})
        self.insert_top(body, "yield a")
        lines = [f"async def {fn}(a):", "    b = 0", "    log = []"] + self.ind(body)
        self.helpers.append(lines)
        self.agens.append(fn)
        return fn

    def s_gen_use(self, depth, ctx):
        r = self.r
        if not self.gens or r.random() < 0.4:
            self.make_gen()
        g = r.choice(self.gens)
        k = r.randint(0, 9)
        if k == 7:
            return self.wrap([f"log.append(next(x for x in {g}(a) if x is not None))"])
        if k == 8 and ctx.get("gen") and not ctx.get("async_gen"):
            return self.wrap([f"r = yield from {g}(b)", "log.append(r)"])
        if k == 8:
            return self.wrap([f"it = {g}(a)", "next(it)", "next(it)", "log.append(it.send(None))"])
        if k == 9:
            return self.wrap([f"it = {g}(a)", "log.append(next(it))",
                              f"log.append(it.throw({self.exc()}))", "it.close()"])
        if k == 0:
            body = [f"for v in {g}(a):", "    log.append(v)"]
            if r.random() < 0.5:
                body += ["    if v == %d:" % r.randint(0, 3), "        break"]
            return self.wrap(body)
        if k == 1:
            return self.wrap([f"it = {g}(b)", "log.append(next(it))", "log.append(it.send(%d))" % r.randint(0, 3),
                              "log.append(next(it, 'done'))"])
        if k == 2:
            return self.wrap([f"it = {g}(b)", "next(it)", f"log.append(it.throw({self.exc()}))"])
        if k == 3:
            return self.wrap([f"it = {g}(b)", "next(it)", "it.close()", "log.append('closed')"])
        if k == 4:
            return self.wrap([f"b = sum(x for x in {g}(a) if x is not None)"])
        if k == 5:
            return self.wrap([f"it = {g}(a)", "log.append(list(it)[:2])"])
        return self.wrap([f"it = {g}(a)", "log.append(next(it))", "del it"])

    def wrap(self, body: list) -> list:
        return ["try:"] + self.ind(body) + ["except Exception as ge:", "    log.append(type(ge).__name__)"]

    def s_async_use(self, depth, ctx):
        r = self.r
        if not self.coros or r.random() < 0.4:
            self.make_coro()
        if r.random() < 0.4:
            self.make_agen()
        k = r.randint(0, 3)
        co = r.choice(self.coros)
        if k == 0:
            return self.wrap([f"b = asyncio.run({co}(a))"])
        if k == 1:
            return self.wrap([f"b = drive({co}(a))"])
        if k == 2 and self.agens:
            ag = r.choice(self.agens)
            fn = self.name("am")
            self.helpers.append([f"async def {fn}(a):", "    out = []", f"    async for v in {ag}(a):",
                                 "        out.append(v)", "        if len(out) > %d:" % r.randint(0, 3),
                                 "            break", "    return out"])
            return self.wrap([f"log.append(asyncio.run({fn}(a)))"])
        return self.wrap([f"c = {co}(b)", "c.send(None) if a > 2 else None", "c.close()"])

    def program(self) -> str:
        body = self.block(4, {"func": True}, self.r.randint(2, 5))
        entry = ["def f():", "    a = %d" % self.r.randint(0, 3), "    b = 1", "    log = []"] + self.ind(body)
        entry += ["    return a, b, log"]
        head = [
            "import asyncio",
            "",
            "class CM:",
            "    def __init__(self, suppress, log):",
            "        self.suppress = suppress",
            "        self.log = log",
            "    def __enter__(self):",
            "        self.log.append('enter')",
            "        return self",
            "    def __exit__(self, et, ev, tb):",
            "        self.log.append(et.__name__ if et else None)",
            "        if self.suppress == 'raise':",
            "            raise RuntimeError('exit')",
            "        return self.suppress",
            "",
            "class ACM:",
            "    def __init__(self, suppress, log):",
            "        self.suppress = suppress",
            "        self.log = log",
            "    async def __aenter__(self):",
            "        await asyncio.sleep(0)",
            "        return self",
            "    async def __aexit__(self, et, ev, tb):",
            "        self.log.append(et.__name__ if et else None)",
            "        await asyncio.sleep(0)",
            "        return self.suppress",
            "",
            "def deco(fn):",
            "    def wrapper(*args):",
            "        return fn(*args)",
            "    return wrapper",
            "",
            "def drive(coro):",
            "    try:",
            "        while True:",
            "            coro.send(None)",
            "    except StopIteration as stop:",
            "        return stop.value",
            "",
        ]
        out = head
        for h in self.helpers:
            out += h + [""]
        return "\n".join(out + entry) + "\n"


# ---------------------------------------------------------------------------------------------
# oracles


class SettraceOracle:
    """Raw sys.settrace: (kind, function, line, depth, frame id, unwinding, exception type)."""

    def __init__(self) -> None:
        self.events: list = []
        self.stack: list = []
        self.fids: dict = {}  # id(frame) -> frame id of its latest fresh start
        self.nfid = 0
        self.last: dict = {}
        self.locals: list = []  # per event: snapshot_locals() at call/line events, else None

    def glob(self, frame, event, arg):
        if frame.f_code.co_filename != FILE:
            return None
        if _fresh(frame) or id(frame) not in self.fids:
            self.fids[id(frame)] = self.nfid
            self.nfid += 1
        self.stack.append(id(frame))
        self.emit("call", frame, None)
        return self.local

    def emit(self, kind, frame, extra):
        snap = read_locals(kind, frame)
        line = frame.f_lineno
        if line is None:  # the cleanup of an except* block: the activation's previous line
            line = self.last.get(id(frame))
        self.last[id(frame)] = line
        self.events.append((kind, frame.f_code.co_name, line, len(self.stack) - 1, self.fids[id(frame)], extra))
        self.locals.append(snap)

    def local(self, frame, event, arg):
        if event == "line":
            self.emit("line", frame, None)
        elif event == "exception":
            self.emit("exception", frame, arg[0].__name__)
        elif event == "return":
            self.emit("return", frame, None)
            self.stack.pop()
        return self.local


class MonitoringOracle:
    """Raw sys.monitoring (3.12+), mapped as Python/legacy_tracing.c maps it."""

    def __init__(self) -> None:
        self.events: list = []
        self.stack: list = []
        self.live: dict = {}  # id(frame) -> frame id of a started, not finished activation
        self.last: dict = {}
        self.nfid = 0
        self.locals: list = []  # per event: snapshot_locals() at call/line events, else None

    def start(self):
        m = sys.monitoring
        self.tool = next(t for t in (3, 4, 2, 5) if m.get_tool(t) is None)
        m.use_tool_id(self.tool, "fuzzoracle")
        E = m.events
        cb = {
            E.PY_START: self.on_start, E.PY_RESUME: self.on_resume, E.PY_THROW: self.on_throw,
            E.PY_RETURN: self.on_return, E.PY_YIELD: self.on_yield, E.PY_UNWIND: self.on_unwind,
            E.RAISE: self.on_raise, E.STOP_ITERATION: self.on_raise, E.LINE: self.on_line,
            E.JUMP: self.on_jump, E.RERAISE: self.on_reraise, E.EXCEPTION_HANDLED: self.on_handled,
        }
        for ev, fn in cb.items():
            m.register_callback(self.tool, ev, fn)
        m.set_events(self.tool, sum(cb))

    def stop(self):
        m = sys.monitoring
        m.set_events(self.tool, 0)
        m.free_tool_id(self.tool)

    def frame(self, code):
        fr = sys._getframe(2)
        return fr if fr.f_code is code else None

    def mine(self, code):
        return code.co_filename == FILE

    def emit(self, kind, code, line, extra=None, fr=None):
        fr = fr or sys._getframe(2)
        snap = read_locals(kind, fr)
        if line is None:
            line = self.last.get(id(fr))
        self.last[id(fr)] = line
        self.events.append((kind, code.co_name, line, len(self.stack) - 1, self.live[id(fr)], extra))
        self.locals.append(snap)

    def enter(self, code, fresh):
        fr = sys._getframe(2)
        if fresh or id(fr) not in self.live:
            self.live[id(fr)] = self.nfid
            self.nfid += 1
        self.stack.append(id(fr))
        self.emit("call", code, fr.f_lineno, fr=fr)

    def on_start(self, code, off):
        if self.mine(code):
            self.enter(code, True)

    def on_resume(self, code, off):
        if self.mine(code):
            self.enter(code, False)

    def on_throw(self, code, off, exc):
        if self.mine(code):
            self.enter(code, False)

    def leave(self, code, extra, fr=None):
        fr = fr or sys._getframe(2)  # the program's frame: this method's caller's caller
        self.emit("return", code, fr.f_lineno, extra, fr=fr)
        self.stack.pop()

    def end(self, code, how):
        """The frame of `code` is done (returned or unwound): it leaves the live frames."""
        if self.mine(code):
            fr = sys._getframe(2)  # the program's frame (end <- on_return/on_unwind <- it)
            self.leave(code, how, fr)
            del self.live[id(fr)]

    def on_return(self, code, off, val):
        self.end(code, "ret")

    def on_yield(self, code, off, val):
        if self.mine(code):
            self.leave(code, "ret")

    def on_unwind(self, code, off, exc):
        self.end(code, "unwind")

    def on_raise(self, code, off, exc):
        if self.mine(code):
            fr = sys._getframe(1)
            self.emit("exception", code, fr.f_lineno, type(exc).__name__)

    def on_reraise(self, code, off, exc):
        pass

    def on_handled(self, code, off, exc):
        pass

    def on_line(self, code, line):
        if self.mine(code):
            self.emit("line", code, line)
        else:
            return sys.monitoring.DISABLE

    def on_jump(self, code, src, dst):
        if not self.mine(code):
            return sys.monitoring.DISABLE
        if dst > src:
            return None
        lines = _offset_lines(code)
        if lines.get(dst) is not None and lines.get(dst) == lines.get(src):
            self.emit("line", code, lines[dst])
        return None


SKIPPED = object()  # a snapshotted local whose value is not of the exact types compared
MAX_EXACT_DEPTH = 8  # nesting the tracer renders by default (max_depth); deeper is cut


def _exact(value, depth: int = 0) -> bool:
    """Whether the tracer renders ``value`` exactly like ``repr()`` (docs/tracer.md "Rendering
    values"): an exact int (not a huge one), str, bool, None or float, or an exact tuple, list or
    dict of those within the depth budget."""
    t = type(value)
    if t is int:
        return value.bit_length() <= 3000  # (the tracer abbreviates ints of ~1,000 digits)
    if t is str or t is bool or t is float or value is None:
        return True
    if depth >= MAX_EXACT_DEPTH:
        return False
    if t is tuple or t is list:
        return all(_exact(v, depth + 1) for v in value)
    if t is dict:
        return all(_exact(k, depth + 1) and _exact(v, depth + 1) for k, v in value.items())
    return False


def read_locals(kind: str, frame):
    """What an oracle reads of ``frame``'s locals at an event of ``kind``: a snapshot (check 4)
    or nothing (None); see READ_LOCALS for where it reads f_locals at all."""
    if kind != "call" and kind != "line" or not READ_LOCALS:
        return None
    if SNAP_LOCALS:
        return snapshot_locals(frame)
    frame.f_locals  # noqa: B018 (as the recorder does: the lifetimes residual)
    return None


def snapshot_locals(frame) -> dict:
    """name -> repr() of each local of an exact type (``SKIPPED`` for the others). Not the
    variables that CPython 3.13.0-3.13.2 crashes on reading (the gh-128396 residual: the
    tracer leaves them out too), nor a comprehension's iterator argument ``.0``."""
    from tracer.codeinfo import shadowed_cells

    proxy = frame.f_locals
    hidden = shadowed_cells(frame.f_code)
    out = {}
    for name in list(proxy.keys()):  # the names first: a hidden one's value is never read
        if name in hidden or name == ".0":
            continue
        try:
            value = proxy[name]
        except KeyError:
            continue
        out[name] = repr(value) if _exact(value) else SKIPPED
    return out


# 3.8/3.9: the implicit ``del e`` that ends an ``except E as e:`` handler whose last line did
# not run goes unseen until the frame's next full rescan (a documented residual of the line
# analysis, docs/tracer.md): such a name, left in the fold, is not reported.
STALE_EXCEPT_NAMES = V < (3, 10)


def except_names(source: str) -> frozenset:
    """The names that ``except ... as NAME:`` handlers of ``source`` bind."""
    return frozenset(re.findall(r"except\*? .* as (\w+):", source))


def locals_diff(events: list, snapshots: list, upto: int, stale_ok: frozenset = frozenset()):
    """The first event (of the first ``upto``) where the tracer's folded locals (the API's
    ``full_locals``) disagree with the oracle's snapshot: (index, line, variable, tracer's text,
    oracle's text), or None. A variable the fold still holds but the frame no longer has shows
    as oracle text None, except the names of ``stale_ok``."""
    from tracer.api import full_locals

    for i, state in enumerate(full_locals(events[:upto])):
        e = events[i]
        if e["kind"] not in ("call", "line"):
            continue
        snap = snapshots[i]
        for name, want in snap.items():
            if want is SKIPPED:
                continue
            got = state.get(name)
            if got is not None and "..." in got:  # cut by a budget (or a "..." the value holds)
                continue
            if got != want:
                return i, e["lineno"], name, got, want
        for name in state:
            if name not in snap and name not in stale_ok:
                return i, e["lineno"], name, state[name], None
    return None


def _fresh(frame) -> bool:
    """Whether a settrace ``call`` starts the frame (not a generator/coroutine resuming): it has
    not passed its first RESUME (a generator thrown into or closed before its first step is
    still before it)."""
    if frame.f_lasti < 0:
        return True
    if V < (3, 11):
        return False
    import dis

    # The RESUME after RETURN_GENERATOR in a generator's code: on 3.15 a generator expression
    # first runs ``RESUME; LOAD_FAST .0; GET_ITER`` in its creator's call (no event), and a new
    # frame at the address of a finished one would otherwise pass for it resuming.
    ops = frame.f_code.co_code[::2]  # the opcodes (each instruction and cache entry is 2 bytes)
    first = 2 * ops.index(dis.opmap["RESUME"], max(ops.find(dis.opmap["RETURN_GENERATOR"]), 0))
    return frame.f_lasti <= first


def _offset_lines(code) -> dict:
    out = {}
    for start, end, line in code.co_lines():
        for o in range(start, end, 2):
            out[o] = line
    return out


# ---------------------------------------------------------------------------------------------
# running


def run_plain(source: str, oracle=None):
    """Run ``f()`` of a fresh module; with ``oracle`` (settrace or monitoring) logging."""
    ns: dict = {"__name__": "fuzzprog", "__file__": FILE}
    # dont_inherit: as the tracer compiles it. Under this file's ``from __future__ import
    # annotations`` it would be another program: string annotations, and on 3.14+ no
    # ``__classdict__`` cell in a class body with a method (f_locals shows that cell while an
    # inlined comprehension runs in the class body).
    exec(compile(source, FILE, "exec", dont_inherit=True), ns)
    buf = io.StringIO()
    result = exc = None
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "assigning None to unbound local")  # the oracle's f_locals
        if isinstance(oracle, SettraceOracle):
            sys.settrace(oracle.glob)
        elif oracle is not None:
            oracle.start()
        try:
            result = ns["f"]()
        except Exception as e:
            exc = e
        finally:
            if isinstance(oracle, SettraceOracle):
                sys.settrace(None)
            elif oracle is not None:
                oracle.stop()
    return result, exc, buf.getvalue()


def tracer_view(events: list) -> list:
    """The tracer's events as the oracle sees them."""
    out = []
    for e in events:
        extra = None
        if e["kind"] == "exception":
            extra = e["arg"].split(":", 1)[0].rsplit(".", 1)[-1]
        out.append((e["kind"], e["function"].rsplit(".", 1)[-1], e["lineno"], e["depth"], e["frame_id"], extra))
    return out


def norm_oracle(events: list, unwind_known: bool) -> list:
    out = []
    for k, fn, line, depth, fid, extra in events:
        if k == "return":
            extra = None
        out.append((k, fn, line, depth, fid, extra))
    return out


def first_diff(a: list, b: list):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i, x, y
    if len(a) != len(b):
        i = min(len(a), len(b))
        return i, a[i] if i < len(a) else None, b[i] if i < len(b) else None
    return None


def renumber(events: list) -> list:
    """Frame ids in order of first appearance (both the tracer's and the oracles' rule)."""
    m: dict = {}
    out = []
    for e in events:
        fid = m.setdefault(e[4], len(m))
        out.append(e[:4] + (fid,) + e[5:])
    return out


def check(seed: int, source: str, backends) -> list:
    """Every difference found for one program, as tuples (seed, check, details)."""
    # The cyclic collector off: it finalizes generators at moments that depend on allocations,
    # which tracing changes (the "Garbage collection" residual), so runs would not compare.
    gc.collect()
    gc.disable()
    try:
        return _check(seed, source, backends)
    finally:
        gc.enable()


def _check(seed: int, source: str, backends) -> list:
    from tracer.api import Limits, trace_call

    findings = []
    res, exc, out = run_plain(source)
    plain = ("ok" if exc is None else "exception", repr(res) if exc is None else None,
             type(exc).__name__ if exc else None, str(exc) if exc else None, out)
    traces = {}
    for b in backends:
        gc.collect()
        t = trace_call(FILE, "f", "", source=source, backend=b, limits=Limits(timeout_s=20))
        traces[b] = t
        if t["status"] == "error":
            findings.append((seed, "error-" + b, t["tracer_error"]))
            continue
        got = (t["status"], t["return_value"], t["exception_type"], t["exception_message"], t["stdout"])
        if got != plain:
            findings.append((seed, "result-" + b, repr(plain)[:300], repr(got)[:300]))
    if len(traces) == 2:
        a, b = (traces[k]["events"] for k in backends)
        strip = [[{k: v for k, v in e.items() if k != "source"} for e in ev] for ev in (a, b)]
        d = first_diff(strip[0], strip[1])
        if d:
            findings.append((seed, "backends", d))
    # oracles
    oracles = [("settrace", SettraceOracle())]
    if V >= (3, 12):
        oracles.append(("monitoring", MonitoringOracle()))
    for name, orc in oracles:
        gc.collect()
        run_plain(source, orc)
        ev = renumber(norm_oracle(orc.events, name == "monitoring"))
        t = traces.get(name)
        if t is None or t["status"] == "error":
            continue
        tv = tracer_view(t["events"])
        d = first_diff(tv, ev)
        if d:
            findings.append((seed, "oracle-" + name, d))
        if SNAP_LOCALS:
            stale_ok = except_names(source) if STALE_EXCEPT_NAMES else frozenset()
            ld = locals_diff(t["events"], orc.locals, d[0] if d else len(tv), stale_ok)
            if ld:
                findings.append((seed, "locals-" + name, ld))
        if name == "monitoring":
            # unwinding returns: the tracer's return arg is null exactly when the oracle unwinds
            tu = [e["arg"] is None for e in t["events"] if e["kind"] == "return"]
            ou = [e[5] == "unwind" for e in orc.events if e[0] == "return"]
            if len(tu) == len(ou):
                bad = [i for i, (x, y) in enumerate(zip(tu, ou)) if x != y]
                if bad:
                    findings.append((seed, "unwind-arg", bad[:3]))
    return findings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0:100")
    ap.add_argument("--show", type=int)
    ap.add_argument("--backends", default="monitoring,settrace" if V >= (3, 12) else "settrace")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--raw-lifetimes", action="store_true", help="oracles do not read f_locals")
    ap.add_argument("--no-locals", action="store_true", help="do not compare the locals deltas")
    ap.add_argument("--data-flow", action="store_true",
                    help="programs also alias, mutate and rebind locals (other programs per seed)")
    args = ap.parse_args()
    global READ_LOCALS, SNAP_LOCALS
    READ_LOCALS = not args.raw_lifetimes
    SNAP_LOCALS = not args.no_locals and not args.raw_lifetimes  # (a snapshot reads f_locals)
    if args.show is not None:
        print(Gen(args.show, data_flow=args.data_flow).program())
        return
    lo, hi = (int(x) for x in args.seeds.split(":"))
    backends = args.backends.split(",")
    n_bad = 0
    for seed in range(lo, hi):
        src = Gen(seed, data_flow=args.data_flow).program()
        started = time.perf_counter()
        faulthandler.dump_traceback_later(60, exit=True)  # a hang: which seed, where
        sys.stderr.write("seed %d\n" % seed)
        try:
            fs = check(seed, src, backends)
        except Exception:
            fs = [(seed, "fuzzer-crash", traceback.format_exc()[-500:])]
        for f in fs:
            print(json.dumps(f, default=repr) if args.json else f, flush=True)
        faulthandler.cancel_dump_traceback_later()
        n_bad += bool(fs)
        if time.perf_counter() - started > 5:
            print("slow: seed %d took %.1f s" % (seed, time.perf_counter() - started), flush=True)
    print("summary: %d/%d programs differ (%s, %s%s)" % (n_bad, hi - lo, sys.version.split()[0], ",".join(backends),
                                                         ", data flow" if args.data_flow else ""))


if __name__ == "__main__":
    main()
