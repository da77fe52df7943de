"""Harvests on a Ray cluster whose nodes come and go: a whole node lost (its raylet, or every
process of it) while it runs units or just before the harvest starts, the last node with Docker
slots lost, a node that joins mid-run. The nodes' containers run on the shared system engine, so
that what a lost node's workers leave behind is seen (and must be gone at the end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.shard_io import committed_shards
from tests.harvest.conftest import (
    WORLDTRACE,
    Cluster,
    RayNode,
    assert_same_result,
    docker_args,
    harvest_cmd,
    leftovers,
    processes_of,
    quick_cluster,
    run_containers,
    run_harvest,
    sleepy_programs,
    trace_ids,
    unit_started_on,
)

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

N_PROGRAMS, PER_UNIT, SLOW_S = 12, 3, 1.0


@pytest.fixture(scope="module")
def programs(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    done = subprocess.run([WORLDTRACE, "images", "build", "base-py311"], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr  # a no-op when built
    return sleepy_programs(tmp_path_factory.mktemp("inputs") / "slow.jsonl", N_PROGRAMS, SLOW_S)


@pytest.fixture(scope="module")
def reference(ray_cluster: Cluster, programs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted harvest of the programs (on the one node of the cluster)."""
    out = tmp_path_factory.mktemp("reference")
    done = run_harvest(*docker_args(programs, out, ray_cluster, PER_UNIT), env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("what", ["every process", "the raylet"])
def test_a_node_lost_mid_unit_has_its_units_redone_by_the_others(
    what: str, ray_cluster: Cluster, programs: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    node = ray_cluster.add_node(cpus=1, docker_slots=1)
    try:
        proc = subprocess.Popen(harvest_cmd(*docker_args(programs, out, ray_cluster, PER_UNIT)), env=ray_cluster.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        victim = unit_started_on(node, out, proc)
        lose(node, only="raylet" if what == "the raylet" else "")
        _, stderr = proc.communicate(timeout=600)
    finally:
        node.stop()
        ray_cluster.nodes.remove(node)
    assert proc.returncode == 0, stderr
    data = json.loads((out / "harvest-run.json").read_text())
    # The driver counted each unit once, the lost one included (redone: a second attempt).
    results = {r["unit_id"]: r for r in data["unit_results"]}
    assert len(results) == len(data["unit_results"]) == N_PROGRAMS // PER_UNIT
    assert results[victim]["attempt"] >= 2
    assert data["complete"] and not data["failed_units"] and data["counts"] == {"ok": N_PROGRAMS}
    assert data["units"]["ran"] == N_PROGRAMS // PER_UNIT
    assert_same_result(out, reference, N_PROGRAMS)
    # The lost node's container (on the shared engine here) is gone with the run.
    assert run_containers(data["run_id"]) == []


def lose(node: RayNode, only: str = "") -> None:
    """SIGKILL every process of the node (its `ray start`, raylet, agents and workers: the machine
    is gone), or only those whose command line has `only` in it."""
    for pid, cmdline in processes_of(node):
        if only in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_harvest_started_just_after_a_node_was_lost_runs_on_the_others(
    ray_cluster: Cluster, tmp_path: Path, docker_engine: None
) -> None:
    """The cluster takes a while to notice that a node is gone; the check of every Docker node's
    engine must not count it as one that cannot run units."""
    few = sleepy_programs(tmp_path / "few.jsonl", 2, 0.0)
    node = ray_cluster.add_node(cpus=1, docker_slots=1)
    try:
        lose(node)
        out = tmp_path / "out"
        done = run_harvest(*docker_args(few, out, ray_cluster, per_unit=1), env=ray_cluster.env)
    finally:
        node.stop()
        ray_cluster.nodes.remove(node)
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "harvest-run.json").read_text())
    assert data["complete"] and data["counts"] == {"ok": 2}
    assert run_containers(data["run_id"]) == []


@pytest.fixture
def head_without_docker(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of our own whose head has no Docker slots (as on many real clusters: it runs the
    driver), so that the nodes that join are the only ones that can run units. Its GCS notices a
    lost node within seconds (Ray's default health check takes about half a minute)."""
    with quick_cluster(tmp_path, docker_slots=0) as cluster:
        yield cluster


def test_losing_the_last_node_with_docker_slots_stops_the_harvest_and_a_rerun_finishes_it(
    head_without_docker: Cluster, tmp_path: Path, docker_engine: None
) -> None:
    """Ray keeps tasks whose resources no node offers waiting until one joins: the harvest waited,
    silently and for good. It now says so, and stops after WORLDTRACE_NO_SLOTS_WAIT_S (0 here)."""
    cluster = head_without_docker
    few = sleepy_programs(tmp_path / "few.jsonl", 4, SLOW_S)
    out = tmp_path / "out"
    node = cluster.add_node(cpus=1, docker_slots=1)
    env = {**cluster.env, "WORLDTRACE_NO_SLOTS_WAIT_S": "0"}
    proc = subprocess.Popen(harvest_cmd(*docker_args(few, out, cluster, per_unit=2)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        victim = unit_started_on(node, out, proc)
        lose(node)
        _, stderr = proc.communicate(timeout=180)  # it waited for good
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    assert "no node of the Ray cluster offered 'worldtrace_docker' slots for 0 s" in stderr
    data = json.loads((out / "harvest-run.json").read_text())
    assert not data["complete"] and victim in {u["unit_id"] for u in data["failed_units"]}
    assert len(data["unit_results"]) + len(data["failed_units"]) == 2  # each unit once
    node.stop()
    cluster.nodes.remove(node)
    cluster.add_node(cpus=1, docker_slots=1)  # the same command finishes the job
    done = run_harvest(*docker_args(few, out, cluster, per_unit=2), env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "harvest-run.json").read_text())
    assert data["complete"] and data["counts"] == {"ok": 4}
    ids = trace_ids(out)
    assert len(ids) == len(set(ids)) == 4 and leftovers(out) == []
    check = subprocess.run([WORLDTRACE, "validate", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert run_containers(data["run_id"]) == []


def test_a_node_that_joins_mid_run_gets_units_beyond_what_the_first_nodes_left_over(
    head_without_docker: Cluster, tmp_path: Path, docker_engine: None
) -> None:
    """The units in flight were bounded by twice the slots of the cluster at the start: a node of
    2 slots joining a cluster of 1 ran at most what the first node left over (2 units in flight in
    all). The bound now follows the cluster, so 3 units run at once after the node has joined."""
    cluster = head_without_docker
    many = sleepy_programs(tmp_path / "many.jsonl", 12, 1.5)
    out = tmp_path / "out"
    cluster.add_node(cpus=1, docker_slots=1)
    proc = subprocess.Popen(harvest_cmd(*docker_args(many, out, cluster, per_unit=1)), env=cluster.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out.exists() and committed_shards(out)):  # the harvest is under way on one slot
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling for the first shard, not synchronising
        cluster.add_node(cpus=2, docker_slots=2)
        most = 0
        while proc.poll() is None and most < 3:
            most = max(most, len(_units_running(out)))
            time.sleep(0.02)  # polling the units' progress, not synchronising
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert most == 3
    data = json.loads((out / "harvest-run.json").read_text())
    assert data["complete"] and data["counts"] == {"ok": 12} and len(data["unit_results"]) == 12


def _units_running(out: Path) -> list[str]:
    """The units whose attempt has started a program and not yet committed its shard."""
    work = out / ".worldtrace" / "work"
    running = []
    for attempt in work.glob("*/attempt-*") if work.exists() else []:
        try:
            if any(p.stat().st_size for p in attempt.glob("**/stream.jsonl.started")):
                running.append(attempt.parent.name)
        except OSError:
            continue  # committed meanwhile
    return sorted(set(running))
