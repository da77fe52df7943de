"""Harvests on a Ray cluster one of whose nodes stalls instead of dying: every process of it frozen
(SIGSTOP) and its unit's container paused, long enough for Ray to declare the node dead and retry
its unit on the head, then woken up (SIGCONT, unpause). Its worker goes on with the unit it had:
the output must still equal an uninterrupted run's, and its container must go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.plan import shard_name
from harvest.sandbox.docker import LABEL_ATTEMPT, LABEL_UNIT
from harvest.shard_io import committed_shards
from tests.harvest.conftest import (
    Cluster,
    RayNode,
    assert_same_result,
    docker_args,
    harvest_cmd,
    processes_of,
    quick_cluster,
    run_containers,
    run_harvest,
    sleepy_programs,
    unit_started_on,
)

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

N_PROGRAMS, PER_UNIT, SLOW_S = 6, 3, 1.0
DEADLINE_S = 120.0  # for each awaited state (a loaded 2-core machine starts containers slowly)


@pytest.fixture(scope="module")
def fast_cluster(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of our own whose head has one Docker slot, and whose GCS declares a node dead
    after ~3 s without an answer (a frozen node's raylet accepts connections but never answers,
    so each health check waits its timeout out)."""
    with quick_cluster(tmp_path_factory.mktemp("stall"), docker_slots=1, RAY_health_check_timeout_ms="1000") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def programs(fast_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sleepy_programs(tmp_path_factory.mktemp("inputs") / "slow.jsonl", N_PROGRAMS, SLOW_S)


@pytest.fixture(scope="module")
def reference(fast_cluster: Cluster, programs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted harvest of the programs (on the head alone)."""
    out = tmp_path_factory.mktemp("reference")
    done = run_harvest(*docker_args(programs, out, fast_cluster, PER_UNIT), env=fast_cluster.env)
    assert done.returncode == 0, done.stderr
    return out


def test_a_stalled_node_that_wakes_up_while_its_unit_is_retried_leaves_the_retry_alone(
    fast_cluster: Cluster, programs: Path, reference: Path, tmp_path: Path
) -> None:
    """The stalled node's worker woke up with its unit's programs done (its container had run on
    meanwhile), while the retry still ran on the head: it committed the unit's shard and removed
    the unit's work folder, the retry's included, from under the retry's container (which then
    found no rows: the unit was run a third time, from scratch)."""
    cluster = fast_cluster
    out = tmp_path / "out"
    stopped: list[int] = []
    paused: list[str] = []
    node, proc = _harvest_with_a_second_node(cluster, programs, out)
    try:
        victim, zombie, first = _stall_the_node_mid_unit(node, out, proc, stopped, paused)
        work = out / ".worldtrace" / "work" / victim
        stderr_log = os.readlink(f"/proc/{zombie}/fd/2")  # the worker's log file
        # Ray declares the node dead and retries the unit on the head; hold the retry mid-unit.
        _wait_for(lambda: _started(work / "attempt-2") >= 1, proc, "the retry to start a program")
        second = _pause(_container(victim, 2), paused)
        # The stalled container finishes its programs, then its worker wakes up (its raylet not
        # yet: the worker goes on with its unit, as it does for the moment before it learns that
        # its node was declared dead).
        _unpause(first, paused)
        _wait_for(lambda: _state(first) in ("exited", "gone"), proc, "the stalled container to finish")
        os.kill(zombie, signal.SIGCONT)

        def zombie_done() -> bool:
            said = "attempt 1 stops without committing" in Path(stderr_log).read_text(errors="replace")
            return said or not (work / "attempt-2").exists() or shard_name(victim) in committed_shards(out)

        _wait_for(zombie_done, proc, "the woken worker to end its unit")
        _unpause(second, paused)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        _wake_and_remove(node, cluster, proc, stopped, paused)
    assert proc.returncode == 0, stderr
    data, results = _run_record(out)
    # The retry, left alone, finished the unit in one go (not a third run from scratch).
    assert results[victim]["attempt"] == 2 and results[victim]["sandbox_failures"] == []
    assert data["complete"] and not data["failed_units"] and data["counts"] == {"ok": N_PROGRAMS}
    assert_same_result(out, reference, N_PROGRAMS)
    assert run_containers(data["run_id"]) == []


def test_a_stalled_node_that_wakes_up_after_the_harvest_ended_changes_nothing(
    fast_cluster: Cluster, programs: Path, reference: Path, tmp_path: Path
) -> None:
    """The harvest ran the stalled node's unit again and ended (removing the unit's paused
    container); then the node wakes up: its worker must neither commit nor leave anything."""
    cluster = fast_cluster
    out = tmp_path / "out"
    stopped: list[int] = []
    paused: list[str] = []
    node, proc = _harvest_with_a_second_node(cluster, programs, out)
    try:
        victim, zombie, _ = _stall_the_node_mid_unit(node, out, proc, stopped, paused)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        before = _snapshot(out)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        for container in list(paused):
            _unpause(container, paused)
        _wait_for(lambda: not _alive(zombie), None, "the woken worker to end (its node was declared dead)")
    finally:
        _wake_and_remove(node, cluster, proc, stopped, paused)
    assert _snapshot(out) == before
    data, results = _run_record(out)
    assert results[victim]["attempt"] == 2
    assert data["complete"] and not data["failed_units"] and data["counts"] == {"ok": N_PROGRAMS}
    assert_same_result(out, reference, N_PROGRAMS)
    assert run_containers(data["run_id"]) == []


def _harvest_with_a_second_node(
    cluster: Cluster, programs: Path, out: Path
) -> tuple[RayNode, subprocess.Popen[str]]:
    """A second node of one Docker slot joins the cluster, and a harvest of `programs` starts."""
    node = cluster.add_node(cpus=1, docker_slots=1)
    proc = subprocess.Popen(harvest_cmd(*docker_args(programs, out, cluster, PER_UNIT)), env=cluster.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return node, proc


def _stall_the_node_mid_unit(
    node: RayNode, out: Path, proc: subprocess.Popen[str], stopped: list[int], paused: list[str]
) -> tuple[str, int, str]:
    """Once a unit runs on `node`, the node stalls: every process of it stopped (into `stopped`)
    and the unit's container paused (into `paused`). (The unit, its worker's pid, the container.)"""
    victim = unit_started_on(node, out, proc)
    worker = json.loads((out / ".worldtrace" / "work" / victim / "attempt-1" / "attempt.json").read_text())["pid"]
    for pid, _ in processes_of(node):
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
    return victim, int(worker), _pause(_container(victim, 1), paused)


def _wake_and_remove(
    node: RayNode, cluster: Cluster, proc: subprocess.Popen[str], stopped: list[int], paused: list[str]
) -> None:
    """Whatever happened: continue what the test stopped and paused, end the harvest, drop the node."""
    for container in list(paused):
        _unpause(container, paused)
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    node.stop()
    cluster.nodes.remove(node)


def _run_record(out: Path) -> tuple[dict, dict[str, dict]]:
    """The run record, and its unit results by unit id (each unit counted once)."""
    data = json.loads((out / "harvest-run.json").read_text())
    results = {r["unit_id"]: r for r in data["unit_results"]}
    assert len(results) == len(data["unit_results"]) == N_PROGRAMS // PER_UNIT
    return data, results


def _snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under the output folder: its size and modification time (ns)."""
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def _alive(pid: int) -> bool:
    """Whether the process runs (an exited one not yet reaped by its parent does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _container(unit_id: str, attempt: int) -> str:
    """The id of the container of the unit's attempt (it exists once a program of it started)."""
    done = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={LABEL_UNIT}={unit_id}",
                           "--filter", f"label={LABEL_ATTEMPT}={attempt}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (container,) = done.stdout.split()
    return container


def _pause(container: str, paused: list[str]) -> str:
    subprocess.run(["docker", "pause", container], capture_output=True, check=True)
    paused.append(container)
    return container


def _unpause(container: str, paused: list[str]) -> None:
    subprocess.run(["docker", "unpause", container], capture_output=True)  # gone: nothing to do
    paused.remove(container)


def _state(container: str) -> str:
    done = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", container], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "gone"


def _started(attempt: Path) -> int:
    """The programs the attempt's runner started (in its sandbox's folder while it runs)."""
    try:
        return sum(p.read_text().count("\n") for p in attempt.glob("**/stream.jsonl.started"))
    except OSError:
        return 0


def _wait_for(condition: object, proc: subprocess.Popen[str] | None, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc is not None:
            assert proc.poll() is None, f"the harvest ended while waiting for {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling for the state, not synchronising
