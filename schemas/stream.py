"""The tracer's JSON Lines stream, version 1, as data: keys, kinds and statuses (see trace_stream.md)."""

from __future__ import annotations

STREAM_FORMAT = "worldtrace.stream/1"

# key -> JSON type(s) of the trace object, in the order of trace_stream.md.
# "str?" means a string or null.
TRACE_KEYS: dict[str, str] = {
    "format": "str",
    "program_id": "str",
    "entrypoint": "str?",
    "input": "str?",
    "status": "str",
    "return_value": "str?",
    "exception_type": "str?",
    "exception_message": "str?",
    "truncated": "bool",
    "truncated_reason": "str?",
    "stdout": "str",
    "stderr": "str",
    "output_truncated": "bool",
    "wall_time_s": "float",
    "n_events": "int",
    "python_version": "str",
    "backend": "str",
    "backend_reason": "str?",
    "tracer_version": "str",
    "limits": "object",
    "tracer_error": "str?",
    "events": "array",
}

EVENT_KEYS: dict[str, str] = {
    "kind": "str",
    "lineno": "int",
    "source": "str",
    "function": "str",
    "file": "str",
    "depth": "int",
    "frame_id": "int",
    "thread_id": "int",
    "locals": "object",
    "arg": "str?",
}

LIMIT_KEYS: dict[str, str] = {
    "max_events": "int",
    "max_value_chars": "int",
    "max_items": "int",
    "max_depth": "int",
    "max_output_bytes": "int",
    "timeout_s": "float",
    "memory_mb": "int",
}

STATUSES = ("ok", "exception", "timeout", "memory", "crashed", "error")
EVENT_KINDS = ("call", "line", "return", "exception")
TRUNCATED_REASONS = ("max_events", "max_trace_bytes")

# Stream keys that are checked on conversion but not stored as columns (the row has schema_version).
NOT_STORED = ("format",)
