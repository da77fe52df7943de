"""Generators and coroutines whose frames the backends must follow through unusual paths: resumed
in another thread, thrown into before their first step (also a task cancelled before it ran),
started before the trace, a new generator in the memory of a dead one, closed inside a ``with``
or after an ``except*`` block. Under each backend of every CPython 3.8-3.13 that pyenv lists,
each program's events have the property it is about, and on 3.12+ the monitoring backend gives
exactly settrace's events (frame and thread ids too).
The module also runs as a script (stdlib only).
"""

from __future__ import annotations

import json
import sys

from tracer.api import trace_call

PROGRAMS = {
    "resumed_in_another_thread": """\
import threading

def gen():
    for x in range(3):
        yield x

def helper(g, out):
    out.append(next(g))

def f():
    g = gen()
    out = [next(g)]
    t = threading.Thread(target=helper, args=(g, out), name="helper")
    t.start()
    t.join()
    out.extend(g)
    return out
""",
    "thrown_into_before_its_first_step": """\
def gen():
    try:
        yield 1
    finally:
        print("fin")

def f():
    g = gen()
    try:
        g.throw(ValueError("early"))
    except ValueError:
        pass
    return 1
""",
    "task_cancelled_before_its_first_step": """\
import asyncio

async def victim():
    try:
        await asyncio.sleep(1)
    finally:
        print("victim finally")

async def amain():
    t = asyncio.create_task(victim())
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        return "cancelled"

def f():
    return asyncio.run(amain())
""",
    "started_before_the_trace": """\
def ids():
    n = 0
    while True:
        n += 1
        yield n

ID = ids()
FIRST = next(ID)

def f():
    a = next(ID)
    b = next(ID)
    return FIRST, a, b
""",
    "new_generator_where_a_dead_one_was": """\
def gen(tag):
    mine = [tag]
    yield mine
    yield 2

def f():
    out = []
    for i in range(3):
        g = gen(i)
        out.append(next(g))
        g = None
    h = gen("fresh")
    try:
        h.throw(KeyError("x"))
    except KeyError:
        out.append("k")
    return out
""",
    "closed_inside_a_with": """\
import contextlib

def lines():
    with contextlib.nullcontext():
        yield 1

def f():
    g = lines()
    next(g)
    g.close()
    return 0
""",
    "thrown_into_handles_and_yields_again": """\
def gen():
    while True:
        try:
            yield 1
        except ValueError:
            pass

def f():
    g = gen()
    a = next(g)
    b = g.throw(ValueError("v"))
    return a, b
""",
}
if sys.version_info >= (3, 11):
    PROGRAMS["closed_after_an_except_star"] = """\
def gen():
    try:
        yield 1
    except* KeyError as eg:
        yield len(eg.exceptions)

def f():
    g = gen()
    next(g)
    r = g.throw(KeyError("x"))
    g.close()
    return r
"""


def _of(events: list, function: str, kind: str | None = None) -> list:
    return [e for e in events if e["function"] == function and (kind is None or e["kind"] == kind)]


def expectation(name: str, events: list) -> str | None:
    """What is wrong with the events of program ``name`` (None when they are right)."""
    if name == "resumed_in_another_thread":
        # The second next(g) runs in the helper thread: its events are that thread's.
        calls = [(e["thread_id"], e["depth"]) for e in _of(events, "gen", "call")]
        if calls != [(0, 1), (1, 1), (0, 1), (0, 1)]:
            return f"gen's calls (thread, depth): {calls!r}, want [(0, 1), (1, 1), (0, 1), (0, 1)]"
    elif name == "thrown_into_before_its_first_step":
        if [e["arg"] for e in _of(events, "gen", "exception")] != ["ValueError: early"] or not _of(events, "gen", "call"):
            return "no call and exception of gen: %r" % [(e["kind"], e["arg"]) for e in _of(events, "gen")]
    elif name == "task_cancelled_before_its_first_step":
        if not _of(events, "victim", "call") or not [e for e in _of(events, "victim", "exception")
                                                     if "CancelledError" in e["arg"]]:
            return "no call and CancelledError of victim: %r" % [(e["kind"], e["arg"]) for e in _of(events, "victim")]
    elif name == "started_before_the_trace":
        if len(_of(events, "ids", "call")) != 2:
            return f"calls of ids: {len(_of(events, 'ids', 'call'))}, want 2 (one per resume)"
    elif name == "new_generator_where_a_dead_one_was":
        starts = [e["frame_id"] for e in _of(events, "gen", "call") if "tag" in e["locals"]]
        if len(starts) != 4 or len(set(starts)) != 4:
            return f"frame ids of gen's four generators: {starts!r}"
    elif name in ("closed_inside_a_with", "thrown_into_handles_and_yields_again"):
        # The with's cleanup runs other lines, then re-raises at the yield: an unwinding return
        # (null), not a second yield. A yield reached again after the handler is a yield.
        end = next(i for i, e in enumerate(events) if e["function"] == "f" and e["kind"] == "return")
        returns = [e["arg"] for e in events[:end] if e["function"] in ("lines", "gen") and e["kind"] == "return"]
        want = ["1", None] if name == "closed_inside_a_with" else ["1", "1"]
        if returns != want:
            return f"return args {returns!r}, want {want!r}"
    if any(e["lineno"] < 1 for e in events):  # CPython has no line for an except* block's cleanup
        return "events without a line: %r" % [(e["kind"], e["function"]) for e in events if e["lineno"] < 1]
    return None


def backends() -> list:
    return ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def start_problems() -> list:
    """codeinfo.start_offset tells a generator frame that has not started (f_lasti before it) from
    one that has: for a generator function and a generator expression (whose 3.15 code runs a
    RESUME and GET_ITER before RETURN_GENERATOR), before and after its first step."""
    if sys.version_info < (3, 11):
        return []  # (no RESUME: the monitoring backend's check that uses it is 3.12+)
    from tracer import codeinfo

    def function():
        yield 1

    found = []
    for what, make in (("function", function), ("expression", lambda: (x for x in [1, 2]))):
        it = make()
        unstarted = it.gi_frame.f_lasti < codeinfo.start_offset(it.gi_code)
        next(it)
        started = it.gi_frame.f_lasti >= codeinfo.start_offset(it.gi_code)
        if not (unstarted and started):
            found.append({"generator": what, "start_offset": codeinfo.start_offset(it.gi_code),
                          "unstarted_seen": unstarted, "started_seen": started})
    return found


def problems() -> list:
    found = start_problems()
    for name, source in sorted(PROGRAMS.items()):
        reference = None
        for backend in backends():
            t = trace_call(name + ".py", "f", "", source=source, backend=backend)
            if t["status"] != "ok" or t["truncated"]:
                found.append({"program": name, "backend": backend, "status": t["status"],
                              "truncated": t["truncated_reason"], "error": t.get("tracer_error")})
                continue
            wrong = expectation(name, t["events"])
            if wrong:
                found.append({"program": name, "backend": backend, "problem": wrong})
            if reference is None:
                reference = t["events"]
            elif t["events"] != reference:
                i = next((i for i, (a, b) in enumerate(zip(reference, t["events"])) if a != b),
                         min(len(reference), len(t["events"])))
                found.append({"program": name, "backend": backend, "event": i,
                              "settrace": reference[i] if i < len(reference) else None,
                              "this": t["events"][i] if i < len(t["events"]) else None})
    return found


def test_the_backends_follow_generators_through_unusual_paths() -> None:
    assert problems() == [], json.dumps(problems(), indent=1)


if "pytest" in sys.modules:  # as a script, the module prints its problems (stdlib only)
    from tracer_testutil import no_problems_under_every_python

    test_under_every_python = no_problems_under_every_python(__file__)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(problems()) + "\n")
