"""`LocalSandbox`: the batch runner as a host subprocess, for trusted code and machines without Docker.

No isolation beyond what the batch runner itself does (a fork per program, its per-program deadline):
use it only for programs you trust. The unit deadline is enforced here by killing the runner's
whole process group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harvest.errors import ContainerStartError, RunnerFailed, UnitDeadlineExceeded
from harvest.sandbox.base import (
    DETERMINISTIC_ENV,
    TRACER_DIR,
    Sandbox,
    UnitOutcome,
    UnitRequest,
    host_python,
    precompile_tracer,
    tail,
)

log = logging.getLogger(__name__)


class LocalSandbox(Sandbox):
    """Runs `python -m tracer batch` on the host, with the repository's tracer."""

    kind = "local"

    def __init__(self, python: str | None = None, tracer_dir: Path = TRACER_DIR) -> None:
        self.python = python or host_python()
        self.tracer_dir = tracer_dir
        if self.python == host_python():
            precompile_tracer(tracer_dir)  # the runner does not write bytecode itself

    def run_unit(self, req: UnitRequest) -> UnitOutcome:
        req.output_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"worldtrace-{req.unit_id}-") as tmp:
            work = Path(tmp)
            # Only the tracer package on the path (not the whole repository), as in a container.
            (work / "lib").mkdir()
            (work / "lib" / "tracer").symlink_to(self.tracer_dir, target_is_directory=True)
            (work / "cwd").mkdir()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(work / "cwd"),
                "TMPDIR": str(work / "cwd"),
                "PYTHONPATH": str(work / "lib"),
                **DETERMINISTIC_ENV,
            }
            cmd = [
                self.python,
                *req.runner_args(str(req.jobs_path.resolve()), str(req.output_path.resolve())),
                # the programs' own folder (working directory, HOME, TMPDIR): empty for each program
                "--scratch", str(work / "cwd"),
            ]  # fmt: skip
            log.debug("unit %s: %s", req.unit_id, cmd)
            stderr_path = work / "runner.stderr"
            started = time.monotonic()
            with stderr_path.open("wb") as stderr:
                try:
                    proc = subprocess.Popen(
                        cmd,
                        cwd=work / "cwd",
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=stderr,
                        stderr=stderr,
                        start_new_session=True,  # its own process group: we kill all of it
                    )
                except OSError as exc:
                    raise ContainerStartError(
                        f"cannot start the batch runner {cmd[0]}: {exc}"
                    ) from exc
                startup = time.monotonic() - started
                try:
                    exit_code = proc.wait(timeout=req.unit_timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    raise UnitDeadlineExceeded(
                        f"unit {req.unit_id} ran past its deadline of {req.unit_timeout_s:g} s; killed"
                    ) from None
                except BaseException:  # Ctrl-C, SIGTERM turned into an exception: leave nothing
                    _kill_group(proc)
                    raise
                finally:
                    _kill_group(proc)  # forked programs the runner left behind, if any
            wall = time.monotonic() - started
            stderr_tail = tail(stderr_path.read_bytes())
        if exit_code != 0:
            raise RunnerFailed(
                f"the batch runner of unit {req.unit_id} exited with code {exit_code}: "
                f"{stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else '(no stderr)'}",
                exit_code=exit_code,
                stderr_tail=stderr_tail,
            )
        return UnitOutcome(
            exit_code=exit_code,
            wall_time_s=wall,
            sandbox=self.kind,
            stderr_tail=stderr_tail,
            startup_s=startup,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group the runner leads, then reap the runner."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone
    proc.wait()
