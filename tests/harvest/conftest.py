"""Fixtures for the harvest tests: a real Ray cluster of our own, and harvest runs as subprocesses."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.sandbox.docker import LABEL_RUN
from harvest.shard_io import committed_shards

BIN = Path(sys.executable).parent
WORLDTRACE = str(BIN / "worldtrace")
RAY = str(BIN / "ray")
START_TIMEOUT_S = 180.0  # a loaded 2-core CI machine starts Ray slowly


@dataclass
class RayNode:
    """A `ray start --block` process we started, in its own process group."""

    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM lets `ray start --block` stop its node; then nothing of its group may remain."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(args: list[str], log: Path, env: dict[str, str]) -> RayNode:
    out = log.open("wb")
    proc = subprocess.Popen(
        [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out.close()
    return RayNode(proc, log)


def node_count(address: str, env: dict[str, str]) -> int:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0


def wait_for_nodes(address: str, n: int, env: dict[str, str], nodes: list[RayNode]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while node_count(address, env) < n:
        for node in nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start exited early:\n{node.log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster did not reach {n} nodes in {START_TIMEOUT_S:.0f} s")


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    tmp: Path
    nodes: list[RayNode]

    def add_node(self, cpus: int, docker_slots: int, env: dict[str, str] | None = None) -> RayNode:
        """A node joining the cluster; `env` (default the cluster's) is what its workers run in."""
        node = start_node(
            [f"--address={self.address}", f"--num-cpus={cpus}", f"--resources={json.dumps({'worldtrace_docker': docker_slots})}"],
            self.tmp / f"node{len(self.nodes)}.log",
            env or self.env,
        )
        self.nodes.append(node)
        wait_for_nodes(self.address, len(self.nodes), self.env, self.nodes)
        return node


def cluster_env(**ray_settings: str) -> dict[str, str]:
    """The environment of a Ray cluster of our own (and of its drivers), with `ray_settings`.

    Ray enables token authentication for the clusters it starts; drivers given an explicit
    address use it only when told to. The cluster gets its own token (a fresh CI machine has none).
    """
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        **ray_settings,
    }
    env.pop("RAY_ADDRESS", None)
    return env


@contextmanager
def own_cluster(tmp: Path, env: dict[str, str], cpus: int, docker_slots: int) -> Iterator[Cluster]:
    """A Ray cluster of our own in `env`: its head of `cpus` CPUs and `docker_slots` Docker slots;
    every node of it (the tests may add some) stopped at the end."""
    port = _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="wt-ray-")  # short: Ray's socket paths must fit in 107 bytes
    args = ["--head", f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false", f"--temp-dir={ray_tmp}"]
    if docker_slots:
        args.append(f"--resources={json.dumps({'worldtrace_docker': docker_slots})}")
    head = start_node(args, tmp / "head.log", env)
    cluster = Cluster(address=f"127.0.0.1:{port}", env=env, tmp=tmp, nodes=[head])
    try:
        wait_for_nodes(cluster.address, 1, env, cluster.nodes)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def quick_cluster(tmp: Path, docker_slots: int, **ray_settings: str) -> AbstractContextManager[Cluster]:
    """A cluster of our own, its head of one CPU and `docker_slots` Docker slots, whose GCS declares
    a node that stops answering dead within seconds (Ray's default takes about half a minute)."""
    env = cluster_env(RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3", **ray_settings)
    return own_cluster(tmp, env, cpus=1, docker_slots=docker_slots)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A one-node Ray cluster (2 CPUs, 2 Docker slots) of our own; stopped (only it) at the end."""
    with own_cluster(tmp_path_factory.mktemp("ray"), cluster_env(), cpus=2, docker_slots=2) as cluster:
        yield cluster


def harvest_cmd(*args: str | Path) -> list[str]:
    return [WORLDTRACE, "harvest", *(str(a) for a in args)]


def run_harvest(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(harvest_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)


def shard_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))


def trace_ids(out: Path) -> list[str]:
    """Every trace id in the folder's shards, sorted (duplicates kept, so they show)."""
    ids: list[str] = []
    for shard in shard_files(out):
        ids.extend(pq.read_table(shard, columns=["trace_id"]).column("trace_id").to_pylist())
    return sorted(ids)


def leftovers(out: Path) -> list[str]:
    """Temporary or partial files visible in the output folder."""
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name)


def sleepy_programs(path: Path, n: int, seconds: float) -> Path:
    """n call programs that each take about `seconds`."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            source = f"import time\n\ndef f(x):\n    time.sleep({seconds})\n    return x * {i}\n"
            f.write(json.dumps({"id": f"slow-{i:03d}", "source": source, "entrypoint": "f", "input": "2"}) + "\n")
    return path


# -- nodes that come and go (test_harvest_node_loss.py, test_harvest_node_stall.py) -------------


def docker_args(programs: Path, out: Path, cluster: Cluster, per_unit: int) -> list[str | Path]:
    """`worldtrace harvest` arguments: `programs` in Docker sandboxes on `cluster`, silent."""
    return [programs, "--out", out, "--sandbox", "docker", "--programs-per-unit", str(per_unit),
            "--ray-address", cluster.address, "-s"]  # fmt: skip


def assert_same_result(out: Path, reference: Path, n_programs: int) -> None:
    """`out` holds what the uninterrupted harvest `reference` holds, and nothing besides."""
    ids = trace_ids(out)
    assert len(ids) == len(set(ids)) == n_programs
    assert ids == trace_ids(reference)
    assert [p.name for p in shard_files(out)] == [p.name for p in shard_files(reference)]
    assert committed_shards(out) == {p.name for p in shard_files(out)}
    assert leftovers(out) == [] and list((out / ".worldtrace" / "work").iterdir()) == []
    check = subprocess.run([WORLDTRACE, "validate", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def run_containers(run_id: str) -> list[str]:
    done = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL_RUN}={run_id}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.split()


def processes_of(node: RayNode) -> list[tuple[int, str]]:
    """Pid and command line of every process in the node's session (`ray start` began it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == node.proc.pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue  # gone meanwhile
    return found


def unit_started_on(node: RayNode, out: Path, proc: subprocess.Popen[str]) -> str:
    """The id of a unit that a worker of `node` runs, once its first program has started (the
    others of the unit still to run)."""
    work = out / ".worldtrace" / "work"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the harvest ended before the node could be lost"
        for attempt in sorted(work.glob("*/attempt-1")) if work.exists() else []:
            try:
                pid = json.loads((attempt / "attempt.json").read_text())["pid"]
                started = sum(p.read_text().count("\n") for p in attempt.glob("**/stream.jsonl.started"))
                on_node = os.getsid(pid) == node.proc.pid
            except (OSError, ValueError):
                continue
            if on_node and started == 1:
                return attempt.parent.name
        time.sleep(0.02)  # polling the units' progress, not synchronising
    raise AssertionError("no unit started on the node")
