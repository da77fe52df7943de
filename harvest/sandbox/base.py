"""The sandbox interface: run one work unit (a jobs file) through the tracer's batch runner.

A *unit* is many programs that share an image. A sandbox runs `python -m tracer batch` over the
unit's jobs once (one container per unit for `DockerSandbox`, one host process for `LocalSandbox`)
and leaves the tracer's JSON Lines stream at `UnitRequest.output_path`. Programs that fail (timeout,
memory, crash, exception) are rows in that stream; `run_unit` raises a `SandboxError` only when the
infrastructure failed (image missing, engine error, start failure, unit deadline, runner died).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from harvest.errors import ConfigError

log = logging.getLogger(__name__)

# Where the tracer package lives on the host (the repository's tracer/ folder).
TRACER_DIR = Path(__file__).resolve().parent.parent.parent / "tracer"

# Environment that makes programs deterministic; every sandbox sets it.
DETERMINISTIC_ENV = {
    "PYTHONHASHSEED": "0",
    "TZ": "UTC",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}

# Memory the warm batch runner keeps for itself: a program may use `memory_mb - RUNNER_MEMORY_MB`.
RUNNER_MEMORY_MB = 64

# How much of the runner's own stderr an outcome or error keeps.
STDERR_TAIL_CHARS = 4000


# Defaults of a unit's limits; the harvest settings (harvest/plan.py) take the same ones.
DEFAULT_PROGRAM_TIMEOUT_S = 10.0
DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_VALUE_CHARS = 1_000
DEFAULT_MEMORY_MB = 512
DEFAULT_CPUS = 1.0
DEFAULT_PIDS = 256
DEFAULT_TMPFS_MB = 256


@dataclass(frozen=True)
class UnitRequest:
    """One unit of work: run every job of `jobs_path` and append the stream to `output_path`."""

    run_id: str
    unit_id: str
    attempt: int
    image: str  # catalog name ("base-py311") or a Docker image reference; ignored by LocalSandbox
    jobs_path: Path  # JSON Lines jobs for `python -m tracer batch` (schemas/batch_jobs.md)
    output_path: Path  # the stream ends up here (appended; a re-run resumes it)
    backend: str = "auto"
    program_timeout_s: float = DEFAULT_PROGRAM_TIMEOUT_S
    unit_timeout_s: float = 600.0
    max_events: int = DEFAULT_MAX_EVENTS
    max_value_chars: int = DEFAULT_MAX_VALUE_CHARS
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: float = DEFAULT_CPUS
    pids: int = DEFAULT_PIDS
    tmpfs_mb: int = DEFAULT_TMPFS_MB

    def __post_init__(self) -> None:
        for name in ("jobs_path", "output_path"):  # relative to the caller's cwd; mounts need absolute
            object.__setattr__(self, name, Path(getattr(self, name)).absolute())
        for name in ("run_id", "unit_id"):
            value = getattr(self, name)
            if not value or any(c in value for c in "/\\\0\n"):
                raise ConfigError(
                    f"UnitRequest.{name} must be a non-empty name without slashes: {value!r}"
                )
        if self.attempt < 0:
            raise ConfigError(f"UnitRequest.attempt must be >= 0, got {self.attempt}")
        for name in ("program_timeout_s", "unit_timeout_s", "cpus"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"UnitRequest.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_events", "max_value_chars", "memory_mb", "pids", "tmpfs_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"UnitRequest.{name} must be > 0, got {getattr(self, name)}")
        if self.memory_mb < 32:
            raise ConfigError(
                f"UnitRequest.memory_mb must be >= 32 (Python itself needs that much), got {self.memory_mb}"
            )

    def runner_args(self, jobs: str, out: str) -> list[str]:
        """Arguments after `python` that run this unit's jobs through the batch runner."""
        return [
            "-m", "tracer", "batch", jobs,
            "--out", out,
            "--timeout", _num(self.program_timeout_s),
            "--backend", self.backend,
            "--max-events", str(self.max_events),
            "--max-value-chars", str(self.max_value_chars),
            "--memory-mb", str(self.program_memory_mb),
        ]  # fmt: skip

    @property
    def program_memory_mb(self) -> int:
        """Each program's own limit (the runner's RLIMIT_AS budget), below the sandbox's."""
        return max(16, self.memory_mb - RUNNER_MEMORY_MB)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class UnitOutcome:
    """Small metadata about a finished unit (the traces themselves are in the output file)."""

    exit_code: int
    wall_time_s: float
    sandbox: str  # "docker" or "local"
    container_id: str | None = None
    image_id: str | None = None  # the resolved image (Docker image id), None for local
    oom_killed: bool = False  # the engine saw an OOM kill in the container (a program's, usually)
    stderr_tail: str = ""  # the end of the batch runner's own stderr
    startup_s: float = 0.0  # of wall_time_s: creating and starting the container / process
    teardown_s: float = 0.0  # after wall_time_s: reading its state, removing it, moving the stream
    details: dict[str, str] = field(default_factory=dict)


class Sandbox(ABC):
    """Runs units. Use as a context manager, or call `close()`; one instance per process is enough."""

    kind: str = "abstract"

    @abstractmethod
    def run_unit(self, req: UnitRequest) -> UnitOutcome:
        """Run the unit to its end; raise a `SandboxError` subclass on infrastructure failure."""

    def reap(self, run_id: str | None = None) -> int:
        """Remove what dead runs left behind (all of `run_id`'s if given); return how many."""
        return 0

    def close(self) -> None:
        """Release resources (engine connections); nothing to release by default."""
        return None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def tail(text: bytes | str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The last `limit` characters of `text`, decoded leniently."""
    if isinstance(text, bytes):
        text = text[-limit * 4 :].decode("utf-8", errors="replace")
    return text[-limit:]


def open_regular(path: Path) -> BinaryIO | None:
    """`path` opened for reading if it is a regular file; None if it is missing or anything else.

    For files a sandbox wrote: a program that runs unconfined (no Landlock) can put a link to a
    host file, a FIFO (which would block the reader for good) or a device in their place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # ELOOP: the last component is a symbolic link
            raise
        log.warning("%s is a symbolic link, not a file: left unread", path)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        log.warning("%s is not a regular file: left unread", path)
        return None
    return os.fdopen(fd, "rb")


def precompile_tracer(tracer_dir: Path = TRACER_DIR) -> bool:
    """Write the tracer's bytecode (for this interpreter's Python version) beside its sources.

    The sandboxes mount the tracer read-only and set PYTHONDONTWRITEBYTECODE, so without it every
    batch runner compiles the tracer from source: ~60 of its ~160 ms of start-up CPU in a
    base-py311 container. An image whose Python has this interpreter's minor version reads these
    files; others compile as before. Best effort: False where the folder is not writable.
    """
    import compileall

    try:
        return bool(compileall.compile_dir(str(tracer_dir), quiet=2))
    except OSError:
        return False


def host_python() -> str:
    """The interpreter LocalSandbox uses by default (the host's own)."""
    return sys.executable
