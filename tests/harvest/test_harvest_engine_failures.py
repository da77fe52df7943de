"""Harvests whose Docker engine fails under them, on an engine of the test's own (a second dockerd,
tests/private_engine.py): killed while units run and started again, killed for good, and missing
the image on one node of a Ray cluster. The system engine is never touched."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.shard_io import committed_shards
from tests.harvest.conftest import (
    WORLDTRACE,
    Cluster,
    harvest_cmd,
    leftovers,
    run_harvest,
    shard_files,
    sleepy_programs,
    trace_ids,
)
from tests.private_engine import PrivateEngine

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
N_PROGRAMS, PER_UNIT = 8, 4


@pytest.fixture(scope="module")
def base_tag(docker_engine: None) -> str:
    """base-py311 built on the system engine (a no-op when built), to copy into the private one."""
    from images.catalog import get_spec

    done = subprocess.run([WORLDTRACE, "images", "build", "base-py311"], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        pytest.skip(f"cannot build base-py311: {(done.stderr or done.stdout)[-500:]}")
    return str(get_spec("base-py311").tag)


@pytest.fixture
def engine(docker_engine: None) -> Iterator[PrivateEngine]:
    engine = PrivateEngine()
    try:
        engine.start()
        yield engine
    finally:
        engine.close()


def harvest_args(programs: Path, out: Path) -> list[str | Path]:
    return [programs, "--out", out, "--programs-per-unit", str(PER_UNIT), "--num-cpus", "2", "-s"]


def run_id(out: Path) -> str:
    return str(json.loads((out / "harvest-run.json").read_text())["run_id"])


def containers_of(engine: PrivateEngine, run: str) -> list[str]:
    return engine.docker("ps", "-aq", "--filter", f"label=worldtrace.run={run}").split()


def wait_for_a_running_unit(engine: PrivateEngine, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not engine.docker("ps", "-q", "--filter", "label=worldtrace.run").split():
        assert proc.poll() is None, f"the harvest ended before a unit ran: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no unit's container started"
        time.sleep(0.1)  # polling the engine for the first running container, not synchronising


def assert_every_program_once(out: Path) -> None:
    rows = []
    for shard in shard_files(out):
        rows.extend(pq.read_table(shard, columns=["program_id", "status", "return_value"]).to_pylist())
    assert sorted((r["program_id"], r["status"], r["return_value"]) for r in rows) == [
        (f"slow-{i:03d}", "ok", str(2 * i)) for i in range(N_PROGRAMS)
    ]
    assert len(set(trace_ids(out))) == N_PROGRAMS
    assert committed_shards(out) == {p.name for p in shard_files(out)} and leftovers(out) == []


def test_an_engine_that_dies_and_comes_back_mid_harvest_costs_nothing(engine: PrivateEngine, base_tag: str, tmp_path: Path) -> None:
    engine.load_from_system_engine(base_tag)
    programs = sleepy_programs(tmp_path / "slow.jsonl", N_PROGRAMS, 1.0)
    out = tmp_path / "out"
    proc = subprocess.Popen(harvest_cmd(*harvest_args(programs, out)), env=engine.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_for_a_running_unit(engine, proc)
    engine.kill()  # as a crash would: the containers it ran live on in their shims
    engine.start()  # ... until the engine, back, stops them
    _, stderr = proc.communicate(timeout=600)
    # The units it broke waited for the engine and ran again; none failed.
    assert proc.returncode == 0, stderr
    assert_every_program_once(out)
    # The containers of the first attempts (the engine stopped them when it came back) are removed
    # with the run's others at its end.
    assert containers_of(engine, run_id(out)) == []


def test_an_engine_gone_for_good_is_named_and_a_rerun_finishes_the_job(engine: PrivateEngine, base_tag: str, tmp_path: Path) -> None:
    engine.load_from_system_engine(base_tag)
    programs = sleepy_programs(tmp_path / "slow.jsonl", N_PROGRAMS, 1.0)
    out = tmp_path / "out"
    env = {**engine.env(), "WORLDTRACE_ENGINE_WAIT_S": "1"}  # how long a unit waits for it to return
    proc = subprocess.Popen(harvest_cmd(*harvest_args(programs, out)), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_for_a_running_unit(engine, proc)
    engine.kill()
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    assert f"SandboxEngineError: the Docker engine at {engine.host}" in stderr and "did not answer" in stderr
    assert "re-run the same command" in stderr
    first_run = run_id(out)
    assert not json.loads((out / "harvest-run.json").read_text())["complete"]
    # What is there is whole: shards only complete (units whose runner had finished), no temporaries.
    assert committed_shards(out) == {p.name for p in shard_files(out)} and leftovers(out) == []
    engine.start()
    done = run_harvest(*harvest_args(programs, out), env=env)
    assert done.returncode == 0, done.stderr
    assert_every_program_once(out)
    assert containers_of(engine, first_run) == [] and containers_of(engine, run_id(out)) == []


def test_a_cluster_node_without_the_image_is_named_before_any_unit_runs(engine: PrivateEngine, base_tag: str, ray_cluster: Cluster, tmp_path: Path) -> None:
    """Two nodes: the head's engine (the system one) has the image, the new node's (ours) has not.
    Any unit may land on either, so the harvest names the node and the image and runs nothing."""
    node = ray_cluster.add_node(cpus=1, docker_slots=1, env=engine.env(ray_cluster.env))
    try:
        out = tmp_path / "out"
        done = run_harvest(
            REPO / "examples" / "programs", "--out", out, "--programs-per-unit", "2",
            "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "not every node of the Ray cluster with Docker slots can run the units" in done.stderr
        assert f"image(s) not built on the Docker engine at {engine.host}: base-py311" in done.stderr
        assert "build with `worldtrace images build base-py311`" in done.stderr
        assert shard_files(out) == [] and json.loads((out / "harvest-run.json").read_text())["units"]["ran"] == 0
        assert containers_of(engine, run_id(out)) == []
    finally:
        node.stop()
        ray_cluster.nodes.remove(node)


# A stalled engine (SIGSTOPped: its socket accepts connections, and nothing answers). Control calls
# time out after 5 s here, a unit waits 1 s (or long enough) for the engine before Ray retries it.
STALL_ENV = {"WORLDTRACE_ENGINE_TIMEOUT_S": "5"}
HANG_GUARD_S = 150  # below the unit deadline (142 s): an engine stall noticed only there fails


def stall_args(programs: Path, out: Path) -> list[str | Path]:
    # Two programs a unit, two units at a time: the units not yet started when the engine stalls
    # cannot finish without it (those running may: their runners run on while the engine is stopped).
    return [programs, "--out", out, "--programs-per-unit", "2", "--num-cpus", "2", "-s"]


@pytest.fixture
def reference(engine: PrivateEngine, base_tag: str, tmp_path: Path) -> tuple[Path, Path]:
    """The sleepy programs, and an uninterrupted harvest of them on the private engine."""
    engine.load_from_system_engine(base_tag)
    programs = sleepy_programs(tmp_path / "slow.jsonl", N_PROGRAMS, 3.0)  # a unit runs when paused
    out = tmp_path / "reference"
    done = run_harvest(*stall_args(programs, out), env=engine.env())
    assert done.returncode == 0, done.stderr
    return programs, out


def stop(proc: subprocess.Popen[str]) -> None:
    """End a harvest a failed test leaves running (SIGTERM: it removes its containers, stops its Ray)."""
    if proc.poll() is None:
        proc.terminate()
        proc.communicate(timeout=120)


def start_and_stall(
    engine: PrivateEngine, programs: Path, out: Path, engine_wait_s: int
) -> tuple[dict[str, str], subprocess.Popen[str]]:
    """Start a harvest on the private engine and pause the engine once a unit's container runs;
    the harvest's environment and process."""
    env = {**engine.env(), **STALL_ENV, "WORLDTRACE_ENGINE_WAIT_S": str(engine_wait_s)}
    proc = subprocess.Popen(harvest_cmd(*stall_args(programs, out)), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_for_a_running_unit(engine, proc)
    engine.pause()
    return env, proc


def unit_folders_in_a_sandbox(out: Path) -> list[Path]:
    """The private folders of the units whose sandbox has not returned (see DockerSandbox)."""
    return list((out / ".worldtrace" / "work").glob("*/attempt-*/.stream.jsonl.sandbox"))


def test_an_engine_that_stalls_for_good_is_named_and_a_rerun_after_it_resumes_finishes_the_job(
    engine: PrivateEngine, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    programs, reference_out = reference
    out = tmp_path / "out"
    env, proc = start_and_stall(engine, programs, out, engine_wait_s=1)
    try:
        # Before: every control call waited for the SDK's 900 s socket timeout, per unit and try.
        _, stderr = proc.communicate(timeout=HANG_GUARD_S * 4)
        assert proc.returncode == 1, stderr
        assert f"SandboxEngineError: the Docker engine at {engine.host}" in stderr, stderr
        assert "within 5 s" in stderr and "it is stalled" in stderr, stderr
        # One node: no retry (each would wait out the timeouts again on the same silent engine).
        assert "no other node of the cluster has a Docker engine to retry on" in stderr, stderr
        assert "re-run the same command" in stderr
        assert not json.loads((out / "harvest-run.json").read_text())["complete"]
        # What is there is whole: shards only complete, no temporaries.
        assert committed_shards(out) == {p.name for p in shard_files(out)} and leftovers(out) == []
    finally:
        engine.resume()
        stop(proc)
    first_run = run_id(out)
    done = run_harvest(*stall_args(programs, out), env=env)
    assert done.returncode == 0, done.stderr
    assert_every_program_once(out)
    assert trace_ids(out) == trace_ids(reference_out)
    assert containers_of(engine, first_run) == [] and containers_of(engine, run_id(out)) == []


def test_an_engine_that_stalls_and_resumes_mid_harvest_costs_nothing(
    engine: PrivateEngine, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    programs, reference_out = reference
    out = tmp_path / "out"
    env, proc = start_and_stall(engine, programs, out, engine_wait_s=600)
    try:
        assert unit_folders_in_a_sandbox(out)
        # The units that ran noticed the stall (their sandbox returned, with an engine error: no call
        # to a stopped engine can succeed) and wait for it, well before their deadline.
        deadline = time.monotonic() + HANG_GUARD_S
        while unit_folders_in_a_sandbox(out):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the units did not notice that the engine stalled"
            time.sleep(0.2)  # polling the output folder, not synchronising
    except BaseException:
        engine.resume()
        stop(proc)
        raise
    engine.resume()
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert_every_program_once(out)
    assert trace_ids(out) == trace_ids(reference_out)
    assert containers_of(engine, run_id(out)) == []


def test_a_harvest_started_on_a_stalled_engine_names_it_at_once(engine: PrivateEngine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    engine.pause()
    try:
        # Before: the first ping waited for the SDK's 900 s socket timeout, saying nothing.
        done = run_harvest(REPO / "examples" / "programs", "--out", out, "-s", env={**engine.env(), **STALL_ENV},
                           timeout=HANG_GUARD_S)  # fmt: skip
    finally:
        engine.resume()
    assert done.returncode == 1, done.stderr
    assert f"the Docker engine at {engine.host} does not answer a ping within 5 s" in done.stderr
    assert not list(out.glob("*.parquet"))
