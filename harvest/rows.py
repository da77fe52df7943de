"""Stream rows the host makes itself, and the rendering of expected outputs for checking."""

from __future__ import annotations

import ast
import hashlib
from typing import Any

from harvest.plan import HarvestSettings


def stream_row_defaults(settings: HarvestSettings) -> dict[str, Any]:
    """A complete stream row (schemas/trace_stream.md) with neutral values, for the host to fill in."""
    from tracer.stream import blank_trace

    limits = {
        "max_events": settings.max_events,
        "max_value_chars": settings.max_value_chars,
        "max_items": 0,
        "max_depth": 0,
        "max_output_bytes": 0,
        "timeout_s": settings.timeout_s,
        "memory_mb": settings.memory_mb,
    }
    return blank_trace("", limits=limits, backend=settings.backend, python_version="")


def judged_output(text: str) -> str:
    """A digest of printed text as programming judges compare it (whitespace at the end of each
    line and blank lines at the end do not count): a script's stdout matches its expected output
    when their digests are equal."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()


def expected_rendering(expected_output: str, max_value_chars: int = 0) -> str | None:
    """How the tracer renders the value that `expected_output` (a Python literal) denotes.

    None when the text is not a literal (then there is nothing to compare against).
    """
    try:
        value = ast.literal_eval(expected_output)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    from tracer.render import Renderer

    if max_value_chars:
        return Renderer(max_value_chars=max_value_chars).render(value)
    return Renderer().render(value)


def malformed_row(obj: dict[str, Any], problem: str) -> dict[str, Any]:
    """An `error` row for a program whose tracer output broke the stream format."""
    from harvest.plan import HarvestSettings

    row = stream_row_defaults(HarvestSettings())
    for key in ("program_id", "entrypoint", "input", "python_version", "backend", "tracer_version", "stdout", "stderr"):
        value = obj.get(key)
        if isinstance(value, str) or (value is None and key in ("entrypoint", "input")):
            row[key] = value
    row["status"] = "error"
    row["tracer_error"] = f"malformed tracer output: {problem}"[:2000]
    return row
