"""The differential fuzzer's own oracles (fuzz_control_flow.py) see what the tracer sees."""

from __future__ import annotations

import sys

import fuzz_control_flow as fuzz

from tracer.api import trace_call


def test_untraced_run_compiles_the_program_as_the_tracer_does():
    # Not under the fuzzer's ``from __future__ import annotations``: that is another program
    # (string annotations; on 3.14+ no ``__classdict__`` cell in a class body with a method).
    source = "def f():\n    def g(x: int):\n        pass\n    return repr(g.__annotations__)\n"
    result, exc, _ = fuzz.run_plain(source)
    assert exc is None
    traced = trace_call(fuzz.FILE, "f", "", source=source)
    assert traced["status"] == "ok"
    assert traced["return_value"] == repr(result)


def test_settrace_oracle_knows_a_generator_expression_starting():
    # On 3.15 a generator expression's code runs a RESUME and GET_ITER before RETURN_GENERATOR:
    # its start is the RESUME after that, not the code's first one.
    seen = []
    gen_code = None

    def trace(frame, event, arg):
        if event == "call" and frame.f_code is gen_code:
            seen.append(fuzz._fresh(frame))
        return None

    def make():
        return (x for x in [1, 2])

    gen = make()
    gen_code = gen.gi_code
    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        list(gen)
    finally:
        sys.settrace(previous)
    assert seen == [True, False, False]  # started, resumed after each yield
