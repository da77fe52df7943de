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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harvest.errors import EngineError, SandboxError, StorageError, WorldtraceError
from harvest.plan import HarvestSettings, WorkUnit
from harvest.unit import UnitResult, execute_unit

log = logging.getLogger(__name__)

DOCKER_RESOURCE = "worldtrace_docker"
TASK_RETRIES = 3  # for worker deaths and retryable sandbox errors; program failures are rows
OBJECT_STORE_BYTES = 128 * 1024 * 1024  # only metadata travels through it
CONNECT_TIMEOUT_S = 10.0  # to reach a cluster's GCS port before handing the address to Ray
# After an engine error, a task waits this long for the engine to answer again before Ray retries it
# (at once): a daemon that restarts (an upgrade, a crash under systemd) is back within seconds.
ENGINE_WAIT_S = 30.0
ENGINE_WAIT_ENV = "WORLDTRACE_ENGINE_WAIT_S"  # read where the units run (a node's environment)
NODE_CHECK_TIMEOUT_S = 180.0  # for every node to check its engine (a busy node starts a worker first)
# When no node of the cluster offers the slots the units need (the nodes that had them left), the
# driver waits this long for one to join, then stops (a re-run resumes); it looks every SLOTS_POLL_S.
NO_SLOTS_WAIT_S = 300.0
NO_SLOTS_WAIT_ENV = "WORLDTRACE_NO_SLOTS_WAIT_S"  # read by the driver
SLOTS_POLL_S = 5.0


class UnitFailed(WorldtraceError):
    """A unit failed for a reason that running it again cannot fix (e.g. its image is missing).

    `engine_lost`: the reason is that the node's Docker engine stopped answering (and no other
    node could take the unit), which dooms the units not started yet as well."""

    def __init__(self, message: str, engine_lost: bool = False) -> None:
        super().__init__(message)
        self.engine_lost = engine_lost


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


def check_docker_nodes(images: Sequence[str], backend: str = "auto") -> None:
    """Before any unit runs: on every node that offers Docker slots, the engine answers and has
    `images` built (and those of your own can run the tracer with `backend`). Any unit may run on any such node, so a node without them would fail its units
    (an image missing on one node is no reason to retry elsewhere: Ray's retries are blind)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(DOCKER_RESOURCE)]
    if not nodes:
        return  # task_slots says what to do about that
    check = ray.remote(_check_this_node)
    refs = {
        check.options(
            num_cpus=0,
            max_retries=0,
            name="worldtrace-node-check",
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(list(images), backend): n
        for n in nodes
    }
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_CHECK_TIMEOUT_S)
    problems = []
    for ref, node in refs.items():
        where = f"node {node.get('NodeManagerAddress', '?')} ({node.get('NodeManagerHostname', '?')})"
        if ref not in ready:
            ray.cancel(ref, force=True)
            if _node_left(node["NodeID"]):
                log.warning("%s left the Ray cluster during the check of its engine: it runs no units", where)
                continue
            problems.append(f"{where}: did not answer the check within {NODE_CHECK_TIMEOUT_S:g} s")
            continue
        try:
            problem = ray.get(ref)
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError) as exc:
            # The node is gone (the cluster may still list it as alive for a while): the units
            # go to the others; the task's only other reason, too few resources, cannot be (0 CPUs).
            log.warning("%s left the Ray cluster (%s): it runs no units", where, _explain(exc))
            continue
        except ray.exceptions.RayError as exc:
            if _node_left(node["NodeID"]):
                log.warning("%s left the Ray cluster during the check of its engine: it runs no units", where)
                continue
            problem = f"the check failed: {_explain(exc)}"
        if problem:
            problems.append(f"{where}: {problem}")
    if problems:
        raise WorldtraceError(
            "not every node of the Ray cluster with Docker slots can run the units (each may get any of them):\n  "
            + "\n  ".join(problems)
        )


def _alive_nodes() -> set[str]:
    """The ids of the nodes the cluster lists as alive."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("NodeID")}


def _node_left(node_id: str) -> bool:
    """Whether the cluster no longer lists the node as alive."""
    return node_id not in _alive_nodes()


def _check_this_node(images: list[str], backend: str) -> str:
    """On a node: what keeps it from running units of `images` ('' when nothing)."""
    from harvest.sandbox.docker import DockerSandbox

    try:
        return "; ".join(DockerSandbox(reap_on_start=False).image_problems(images, backend))
    except SandboxError as exc:
        return str(exc)


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

    node_id = ray.get_runtime_context().get_node_id()
    try:
        result = execute_unit(unit, settings, Path(out_dir), run_id, _worker_sandbox(settings.sandbox), node_id)
    except SandboxError as exc:
        if not getattr(exc, "retryable", True):
            raise UnitFailed(f"{type(exc).__name__}: {exc}") from exc
        if isinstance(exc, EngineError):
            from harvest.docker_client import wait_for_engine

            waited = engine_wait_s()
            if not wait_for_engine(waited) and _docker_nodes() <= 1:
                # Ray would retry on this node, the only one with an engine, which stayed silent:
                # each try would only wait out the control calls' timeouts again.
                raise UnitFailed(
                    f"{type(exc).__name__}: {exc} (it did not answer again within {waited:g} s, and no "
                    "other node of the cluster has a Docker engine to retry on)",
                    engine_lost=True,
                ) from exc
        raise  # Ray retries these (retry_exceptions)
    # Anything else (StorageError: the output folder is full, read-only or gone) is not retried.
    result.node_id = node_id
    return asdict(result)


def _docker_nodes() -> int:
    """The live nodes of the cluster that offer Docker slots."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(DOCKER_RESOURCE))


def engine_wait_s() -> float:
    """How long a unit waits for a lost engine before its retry: $WORLDTRACE_ENGINE_WAIT_S or 30 s."""
    return _seconds(ENGINE_WAIT_ENV, ENGINE_WAIT_S)


def no_slots_wait_s() -> float:
    """How long the driver waits for a node with slots once none is left: $WORLDTRACE_NO_SLOTS_WAIT_S or 300 s."""
    return _seconds(NO_SLOTS_WAIT_ENV, NO_SLOTS_WAIT_S)


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        return max(0.0, float(text)) if text else default
    except ValueError:
        log.warning("%s=%r is not a number of seconds; waiting %g s", name, text, default)
        return default


class _SlotWatch:
    """Notices that no node of the cluster offers the slots the units need any more (the nodes that
    had them were lost): Ray then keeps their tasks waiting, silently, until one joins. Warns at
    once; after `no_slots_wait_s()` without one, says why the run stops."""

    def __init__(self, sandbox: str) -> None:
        self.key = DOCKER_RESOURCE if sandbox == "docker" else "CPU"
        self.wait_s = no_slots_wait_s()
        self.since: float | None = None
        self.lost = ""  # why no unit can run, once the wait is over

    def count(self) -> int:
        """The slots the cluster's live nodes offer now."""
        import ray

        return int(ray.cluster_resources().get(self.key, 0))

    def check(self) -> str:
        """'' while some node offers slots or the wait is not over; else why no unit can run."""
        if self.count() >= 1:
            if self.since is not None:
                log.warning("a node with %r slots is back in the Ray cluster: the units go on", self.key)
            self.since = None
            return ""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning(
                "no node of the Ray cluster offers %r slots any more (the nodes that had them left): waiting "
                "up to %g s (%s) for one to join", self.key, self.wait_s, NO_SLOTS_WAIT_ENV,
            )  # fmt: skip
        if now - self.since < self.wait_s:
            return ""
        self.lost = (
            f"no node of the Ray cluster offered {self.key!r} slots for {self.wait_s:g} s (the nodes that had "
            "them left); re-run the same command once one has joined"
        )
        return self.lost


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
    stop = ""  # why no further unit can succeed: an engine that stopped answering, an unusable --out
    slots = _SlotWatch(settings.sandbox)
    node_losses: dict[str, int] = {}  # unit id -> times its node was lost while it ran (see _on_lost_nodes)
    last_look = time.monotonic()
    try:
        while in_flight or (pending and not stop):
            if not max_in_flight and pending:
                # Nodes come and go: one that joins gets units, not only what overflows the others.
                limit = 2 * (slots.count() or limit // 2)
            while pending and not stop and len(in_flight) < limit:
                unit = pending.pop()
                in_flight[remote.remote(unit, settings, out, run_id)] = unit
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=SLOTS_POLL_S)
            if not ready and (lost := slots.check()):
                # No node can run the units in flight: Ray would keep them waiting for good.
                stop = stop or lost
                for ref, unit in list(in_flight.items()):
                    ray.cancel(ref, force=True)
                    del in_flight[ref]
                    on_failure(unit, f"not finished: {lost}")
            if time.monotonic() - last_look >= SLOTS_POLL_S:
                last_look = time.monotonic()
                for ref, unit in _on_lost_nodes(in_flight, out_dir, run_id):
                    del in_flight[ref]
                    node_losses[unit.unit_id] = node_losses.get(unit.unit_id, 0) + 1
                    if node_losses[unit.unit_id] > TASK_RETRIES:
                        on_failure(unit, f"its node was lost {node_losses[unit.unit_id]} times while it ran")
                        continue
                    in_flight[remote.remote(unit, settings, out, run_id)] = unit
            for ref in ready:
                unit = in_flight.pop(ref)
                try:
                    data = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = _cause(exc)
                    if isinstance(cause, EngineError | StorageError) or getattr(cause, "engine_lost", False):
                        # Its retries waited for the engine in vain, or the output folder is full,
                        # read-only or gone: the units still to start would only fail the same
                        # way, one after another. Stop; a re-run resumes.
                        stop = stop or _explain(exc)
                    on_failure(unit, _explain(exc))
                    continue
                on_result(UnitResult(**data))
        for unit in reversed(pending):
            on_failure(unit, f"not started: {stop if stop == slots.lost else f'another unit failed with {stop}'}")
    except BaseException as exc:
        if on_interrupt is not None and isinstance(exc, KeyboardInterrupt):
            on_interrupt()
        for ref in in_flight:
            try:
                ray.cancel(ref, force=True)
            except Exception as cancel_exc:  # the interruption is what the caller must see
                log.debug("cannot cancel a unit's task: %s", cancel_exc)
        raise


def _on_lost_nodes(in_flight: dict[Any, WorkUnit], out_dir: Path, run_id: str) -> list[tuple[Any, WorkUnit]]:
    """The units in flight whose node the cluster no longer lists as alive; their tasks cancelled.

    A node that dies outright takes its workers' connections down, and Ray retries their tasks at
    once. One that stalls (frozen, its network cut off) keeps them open: the cluster declares it
    dead within its health check, but the driver keeps waiting on its tasks until gRPC's keepalive
    gives up on the worker (Ray's default: 5 minutes, then 2 more). The driver runs them again
    itself; a worker that wakes up later finds its attempt superseded (see harvest.unit)."""
    import ray

    if not in_flight:
        return []
    from harvest.unit import running_on

    alive = _alive_nodes()
    found = []
    for ref, unit in in_flight.items():
        node = running_on(out_dir, unit.unit_id, run_id)
        if not node or node in alive:
            continue
        log.warning("unit %s: its node %s left the Ray cluster while it ran: running it again", unit.unit_id, node)
        try:
            ray.cancel(ref, force=True)  # and Ray's own retry of it, should the worker's connection drop
        except Exception as exc:
            log.debug("cannot cancel the task of unit %s: %s", unit.unit_id, exc)
        found.append((ref, unit))
    return found


def _cause(exc: BaseException) -> BaseException | None:
    """The exception a Ray task raised, if `exc` carries one."""
    import ray

    return exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else None


def _explain(exc: BaseException) -> str:
    """A one-line reason from a Ray error (the original exception when there is one)."""
    cause = _cause(exc)
    if cause is not None:
        retried = f" (the last of {TASK_RETRIES + 1} tries)" if isinstance(cause, SandboxError) else ""
        return f"{type(cause).__name__}: {cause}{retried}"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"
