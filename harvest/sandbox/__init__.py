"""Sandboxes that run one work unit through the tracer's batch runner (`base.py` is the interface)."""

from __future__ import annotations

from typing import Any

from harvest.errors import ConfigError
from harvest.sandbox.base import Sandbox, UnitOutcome, UnitRequest

__all__ = ["Sandbox", "UnitOutcome", "UnitRequest", "open_sandbox"]

SANDBOX_KINDS = ("docker", "local")


def open_sandbox(kind: str, **options: Any) -> Sandbox:
    """A sandbox of `kind` ("docker" or "local"); Docker's SDK is imported only for "docker"."""
    if kind == "local":
        from harvest.sandbox.local import LocalSandbox

        return LocalSandbox(**options)
    if kind == "docker":
        from harvest.sandbox.docker import DockerSandbox

        return DockerSandbox(**options)
    raise ConfigError(f"unknown sandbox {kind!r}: choose one of {', '.join(SANDBOX_KINDS)}")
