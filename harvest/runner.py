"""Run work units as Ray tasks: bounded in flight, retried for infrastructure failures only.

Each task runs one unit (`harvest.unit.execute_unit`) and returns its small metadata; traces go
from the sandbox straight to a shard on disk, never through Ray's object store. With the Docker
sandbox every task also takes one `worldtrace_docker` resource, which a node offers only if it
has a Docker engine, so its count caps the concurrent containers per node.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harvest.errors import SandboxError, WorldtraceError
from harvest.plan import HarvestSettings, WorkUnit
from harvest.unit import UnitResult, execute_unit

log = logging.getLogger(__name__)

DOCKER_RESOURCE = "worldtrace_docker"
TASK_RETRIES = 3  # for worker deaths and retryable sandbox errors; program failures are rows
OBJECT_STORE_BYTES = 128 * 1024 * 1024  # only metadata travels through it
CONNECT_TIMEOUT_S = 10.0  # to reach a cluster's GCS port before handing the address to Ray


class UnitFailed(WorldtraceError):
    """A unit failed for a reason that running it again cannot fix (e.g. its image is missing)."""


@dataclass(frozen=True)
class RayOptions:
    """Where to run: a cluster address, or an embedded local Ray of `num_cpus` CPUs."""

    address: str | None = None
    num_cpus: int | None = None  # embedded Ray only; default: this machine's CPUs
    docker_slots: int | None = None  # embedded Ray only: concurrent containers; default num_cpus


def start_ray(options: RayOptions, sandbox: str) -> bool:
    """Connect to (or start) Ray; return True if this process started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    # Our workers import the project from the driver's environment (editable install or cwd).
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
    if options.address:
        _check_reachable(options.address)
        try:
            ray.init(address=options.address, namespace="worldtrace", **quiet)  # type: ignore[arg-type]
        except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
            raise WorldtraceError(
                f"cannot connect to the Ray cluster at {options.address}: {exc} (a cluster with token "
                "authentication needs RAY_AUTH_MODE=token and its token, see Ray's token-auth docs)"
            ) from exc
        return True
    # Ray warns on every start that it enabled token authentication; keep the harvest's output clean.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    cpus = options.num_cpus or os.cpu_count() or 1
    resources = {DOCKER_RESOURCE: float(options.docker_slots or cpus)} if sandbox == "docker" else {}
    ray.init(
        address="local",  # always a new, private instance, even if `ray start` runs on this machine
        num_cpus=cpus,
        resources=resources,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        namespace="worldtrace",
        **quiet,  # type: ignore[arg-type]
    )
    return True


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, when nothing listens at HOST:PORT (Ray retries for minutes)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' and other forms: Ray reads them itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise WorldtraceError(
            f"cannot reach the Ray cluster at {address}: {exc} (is `ray start --head` running there, "
            "and is the port open? without --ray-address and RAY_ADDRESS, harvest starts its own Ray)"
        ) from exc


def stop_ray() -> None:
    import ray

    ray.shutdown()


def task_slots(sandbox: str) -> int:
    """How many units the cluster can run at once (for the in-flight bound)."""
    import ray

    resources = ray.cluster_resources()
    key = DOCKER_RESOURCE if sandbox == "docker" else "CPU"
    slots = int(resources.get(key, 0))
    if slots < 1:
        if sandbox == "docker":
            raise WorldtraceError(
                f"no node of the Ray cluster offers the {DOCKER_RESOURCE!r} resource: start nodes with "
                f"`ray start ... --resources '{{\"{DOCKER_RESOURCE}\": N}}'` where a Docker engine runs, "
                "or use --sandbox local"
            )
        raise WorldtraceError("the Ray cluster has no CPUs")
    return slots


# One sandbox per worker process, created on first use (the Docker client is reused across units).
_SANDBOXES: dict[str, Any] = {}


def _worker_sandbox(kind: str) -> Any:
    if kind not in _SANDBOXES:
        from harvest.sandbox import open_sandbox

        _SANDBOXES[kind] = open_sandbox(kind)
    return _SANDBOXES[kind]


def run_unit_task(unit: WorkUnit, settings: HarvestSettings, out_dir: str, run_id: str) -> dict[str, Any]:
    """Body of the Ray task: run the unit, return its `UnitResult` as a dict."""
    import ray

    try:
        result = execute_unit(unit, settings, Path(out_dir), run_id, _worker_sandbox(settings.sandbox))
    except SandboxError as exc:
        if getattr(exc, "retryable", True):
            raise  # Ray retries these (retry_exceptions)
        raise UnitFailed(f"{type(exc).__name__}: {exc}") from exc
    result.node_id = ray.get_runtime_context().get_node_id()
    return asdict(result)


OnResult = Callable[[UnitResult], None]
OnFailure = Callable[[WorkUnit, str], None]


def run_units(
    units: Sequence[WorkUnit],
    settings: HarvestSettings,
    out_dir: Path,
    run_id: str,
    on_result: OnResult,
    on_failure: OnFailure,
    max_in_flight: int | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> None:
    """Run `units` on the connected Ray cluster; report each as it finishes. Ctrl-C cancels all,
    after `on_interrupt` has run (cancelling tasks in flight can end the process abruptly in
    Ray's own code: what must be said or saved is done first)."""
    import ray

    resources: dict[str, float] = {DOCKER_RESOURCE: 1.0} if settings.sandbox == "docker" else {}
    remote = ray.remote(run_unit_task).options(
        num_cpus=1,
        resources=resources,
        max_retries=TASK_RETRIES,
        retry_exceptions=[SandboxError],
        scheduling_strategy="SPREAD",
        name="worldtrace-unit",
    )
    limit = max_in_flight or 2 * task_slots(settings.sandbox)
    pending = list(reversed(units))  # pop() from the end keeps the plan's order
    in_flight: dict[Any, WorkUnit] = {}
    out = str(out_dir.resolve())
    try:
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                unit = pending.pop()
                in_flight[remote.remote(unit, settings, out, run_id)] = unit
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                unit = in_flight.pop(ref)
                try:
                    data = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    on_failure(unit, _explain(exc))
                    continue
                on_result(UnitResult(**data))
    except BaseException as exc:
        if on_interrupt is not None and isinstance(exc, KeyboardInterrupt):
            on_interrupt()
        for ref in in_flight:
            try:
                ray.cancel(ref, force=True)
            except Exception as cancel_exc:  # the interruption is what the caller must see
                log.debug("cannot cancel a unit's task: %s", cancel_exc)
        raise


def _explain(exc: BaseException) -> str:
    """A one-line reason from a Ray error (the original exception when there is one)."""
    import ray

    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else None
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"
