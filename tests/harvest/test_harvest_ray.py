"""Harvests on a real Ray cluster: end to end, a killed worker, a killed driver, two nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harvest.shard_io import committed_shards
from tests.conftest import docker_available
from tests.harvest.conftest import (
    Cluster,
    harvest_cmd,
    leftovers,
    run_harvest,
    shard_files,
    sleepy_programs,
    trace_ids,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
N_SLOW, PER_UNIT, SLOW_S = 24, 6, 0.25


@pytest.fixture(scope="module")
def slow_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sleepy_programs(tmp_path_factory.mktemp("inputs") / "slow.jsonl", N_SLOW, SLOW_S)


def slow_args(slow_jsonl: Path, out: Path, cluster: Cluster) -> list[str | Path]:
    return [slow_jsonl, "--out", out, "--sandbox", "local", "--programs-per-unit", str(PER_UNIT), "--ray-address", cluster.address, "-s"]


@pytest.fixture(scope="module")
def reference(ray_cluster: Cluster, slow_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted harvest of the slow programs."""
    out = tmp_path_factory.mktemp("reference")
    done = run_harvest(*slow_args(slow_jsonl, out, ray_cluster), env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "harvest-run.json").read_text())


def assert_same_result(out: Path, reference: Path) -> None:
    ids = trace_ids(out)
    assert len(ids) == len(set(ids)) == N_SLOW  # no duplicates, nothing missing
    assert ids == trace_ids(reference)
    assert [p.name for p in shard_files(out)] == [p.name for p in shard_files(reference)]
    assert committed_shards(out) == {p.name for p in shard_files(out)}
    assert leftovers(out) == []
    check = subprocess.run([str(Path(sys.executable).parent / "worldtrace"), "validate", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_local_sandbox_end_to_end_on_the_examples(ray_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    wrong = tmp_path / "wrong.jsonl"  # a program whose expected output is not what it returns
    wrong.write_text(json.dumps({"id": "wrong", "source": "def f(x):\n    return x\n", "entrypoint": "f", "input": "1", "output": "2"}) + "\n")
    inputs = [REPO / "examples" / "programs", wrong]
    done = run_harvest(*inputs, "--out", out, "--sandbox", "local", "--ray-address", ray_cluster.address, env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert f"shards are in {out}/" in done.stdout and f"worldtrace inspect {out}" in done.stdout
    data = manifest(out)
    assert data["complete"] and data["counts"] == {"exception": 1, "ok": 16}
    assert data["expected_output_mismatches"] == 1
    assert data["settings"]["sandbox"] == "local" and data["versions"]["ray"]
    again = run_harvest(*inputs, "--out", out, "--sandbox", "local", "--ray-address", ray_cluster.address, "--json", env=ray_cluster.env)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["units"]["ran"] == 0 and rerun["units"]["done_before"] == data["units"]["planned"]
    assert rerun["counts"] == data["counts"]
    # Over the whole folder, as the counts: the mismatch was found by the first run.
    assert (rerun["expected_output_mismatches"], rerun["expected_output_mismatches_this_run"]) == (1, 0)


def test_a_killed_worker_is_retried_and_the_result_equals_an_uninterrupted_run(
    ray_cluster: Cluster, slow_jsonl: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(harvest_cmd(*slow_args(slow_jsonl, out, ray_cluster)), env=ray_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _wait_for_half_done_unit(out, proc)
    os.kill(victim, signal.SIGKILL)  # the Ray worker running that unit
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    data = manifest(out)
    assert max(r["attempt"] for r in data["unit_results"]) >= 2  # the killed unit ran again
    assert_same_result(out, reference)


def test_a_killed_driver_is_resumed_by_running_the_same_command(
    ray_cluster: Cluster, slow_jsonl: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _harvest_past_its_first_shard(slow_jsonl, out, ray_cluster)
    proc.kill()
    proc.wait()
    first = len(committed_shards(out))
    assert first < N_SLOW // PER_UNIT
    done = run_harvest(*slow_args(slow_jsonl, out, ray_cluster), env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert manifest(out)["units"]["done_before"] >= first
    assert_same_result(out, reference)


def test_sigterm_to_the_driver_is_an_interruption_and_the_same_command_resumes(
    ray_cluster: Cluster, slow_jsonl: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _harvest_past_its_first_shard(slow_jsonl, out, ray_cluster)
    proc.terminate()
    _, stderr = proc.communicate(timeout=120)
    # Exit 1 with our message; Ray's shutdown with tasks in flight may also log its own errors.
    assert proc.returncode != 0, stderr
    assert "interrupted: stopping; re-run the same command" in stderr
    assert manifest(out)["interrupted"] is True
    done = run_harvest(*slow_args(slow_jsonl, out, ray_cluster), env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert_same_result(out, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_while_ray_starts_is_an_interruption_too(signum: int, tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM in the seconds the embedded Ray takes to start (the run manifest is
    written by then): it said only "Aborted!" (or died of Ray's SIGTERM handler, or of a SIGSEGV
    on its way out), and the manifest said the run was still going."""
    out = tmp_path / "out"
    programs = sleepy_programs(tmp_path / "p.jsonl", 4, 0.0)
    args = [programs, "--out", out, "--sandbox", "local", "--num-cpus", "1", "-s"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(harvest_cmd(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "harvest-run.json").exists():  # written just before Ray starts
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)  # polling for the run manifest, not synchronising
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "interrupted; re-run the same command to resume" in stderr and "Traceback" not in stderr
    data = manifest(out)
    assert data["interrupted"] is True and data["finished_at"] and not data["complete"]
    done = run_harvest(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert len(trace_ids(out)) == 4 and manifest(out)["complete"]


def test_two_nodes_share_the_work(ray_cluster: Cluster, tmp_path: Path) -> None:
    """A second node joins with `ray start --address` and its own Docker slots; both run units."""
    sandbox = "docker" if docker_available() and _image_built("base-py311") else "local"
    node = ray_cluster.add_node(cpus=1, docker_slots=1)
    try:
        out = tmp_path / "out"
        done = run_harvest(
            REPO / "examples" / "programs", "--out", out, "--sandbox", sandbox, "--programs-per-unit", "2",
            "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        data = manifest(out)
        assert data["complete"] and sum(data["counts"].values()) == 16
        assert len({r["node_id"] for r in data["unit_results"]}) == 2, data["unit_results"]
    finally:
        node.stop()
        ray_cluster.nodes.remove(node)


def _harvest_past_its_first_shard(slow_jsonl: Path, out: Path, cluster: Cluster) -> subprocess.Popen[str]:
    """The slow harvest, started and still running once it has committed its first shard."""
    proc = subprocess.Popen(harvest_cmd(*slow_args(slow_jsonl, out, cluster)), env=cluster.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not committed_shards(out) if out.exists() else True:
        assert proc.poll() is None, "the harvest ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.02)  # polling for the first committed shard, not synchronising
    return proc


def _wait_for_half_done_unit(out: Path, proc: subprocess.Popen[str]) -> int:
    """Pid of the worker running a unit that has traced some but not all of its programs."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the harvest ended before a worker could be killed"
        work = out / ".worldtrace" / "work"
        for attempt in sorted(work.glob("*/attempt-1")) if work.exists() else []:
            stream, owner = attempt / "stream.jsonl", attempt / "attempt.json"
            try:
                lines = stream.read_text().count("\n")
                pid = json.loads(owner.read_text())["pid"]
            except (OSError, ValueError):
                continue
            if 2 <= lines < PER_UNIT:
                return int(pid)
        time.sleep(0.02)  # polling the stream for progress, not synchronising
    raise AssertionError("no unit reached the middle of its programs")


def _image_built(name: str) -> bool:
    try:
        from harvest.sandbox.docker import DockerSandbox

        sandbox = DockerSandbox(reap_on_start=False)
        try:
            return not sandbox.missing_images([name])
        finally:
            sandbox.close()
    except Exception:
        return False
