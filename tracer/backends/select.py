"""Choose the backend: ``auto`` prefers sys.monitoring and records why it was not used."""

from __future__ import annotations

import os

from .._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from ..env import monitoring_unavailable_reason

BACKEND_ENV = "WORLDTRACE_BACKEND"
BACKEND_NAMES = ("auto", "monitoring", "settrace")


class BackendUnavailable(ValueError):
    """The requested backend cannot run on this interpreter; ``backend`` is the name it resolved to
    (``auto`` with $WORLDTRACE_BACKEND set names that one)."""

    def __init__(self, message: str, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


def choose_backend(requested: str | None = "auto") -> tuple:
    """Return ``(backend_class, reason)``; reason says why ``auto`` didn't pick monitoring.

    ``requested`` of None or "auto" defers to $WORLDTRACE_BACKEND when it is set.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        name = (os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if name not in BACKEND_NAMES:
        raise BackendUnavailable("unknown backend %r (choose from %s)" % (name, ", ".join(BACKEND_NAMES)), name)
    reason = monitoring_unavailable_reason()
    if name == "monitoring":
        if reason is not None:
            raise BackendUnavailable(reason, name)
        from .monitoring import MonitoringBackend

        return MonitoringBackend, None
    if name == "settrace":
        from .settrace import SettraceBackend

        return SettraceBackend, "settrace was requested"
    if reason is None:
        from .monitoring import MonitoringBackend

        return MonitoringBackend, None
    from .settrace import SettraceBackend

    return SettraceBackend, reason
