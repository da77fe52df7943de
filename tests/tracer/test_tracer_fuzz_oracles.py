"""The differential fuzzer's own oracles (fuzz_control_flow.py) see what the tracer sees."""

from __future__ import annotations

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

