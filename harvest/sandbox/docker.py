"""`DockerSandbox`: one locked-down container per unit, running the whole unit through the batch runner.

Every container: no network, read-only root, a size-capped tmpfs /tmp, a non-root user, no
capabilities, no-new-privileges, pids/memory(+swap)/CPU limits, an init process, the tracer mounted
read-only and one private writable folder (/out: the unit's jobs and stream). Containers carry labels
naming run, unit, attempt and owner process, are removed (with volumes) whatever happens, and `reap`
removes the ones whose owner died (SIGKILLed driver or worker).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from harvest.docker_client import (
    engine_address,
    engine_available,
    engine_timeout_s,
    probe_timeout_s,
    root_cause,
    timed_out,
)
from harvest.errors import (
    ContainerStartError,
    EngineError,
    ImageNotFound,
    RunnerFailed,
    SandboxEngineError,
    UnitDeadlineExceeded,
)
from harvest.sandbox.base import (
    DETERMINISTIC_ENV,
    TRACER_DIR,
    Sandbox,
    UnitOutcome,
    UnitRequest,
    open_regular,
    precompile_tracer,
    tail,
)
from images.cache import record_use
from tracer._batch_output import STARTED_SUFFIX
from tracer.env import NEWEST_TESTED

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger(__name__)

LABEL_RUN = "worldtrace.run"
LABEL_UNIT = "worldtrace.unit"
LABEL_ATTEMPT = "worldtrace.attempt"
LABEL_OWNER = "worldtrace.owner"  # "host:pid:start-time" of the process that created it
LABEL_IMAGE = "worldtrace.image"

TRACER_MOUNT = "/opt/worldtrace/tracer"
OUT_MOUNT = "/out"
SANDBOX_HOSTNAME = "sandbox"  # every container's host name (see _container_options)
# Directories only the programs write to: the batch runner empties them before each program, and
# confines each program (Landlock) to writing there only, without signals to the runner.
# /dev/mqueue: POSIX message queues (the container's own); --private-ipc: System V IPC objects.
SCRATCH_ARGS = ("--scratch", "/tmp", "--scratch", "/dev/shm", "--scratch", "/dev/mqueue", "--confine", "--private-ipc")
CONTAINER_USER = "1000:1000"  # the catalog images' 'runner'; used when the host side runs as root
REAP_INTERVAL_S = 300.0
# The most of the unit folder's run record (one line of ~1 KB per batch run) the host copies out.
MAX_RUN_RECORD_BYTES = 1 << 20
# The batch runner's own stdout/stderr (not the programs': those go to the stream) is capped.
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}}
# What an image of your own (not in the catalog) must run: its Python's version, then the tracer's
# batch runner imported (written for the oldest Python, so that an old one reaches the version line).
IMAGE_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); sys.stdout.flush(); import tracer.batch"
MIN_PYTHON = (3, 8)


def _process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def owner_label(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start_time(pid)}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owner process of a container still runs; None when it is on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return _process_start_time(pid) == started


class DockerSandbox(Sandbox):
    """Runs each unit in one fresh container on the local Docker engine."""

    kind = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        tracer_dir: Path = TRACER_DIR,
        reap_on_start: bool = True,
    ) -> None:
        from harvest.docker_client import get_client

        try:
            # Control calls time out after `engine_timeout_s()`: a stalled engine is an engine error
            # within a minute, not after the SDK's 15 (container waits pass their own timeout).
            self.client = client or get_client(engine_timeout_s())
        except EngineError as exc:  # it says what to do; a sandbox raises SandboxErrors
            raise SandboxEngineError(str(exc)) from exc
        self.tracer_dir = tracer_dir.resolve()
        if not (self.tracer_dir / "__main__.py").is_file():
            raise ContainerStartError(
                f"no tracer package at {self.tracer_dir} (missing __main__.py)"
            )
        precompile_tracer(self.tracer_dir)  # read by every runner whose image has our Python
        self.owner = owner_label()
        self._lock = threading.Lock()
        self._active: dict[str, Container] = {}
        self._last_reap = 0.0
        # The engine failed a health probe after a control call timed out: the next unit probes it
        # first (seconds) instead of waiting out another control call's timeout.
        self._engine_stalled = False
        self._catalog: dict[str, Any] | None = None
        if reap_on_start:
            self.reap()

    # -- images ---------------------------------------------------------------------------------
    def catalog(self) -> dict[str, Any]:
        """The image catalog, read once."""
        if self._catalog is None:
            from images.catalog import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    def resolve_image(self, image: str) -> str:
        """A catalog name's recipe-hash tag; anything else is taken as a Docker image reference
        (an image of your own)."""
        spec = self.catalog().get(image)
        return str(spec.tag) if spec is not None else image

    def _inspect_image(self, ref: str, name: str) -> dict[str, Any]:
        """The engine's description of image `ref` (catalog name `name`): its id and config."""
        from docker.errors import APIError, DockerException
        from docker.errors import ImageNotFound as DockerImageNotFound
        from requests.exceptions import RequestException

        try:
            return dict(self.client.api.inspect_image(ref))
        except DockerImageNotFound:
            hint = (
                f"build it with `worldtrace images build {name}`"
                if self._catalog is None or name in self._catalog
                else f"it is not in the image catalog either (the catalog has: {', '.join(self._catalog)})"
            )
            raise ImageNotFound(
                f"image {name!r} ({ref}) is not on the Docker engine at {engine_address()}"
                f"{_on_host()}; {hint}"
            ) from None
        except APIError as exc:
            raise SandboxEngineError(f"cannot inspect image {ref}: {exc}") from exc
        except (DockerException, RequestException) as exc:
            raise self._engine_error(f"inspecting image {ref}", exc) from exc

    def missing_images(self, images: Sequence[str]) -> list[str]:
        """The names of `images` that are not on this engine."""
        missing = []
        for image in images:
            try:
                self._inspect_image(self.resolve_image(image), image)
            except ImageNotFound:
                missing.append(image)
        return missing

    def image_ids(self, images: Sequence[str]) -> dict[str, str]:
        """The engine's image id of each of `images` (a catalog name: of its recipe-hash tag)."""
        return {image: str(self._inspect_image(self.resolve_image(image), image)["Id"]) for image in images}

    def image_problems(self, images: Sequence[str], backend: str = "auto") -> list[str]:
        """What keeps units of `images` from running on this engine: images it does not have, and
        images of your own (not in the catalog) whose Python cannot run the tracer (see
        `check_own_image`). Empty when nothing does."""
        missing = self.missing_images(images)
        problems = [describe_missing_images(missing)] if missing else []
        for image in images:
            if image not in missing and image not in self.catalog():
                problem = self.check_own_image(image, backend)
                if problem:
                    problems.append(problem)
        return problems

    def check_own_image(self, image: str, backend: str = "auto") -> str:
        """Run one short container of `image` (an image the catalog does not describe) under the
        sandbox's limits to find out what its `python3` is: '' when it can run the tracer with
        `backend`, else what is wrong (no python3 on its PATH, a Python older than the tracer
        supports, a tracer that does not import there, no sys.monitoring for --backend monitoring)."""
        from docker.errors import APIError, DockerException
        from docker.types import Mount
        from requests.exceptions import RequestException

        info = self._inspect_image(image, image)
        container = None
        try:
            container = self.client.containers.create(
                info["Id"],
                **_locked_down(info, tmpfs_mb=16, pids=64, memory_mb=256),
                entrypoint=["python3", "-c", IMAGE_PROBE],
                mounts=[Mount(TRACER_MOUNT, str(self.tracer_dir), type="bind", read_only=True)],
                labels={LABEL_RUN: "image-check", LABEL_OWNER: self.owner, LABEL_IMAGE: image},
            )
            with self._lock:
                self._active[container.id] = container
            container.start()
            code = int(container.wait(timeout=max(60.0, engine_timeout_s())).get("StatusCode", -1))
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        except APIError as exc:
            return f"image {image!r}: a container of it did not start: {exc.explanation or exc}"
        except (DockerException, RequestException) as exc:
            raise self._engine_error(f"checking the Python of image {image}", exc) from exc
        finally:
            if container is not None:
                self._remove(container)
        return _own_image_problem(image, code, stdout, stderr, backend)

    # -- running --------------------------------------------------------------------------------
    def run_unit(self, req: UnitRequest) -> UnitOutcome:
        from docker.errors import APIError, DockerException
        from requests.exceptions import RequestException

        if self._engine_stalled:
            if not engine_available():
                raise SandboxEngineError(
                    f"the Docker engine at {engine_address()}{_on_host()} does not answer a ping within "
                    f"{probe_timeout_s():g} s (it stopped answering during an earlier unit): it is stalled"
                )
            self._engine_stalled = False
        if time.monotonic() - self._last_reap > REAP_INTERVAL_S:
            self.reap()
        ref = self.resolve_image(req.image)
        image = self._inspect_image(ref, req.image)
        image_id = str(image["Id"])
        record_use(ref)  # for the node's least-recently-used image eviction
        unit_dir = _unit_dir(req.output_path)
        _prepare_unit_dir(unit_dir, req)
        container: Container | None = None
        creating = False
        started = time.monotonic()
        try:
            with _sigterm_as_exit():
                try:
                    creating = True
                    container = self.client.containers.create(
                        image_id, **self._container_options(req, unit_dir, ref, image)
                    )
                    with self._lock:
                        self._active[container.id] = container
                    container.start()
                    startup = time.monotonic() - started
                except APIError as exc:  # the engine answered: it could not make or start it
                    raise ContainerStartError(
                        f"unit {req.unit_id}: container did not start: {exc.explanation or exc}"
                    ) from exc
                except (DockerException, RequestException) as exc:  # the engine did not answer
                    raise self._engine_error(f"starting the container of unit {req.unit_id}", exc) from exc
                exit_code = self._wait(container, req)
                wall = time.monotonic() - started
                try:
                    container.reload()
                    state = container.attrs["State"]
                    stderr_tail = tail(container.logs(stdout=True, stderr=True, tail=200))
                except APIError as exc:
                    raise SandboxEngineError(
                        f"unit {req.unit_id}: cannot inspect its container: {exc}"
                    ) from exc
                except (DockerException, RequestException) as exc:
                    raise self._engine_error(f"inspecting the container of unit {req.unit_id}", exc) from exc
        finally:
            teardown_started = time.monotonic()
            if self._engine_stalled:
                # It just failed a probe: a removal would only wait out another timeout. The
                # container's labels name the run: the run's end (or the next start) removes it.
                log.warning("unit %s: leaving its container to be removed later (the engine is stalled)", req.unit_id)
            elif container is not None:
                self._remove(container)
            elif creating:  # interrupted inside `create`: the engine may have made it anyway
                self._remove_attempt(req)
            _finish_unit_dir(unit_dir, req)
            teardown = time.monotonic() - teardown_started
        oom = bool(state.get("OOMKilled"))
        if exit_code != 0:
            why = (
                "its container was killed by the memory limit (OOM)"
                if oom and exit_code == 137
                else (f"exited with code {exit_code}")
            )
            raise RunnerFailed(
                f"the batch runner of unit {req.unit_id} {why}: "
                f"{stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else '(no output)'}",
                exit_code=exit_code,
                stderr_tail=stderr_tail,
            )
        return UnitOutcome(
            exit_code=exit_code,
            wall_time_s=wall,
            sandbox=self.kind,
            container_id=container.id if container else None,
            image_id=image_id,
            oom_killed=oom,
            stderr_tail=stderr_tail,
            startup_s=startup,
            teardown_s=teardown,
            details={"image": ref},
        )

    def _container_options(self, req: UnitRequest, unit_dir: Path, ref: str, image: dict[str, Any]) -> dict[str, Any]:
        from docker.types import LogConfig, Mount, Ulimit

        return {
            **_locked_down(image, req.tmpfs_mb, req.pids, req.memory_mb),
            # The runner, whatever ENTRYPOINT and CMD the image has (an image of your own may have
            # an entrypoint that runs its application, or a shell script, first).
            "entrypoint": ["python3"],
            "command": [
                *req.runner_args(f"{OUT_MOUNT}/jobs.jsonl", f"{OUT_MOUNT}/stream.jsonl"),
                # each program starts with them empty, whatever the one before it left there
                *SCRATCH_ARGS,
            ],
            "nano_cpus": int(req.cpus * 1e9),
            "ulimits": [
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="nofile", soft=1024, hard=1024),
            ],
            "mounts": [
                Mount(TRACER_MOUNT, str(self.tracer_dir), type="bind", read_only=True),
                Mount(OUT_MOUNT, str(unit_dir), type="bind", read_only=False),
                # over it, the jobs read-only: a program cannot rewrite what runs after it
                Mount(
                    f"{OUT_MOUNT}/jobs.jsonl",
                    str(unit_dir / "jobs.jsonl"),
                    type="bind",
                    read_only=True,
                ),
            ],
            # Not the container id, which Docker would make the host name (and $HOSTNAME): a
            # program that reads it would trace differently in every run.
            "hostname": SANDBOX_HOSTNAME,
            "labels": {
                LABEL_RUN: req.run_id,
                LABEL_UNIT: req.unit_id,
                LABEL_ATTEMPT: str(req.attempt),
                LABEL_OWNER: self.owner,
                LABEL_IMAGE: req.image,
            },
            "log_config": LogConfig(**LOG_CONFIG),
            "stdin_open": False,
            "auto_remove": False,  # we read State.OOMKilled and the logs first, then remove
        }

    def _wait(self, container: Container, req: UnitRequest) -> int:
        """Exit code of the container; at the unit deadline the host kills it.

        Waited for in slices of `engine_timeout_s()`, with a health probe between two: an engine
        that stalls while the unit runs is known within a slice, not at the unit's deadline; one
        that answers the probe is only waiting, as it should, for the container."""
        from docker.errors import APIError, DockerException
        from requests.exceptions import RequestException

        deadline = time.monotonic() + req.unit_timeout_s
        piece = engine_timeout_s()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # The engine did not report an exit in time: the unit overran its deadline.
                raise UnitDeadlineExceeded(
                    f"unit {req.unit_id} ran past its deadline of {req.unit_timeout_s:g} s; container killed"
                )
            waited = min(piece, remaining)
            try:
                # A wait for a container that has exited answers at once, so a slice may end anywhere.
                result = container.wait(timeout=waited)
                return int(result.get("StatusCode", -1))
            except APIError as exc:
                raise SandboxEngineError(f"unit {req.unit_id}: waiting for its container failed: {exc}") from exc
            except (DockerException, RequestException) as exc:
                if not timed_out(exc):  # e.g. the daemon died mid-response
                    raise self._engine_error(f"unit {req.unit_id} was running", exc) from exc
                if not engine_available():
                    self._engine_stalled = True
                    raise SandboxEngineError(
                        f"the Docker engine at {engine_address()}{_on_host()} did not answer while unit "
                        f"{req.unit_id} was running: no ping within {probe_timeout_s():g} s after a wait of "
                        f"{waited:g} s: it is stalled"
                    ) from exc

    def _engine_error(self, doing: str, exc: BaseException) -> SandboxEngineError:
        """The error for a control call the engine did not answer: refused, reset, or timed out.

        A timeout is told apart by a health probe: an engine that answers no ping either is stalled
        (and the next unit probes it before anything else); one that answers is overloaded or
        deadlocked, and $WORLDTRACE_ENGINE_TIMEOUT_S may be too short for it."""
        if not timed_out(exc):
            return SandboxEngineError(_lost_engine(doing, exc))
        timeout = self.client.api.timeout
        within = f" within {timeout:g} s" if isinstance(timeout, int | float) else ""
        if engine_available():
            state = (
                "it answers a ping, so it is overloaded or deadlocked; if it is only slow, raise "
                "$WORLDTRACE_ENGINE_TIMEOUT_S"
            )
        else:
            self._engine_stalled = True
            state = f"nor a ping within {probe_timeout_s():g} s: it is stalled"
        return SandboxEngineError(
            f"the Docker engine at {engine_address()}{_on_host()} did not answer{within} while {doing} ({state})"
        )

    def _remove(self, container: Container) -> bool:
        """Kill and remove a container and its anonymous volumes; engine errors are logged.

        False when the engine did not answer (refused, reset, timed out): removing more is futile."""
        from docker.errors import DockerException, NotFound
        from requests.exceptions import RequestException

        answered = True
        try:
            container.remove(force=True, v=True)
        except NotFound:
            pass
        except (DockerException, RequestException) as exc:
            # Not raised: the unit's own error says what went wrong, and its stream must still be
            # moved back. `reap` removes it later (its labels name the run and the owner).
            log.warning("could not remove container %s: %s", container.short_id, root_cause(exc))
            answered = isinstance(exc, DockerException)  # an HTTP error: it answered, with a refusal
        with self._lock:
            self._active.pop(container.id, None)
        return answered

    def _remove_attempt(self, req: UnitRequest) -> None:
        """Remove this process's containers of one unit attempt, found by their labels."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        labels = {
            LABEL_RUN: req.run_id,
            LABEL_UNIT: req.unit_id,
            LABEL_ATTEMPT: str(req.attempt),
            LABEL_OWNER: self.owner,
        }
        try:
            found = self.client.containers.list(
                all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}, ignore_removed=True
            )
        except (DockerException, RequestException) as exc:
            log.warning("could not look for the containers of unit %s: %s", req.unit_id, root_cause(exc))
            return
        for container in found:
            if not self._remove(container):
                return

    # -- cleanup --------------------------------------------------------------------------------
    def containers(self, run_id: str | None = None) -> list[Container]:
        """Every worldtrace container on the engine (of `run_id` if given), running or not.

        The SDK lists, then inspects each container: one removed in between (by its own unit,
        another run, another host's reaper) is skipped, not an engine error."""
        label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
        return list(self.client.containers.list(all=True, filters={"label": label}, ignore_removed=True))

    def reap(self, run_id: str | None = None) -> int:
        """Remove containers of `run_id` (all of them), or else of dead owner processes on this host."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        self._last_reap = time.monotonic()
        try:
            found = self.containers(run_id)
        except (DockerException, RequestException) as exc:
            raise self._engine_error("listing containers to remove", exc) from exc
        removed = 0
        for container in found:
            labels = container.labels
            if run_id is None:
                owner = labels.get(LABEL_OWNER, "")
                if owner == self.owner or owner_alive(owner) is not False:
                    continue  # ours, alive, or on another host: not ours to judge
            log.info(
                "removing container %s of run %s unit %s (owner %s)",
                container.short_id, labels.get(LABEL_RUN), labels.get(LABEL_UNIT), labels.get(LABEL_OWNER),
            )  # fmt: skip
            if not self._remove(container):
                raise SandboxEngineError(
                    f"the Docker engine at {engine_address()}{_on_host()} stopped answering while removing "
                    f"containers ({removed} removed)"
                )
            removed += 1
        return removed

    def close(self) -> None:
        """Remove any container still running for this sandbox (e.g. after an interrupt)."""
        with self._lock:
            active = list(self._active.values())
        for container in active:
            if not self._remove(container):
                return  # the engine does not answer: `reap` removes them later


def _locked_down(image: dict[str, Any], tmpfs_mb: int, pids: int, memory_mb: int) -> dict[str, Any]:
    """Container options that every container of the sandbox has (a unit's, an image check's):
    no network, a read-only root and a size-capped /tmp, a non-root user, no capabilities nor new
    privileges, pids and memory limits (no swap), an init process, the image's environment and
    PYTHONPATH after ours, and none of the image's HEALTHCHECK (which the engine would run inside
    the sandbox beside the programs) or writable VOLUMEs."""
    return {
        "user": CONTAINER_USER if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}",
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {**_image_volumes(image), "/tmp": f"rw,nosuid,nodev,size={tmpfs_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": pids,
        "mem_limit": f"{memory_mb}m",
        "memswap_limit": f"{memory_mb}m",  # equal: no swap
        "init": True,
        "environment": {**_image_env(image, DETERMINISTIC_ENV), "HOME": "/tmp", "TMPDIR": "/tmp"},
        "working_dir": "/tmp",
        "healthcheck": {"test": ["NONE"]},
        "detach": True,
    }


def _image_env(image: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """`env` with PYTHONPATH set to the tracer's folder, followed by the image's own PYTHONPATH
    (an image of your own may keep its project's modules there). The image's other variables stay
    as they are: the engine sets them, and `env` overrides them."""
    path = str(Path(TRACER_MOUNT).parent)
    for item in (image.get("Config") or {}).get("Env") or ():
        name, _, value = item.partition("=")
        if name == "PYTHONPATH" and value:
            path = f"{path}:{value}"
    return {**env, "PYTHONPATH": path}


def _image_volumes(image: dict[str, Any]) -> dict[str, str]:
    """An empty read-only tmpfs over each of the image's VOLUMEs (an image of your own may declare
    some): the engine would make each a writable anonymous volume, a writable place besides /tmp
    and /out that is not emptied between programs (what one wrote, the next read) nor capped in
    size. Docker mounts no anonymous volume read-only, so what the image put there is not seen.
    Not the paths the sandbox mounts itself."""
    ours = {"/tmp", OUT_MOUNT, TRACER_MOUNT}
    paths = sorted((image.get("Config") or {}).get("Volumes") or {})
    return {path: "ro,nosuid,nodev,size=1k" for path in paths if path.rstrip("/") not in ours}


def _own_image_problem(image: str, exit_code: int, stdout: str, stderr: str, backend: str) -> str:
    """What the probe of an image of your own (IMAGE_PROBE) says is wrong with it, or ''. The
    version is the first line on stdout (a warning the interpreter prints first goes to stderr)."""
    output = stderr.strip() or stdout.strip()
    lines = output.splitlines()
    first = (stdout.strip().splitlines() or [""])[0].strip()
    version = tuple(int(p) for p in first.split(".")[:2]) if re.fullmatch(r"\d+\.\d+\.\d+\S*", first) else None
    if exit_code == 127 and version is None:
        return f"image {image!r} has no `python3` on its PATH (the batch runner runs as `python3 -m tracer`)"
    if version is None:
        return f"image {image!r}: `python3` did not say its version (exit code {exit_code}): {tail(output).strip()}"
    if version < MIN_PYTHON:
        return (
            f"image {image!r} has Python {first}; the tracer needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
        )
    if exit_code != 0:
        last = lines[-1].strip() if lines else ""
        return f"image {image!r}: the tracer does not import under its Python {first}: {last}"
    if backend == "monitoring" and version < (3, 12):
        return f"image {image!r} has Python {first}; --backend monitoring needs 3.12+ (sys.monitoring)"
    if version > NEWEST_TESTED:
        log.warning("image %r has Python %s; the tracer is tested on 3.8 to %d.%d", image, first, *NEWEST_TESTED)
    return ""


def describe_missing_images(missing: Sequence[str]) -> str:
    """What to say about images that are not on this engine: how to build them, or that the
    image catalog does not know them either."""
    from images.catalog import load_catalog

    catalog = load_catalog()
    unknown = [image for image in missing if image not in catalog]
    if unknown:
        return (
            f"image(s) neither in the image catalog nor on the Docker engine at {engine_address()}: "
            f"{', '.join(unknown)}; the catalog has: {', '.join(catalog)} (see `worldtrace images list`)"
        )
    return (
        f"image(s) not built on the Docker engine at {engine_address()}: {', '.join(missing)}; "
        f"build with `worldtrace images build {' '.join(missing)}`"
    )


def _lost_engine(doing: str, exc: BaseException) -> str:
    """What to say when the engine stopped answering (a daemon that died, restarts or stalls)."""
    return f"the Docker engine at {engine_address()}{_on_host()} did not answer while {doing}: {root_cause(exc)}"


def _on_host() -> str:
    return f" on {socket.gethostname()}"


def _unit_dir(output_path: Path) -> Path:
    """The unit's private folder beside its output; the only host folder the container can write."""
    return output_path.parent / f".{output_path.name}.sandbox"


def _prepare_unit_dir(unit_dir: Path, req: UnitRequest) -> None:
    """Lay out jobs.jsonl and the stream so far (moved, not copied) in the unit's folder."""
    req.output_path.parent.mkdir(parents=True, exist_ok=True)
    leftover = unit_dir / "stream.jsonl"
    if os.path.lexists(leftover):
        # A previous attempt died before moving its stream back (SIGKILL): keep what it traced.
        if not req.output_path.exists():
            _take_file(leftover, req.output_path)
        else:
            log.warning("discarding %s: %s exists", leftover, req.output_path)
    shutil.rmtree(unit_dir, ignore_errors=True)
    unit_dir.mkdir(mode=0o700)
    shutil.copyfile(req.jobs_path, unit_dir / "jobs.jsonl")
    stream = unit_dir / "stream.jsonl"
    if req.output_path.exists():
        os.replace(req.output_path, stream)
    else:
        stream.touch()
    if os.geteuid() == 0:
        # The container runs as uid 1000, the host side as root: hand the folder over for the run.
        uid, gid = (int(x) for x in CONTAINER_USER.split(":"))
        for path in (unit_dir, unit_dir / "jobs.jsonl", stream):
            os.chown(path, uid, gid, follow_symlinks=False)


def _finish_unit_dir(unit_dir: Path, req: UnitRequest) -> None:
    """Move the stream back to output_path (owned by us again), append the runner's run record
    beside it (OUTPUT.runs.jsonl), move its list of started programs there (OUTPUT.started), and
    drop the unit's folder.

    The container wrote the folder: only regular files are taken (never a link to a host file,
    a FIFO, a device), and of the run record no more than MAX_RUN_RECORD_BYTES."""
    if _take_file(unit_dir / "stream.jsonl", req.output_path) and os.geteuid() == 0:
        os.chown(req.output_path, os.getuid(), os.getgid(), follow_symlinks=False)
    # the batch runner's run record (counts, CPU time)
    src = open_regular(unit_dir / "stream.jsonl.runs.jsonl")
    if src is not None:
        with src, open(f"{req.output_path}.runs.jsonl", "ab") as dst:
            dst.write(src.read(MAX_RUN_RECORD_BYTES))
    # the programs the runner started, in order
    _take_file(unit_dir / f"stream.jsonl{STARTED_SUFFIX}", Path(f"{req.output_path}{STARTED_SUFFIX}"))
    shutil.rmtree(unit_dir, ignore_errors=True)


def _take_file(src: Path, dst: Path) -> bool:
    """Move `src`, from the unit's folder, to `dst` if it is a regular file; else drop it.

    Checked once moved, in the host's own folder, where a container still running (its engine
    stalled) can no longer swap it for something else."""
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        return False
    except OSError as exc:  # a folder in its place
        log.warning("%s is not a regular file (%s): left out", src, exc.strerror)
        return False
    if stat.S_ISREG(os.lstat(dst).st_mode):
        return True
    log.warning("%s is not a regular file: left out", src)
    if stat.S_ISDIR(os.lstat(dst).st_mode):
        shutil.rmtree(dst, ignore_errors=True)
    else:
        os.unlink(dst)
    return False


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """In the main thread, turn SIGTERM into SystemExit so that `finally` removes the container."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield  # someone else handles SIGTERM (Ray, the CLI): leave it to them
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
