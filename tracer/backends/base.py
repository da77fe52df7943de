"""The interface every tracing backend implements (start / stop / stats)."""

from __future__ import annotations

from .._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)


class Backend:
    """A mechanism that feeds a ``Recorder`` with call/line/return/exception events.

    The recorder is handed in; a backend never builds its own. ``start()`` begins
    tracing in the calling thread (and threads started afterwards), ``stop()`` restores
    whatever was installed before, ``stats()`` reports counters for diagnostics.
    A backend must never let an exception escape into the traced program: it calls
    ``recorder.fail(exc)`` and goes quiet instead.
    """

    name = "base"

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict:
        return {}

    def installed(self) -> bool:
        """Whether the backend still receives events (the program may have removed it)."""
        return True
