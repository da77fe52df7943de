"""Hand-made tracer stream objects (trace_stream.md) for the schemas tests."""

from __future__ import annotations

from typing import Any

from schemas.stream import STREAM_FORMAT

LIMITS = {
    "max_events": 100000,
    "max_value_chars": 200,
    "max_items": 20,
    "max_depth": 3,
    "max_output_bytes": 65536,
    "timeout_s": 10.0,
    "memory_mb": 0,
}


def event(kind: str, lineno: int, source: str, locals_: dict[str, Any] | None = None, arg: str | None = None,
          *, function: str = "f", depth: int = 0, frame_id: int = 0) -> dict[str, Any]:
    return {
        "kind": kind,
        "lineno": lineno,
        "source": source,
        "function": function,
        "file": "<program>",
        "depth": depth,
        "frame_id": frame_id,
        "thread_id": 0,
        "locals": locals_ or {},
        "arg": arg,
    }


def stream_object(events: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "format": STREAM_FORMAT,
        "program_id": "p1",
        "entrypoint": "f",
        "input": "1",
        "status": "ok",
        "return_value": None,
        "exception_type": None,
        "exception_message": None,
        "truncated": False,
        "truncated_reason": None,
        "stdout": "",
        "stderr": "",
        "output_truncated": False,
        "wall_time_s": 0.001,
        "n_events": len(events),
        "python_version": "3.11.7",
        "backend": "settrace",
        "backend_reason": "sys.monitoring isn't available in Python 3.11",
        "tracer_version": "0.1.0",
        "limits": dict(LIMITS),
        "tracer_error": None,
        "events": events,
    }
    obj.update(overrides)
    return obj


SIMPLE_SOURCE = "def f(x):\n    y = x + 1\n    return y * 2"


def simple_trace(x: int = 1, program_id: str = "p1") -> dict[str, Any]:
    """The stream object of f(x) for SIMPLE_SOURCE."""
    return stream_object(
        [
            event("call", 1, "def f(x):", {"x": str(x)}),
            event("line", 2, "    y = x + 1"),
            event("line", 3, "    return y * 2", {"y": str(x + 1)}),
            event("return", 3, "    return y * 2", arg=str((x + 1) * 2)),
        ],
        program_id=program_id,
        input=str(x),
        return_value=str((x + 1) * 2),
    )


IMAGE = "host-py311"
