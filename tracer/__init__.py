"""worldtrace tracer: a stdlib-only line-level execution recorder (sys.monitoring or sys.settrace)."""

from __future__ import annotations

__version__ = "0.1.0"
