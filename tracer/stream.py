"""The trace object of the stream (schemas/trace_stream.md): its format tag and a blank one to fill in."""

from __future__ import annotations

import platform
from typing import Any, Dict, Optional

from tracer import __version__

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

FORMAT = "worldtrace.stream/1"


def blank_trace(
    program_id: str,
    *,
    entrypoint: Optional[str] = None,
    input_text: Optional[str] = None,
    limits: Optional[Dict[str, Any]] = None,
    backend: Optional[str] = None,
    backend_reason: Optional[str] = None,
    python_version: Optional[str] = None,
) -> Dict[str, Any]:
    """Every key of a trace object with neutral values; status `error` until the caller fills it in."""
    return {
        "format": FORMAT,
        "program_id": program_id,
        "entrypoint": entrypoint,
        "input": input_text,
        "status": "error",
        "return_value": None,
        "exception_type": None,
        "exception_message": None,
        "truncated": False,
        "truncated_reason": None,
        "stdout": "",
        "stderr": "",
        "output_truncated": False,
        "wall_time_s": 0.0,
        "n_events": 0,
        "python_version": platform.python_version() if python_version is None else python_version,
        "backend": backend,
        "backend_reason": backend_reason,
        "tracer_version": __version__,
        "limits": dict(limits or {}),
        "tracer_error": None,
        "events": [],
    }
