"""Errors of the batch runner itself (a program's failure is never one of these: it is a row)."""

from __future__ import annotations

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)


class BatchError(Exception):
    """The batch cannot go on (cannot fork, cannot write): exit code 1."""


class UsageError(BatchError):
    """The jobs file or the output cannot be used: exit code 2."""


class OutputError(UsageError):
    """The output file cannot be opened or resumed."""
