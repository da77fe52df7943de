"""Fixtures for the harvest tests: a real Ray cluster of our own, and harvest runs as subprocesses."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A one-node Ray cluster (2 CPUs, 2 Docker slots) of our own; stopped (only it) at the end."""
    tmp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    # Ray enables token authentication for the clusters it starts; drivers given an explicit
    # address use it only when told to. The cluster gets its own token (a fresh CI machine has none).
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    env.pop("RAY_ADDRESS", None)
    head = start_node(
        ["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--resources={json.dumps({'worldtrace_docker': 2})}", f"--temp-dir={tmp / 't'}"],
        tmp / "head.log",
        env,
    )  # fmt: skip
    cluster = Cluster(address=f"127.0.0.1:{port}", env=env, tmp=tmp, nodes=[head])
    try:
        wait_for_nodes(cluster.address, 1, env, cluster.nodes)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.stop()


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
