"""The host side's exceptions: one root, `WorldtraceError`, with one subclass per kind of failure.

A traced program's own failure is never an exception here: it is a row with a status. These
exceptions are for the infrastructure (engine, images, sandboxes, configuration, storage).
"""

from __future__ import annotations


class WorldtraceError(Exception):
    """Root of every error the host side raises on purpose."""


class ConfigError(WorldtraceError):
    """Bad user input or configuration (unknown image name, bad catalog entry, bad option)."""


class EngineError(WorldtraceError):
    """The Docker engine is unreachable or answered with an error."""

    retryable = True


class ImageError(WorldtraceError):
    """An image could not be built or found."""


class ImageBuildError(ImageError):
    """Building an image failed; `log_path` holds the build log."""

    def __init__(self, message: str, log_path: str | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


class StorageError(WorldtraceError):
    """The harvest's files could not be written (a full disk, a read-only or removed folder)."""


class SandboxError(WorldtraceError):
    """A sandbox could not run a unit for an infrastructure reason (never a program's failure).

    `retryable` says whether running the same unit again may succeed.
    """

    retryable = True


class ImageNotFound(SandboxError, ImageError):
    """The unit's image is not present on this engine (build it with `worldtrace images build`)."""

    retryable = False


class SandboxEngineError(SandboxError, EngineError):
    """The engine failed while creating, starting, waiting on or removing the unit's container."""


class ContainerStartError(SandboxError):
    """The unit's container (or local runner process) could not be started."""


class UnitDeadlineExceeded(SandboxError):
    """The whole unit ran past its deadline and was killed by the host."""


class AttemptSuperseded(SandboxError):
    """A later attempt of the unit runs it, or has committed it: this one (a worker given up for
    lost that woke up: a frozen or cut-off node) neither commits nor removes anything."""


class RunnerFailed(SandboxError):
    """The batch runner itself exited abnormally (not a program: the runner, e.g. bad jobs file)."""

    def __init__(self, message: str, exit_code: int, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail

    def __reduce__(self) -> tuple[type[RunnerFailed], tuple[str, int, str]]:
        # Ray sends a task's exception to the driver pickled; the default rebuilds it from
        # `args` (the message alone), which fails, and the driver saw "Failed to deserialize".
        return type(self), (str(self), self.exit_code, self.stderr_tail)
