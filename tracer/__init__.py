"""worldtrace tracer: a stdlib-only line-level execution recorder (sys.monitoring or sys.settrace)."""

from __future__ import annotations

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

# Bumped whenever what is recorded for the same program changes (an event, a rendering): traces of
# two versions are not comparable, and the version is part of every trace id (schemas/ids.py).
# 0.2.0: values over the character budget cut between whole items with their real tail; dict
# views, slices and arrays rendered like their repr.
__version__ = "0.2.0"
