"""Errors of the schemas side: one root, specific subclasses."""

from __future__ import annotations


class SchemaError(Exception):
    """Root of every error raised by `schemas`."""


class StreamFormatError(SchemaError):
    """A tracer stream line that does not follow trace_stream.md."""

    def __init__(self, message: str, line_number: int | None = None) -> None:
        self.line_number = line_number
        where = f"stream line {line_number}: " if line_number is not None else ""
        super().__init__(where + message)


class ShardError(SchemaError):
    """A shard that cannot be written or read (not Parquet, truncated, wrong schema)."""


class CwmFormatError(SchemaError):
    """A trace that cannot be rendered as CWM text, or text that is not CWM trace format."""
