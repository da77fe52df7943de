"""No container outlives its run: interrupted, terminated and SIGKILLed drivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harvest.sandbox import UnitRequest
from harvest.sandbox.docker import DockerSandbox

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]

# The stand-in tracer traces one "program", then hangs, so that the driver dies mid-unit.
HANGING_TRACER = """
import sys, time
out = sys.argv[sys.argv.index('--out') + 1]
with open(out, 'a') as f:
    f.write('{"program_id": "first"}\\n')
while True:
    time.sleep(1)
"""

DRIVER = """
import json, sys
from pathlib import Path
from harvest.sandbox import UnitRequest
from harvest.sandbox.docker import DockerSandbox
req = UnitRequest(**{**json.loads(sys.argv[1]), "jobs_path": Path(sys.argv[2]), "output_path": Path(sys.argv[3])})
DockerSandbox(tracer_dir=Path(sys.argv[4])).run_unit(req)
"""


def _start_driver(
    tmp_path: Path, run_id: str, tracer: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"program_id": "first", "mode": "script", "source": "pass"}\n')
    output = tmp_path / "out" / "stream.jsonl"
    fields = {
        "run_id": run_id,
        "unit_id": "u1",
        "attempt": 0,
        "image": "base-py311",
        "unit_timeout_s": 120,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(fields), str(jobs), str(output), str(tracer)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    return proc, output


def _wait_for_first_trace(
    proc: subprocess.Popen[bytes], output: Path, deadline_s: float = 60
) -> None:
    """Wait until the container has written its first line (it then hangs)."""
    leftover = output.parent / f".{output.name}.sandbox" / "stream.jsonl"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, "the driver exited early"
        if leftover.exists() and leftover.stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the container never started tracing")


def _containers(client: Any, run_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"worldtrace.run={run_id}"}))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_driver_removes_its_container(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any, signum: int
) -> None:
    proc, output = _start_driver(tmp_path, run_id, fake_tracer(HANGING_TRACER))
    _wait_for_first_trace(proc, output)
    assert len(_containers(docker_client, run_id)) == 1
    proc.send_signal(signum)
    assert proc.wait(timeout=60) != 0
    assert _containers(docker_client, run_id) == []  # removed by the driver itself, no reaping
    # what it traced before the interrupt is back at the output path
    assert output.read_text() == '{"program_id": "first"}\n'


def test_sigkilled_driver_is_reaped_on_next_start(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    proc, output = _start_driver(tmp_path, run_id, fake_tracer(HANGING_TRACER))
    _wait_for_first_trace(proc, output)
    proc.kill()
    proc.wait(timeout=30)
    (orphan,) = _containers(docker_client, run_id)  # SIGKILL: no `finally` ran
    orphan.reload()
    assert orphan.status == "running"

    # The next start (another process on this host) reaps containers whose owner is dead ...
    finishing = fake_tracer(
        "import sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
        "open(out, 'a').write('{\"program_id\": \"second\"}\\n')\n"
    )
    sandbox = DockerSandbox(docker_client, tracer_dir=finishing)
    assert _containers(docker_client, run_id) == []
    # ... and the next attempt resumes from what the dead one had traced.
    jobs = tmp_path / "jobs.jsonl"
    sandbox.run_unit(UnitRequest(run_id, "u1", 1, "base-py311", jobs, output))
    assert output.read_text().splitlines() == [
        '{"program_id": "first"}',
        '{"program_id": "second"}',
    ]
    assert [p.name for p in output.parent.iterdir()] == ["stream.jsonl"]


def test_reap_by_run_id_removes_every_container_of_the_run(
    base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    sandbox = DockerSandbox(docker_client, tracer_dir=fake_tracer(""), reap_on_start=False)
    for unit in ("a", "b"):
        docker_client.containers.create(
            base_image, ["sleep", "60"], labels={"worldtrace.run": run_id, "worldtrace.unit": unit,
                                                  "worldtrace.owner": sandbox.owner},
        )  # fmt: skip
    assert sandbox.reap() == 0  # their owner (this process) is alive
    assert len(_containers(docker_client, run_id)) == 2
    assert sandbox.reap(run_id) == 2
    assert _containers(docker_client, run_id) == []


def test_reap_skips_a_container_removed_while_it_lists(
    base_image: str, run_id: str, docker_client: Any, fake_tracer: Any, monkeypatch: Any
) -> None:
    """The engine lists containers, then the SDK inspects each one; a container that its own
    unit (or another reaper) removes in between is skipped, not an engine error. The race is
    made deterministic by removing the container right before the SDK inspects it."""
    sandbox = DockerSandbox(docker_client, tracer_dir=fake_tracer(""), reap_on_start=False)
    labels = {"worldtrace.run": run_id, "worldtrace.unit": "u", "worldtrace.owner": sandbox.owner}
    gone = docker_client.containers.create(base_image, ["sleep", "60"], labels=labels)
    docker_client.containers.create(base_image, ["sleep", "60"], labels=labels)
    inspect = docker_client.api.inspect_container

    def remove_first(container_id: str) -> Any:
        if container_id == gone.id:
            docker_client.api.remove_container(container_id, force=True)
        return inspect(container_id)

    monkeypatch.setattr(docker_client.api, "inspect_container", remove_first)
    assert sandbox.reap(run_id) == 1
    monkeypatch.undo()
    assert _containers(docker_client, run_id) == []


def test_interrupt_inside_create_leaves_no_container(
    tmp_path: Path,
    base_image: str,
    run_id: str,
    docker_client: Any,
    fake_tracer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while the engine is creating the container: it exists, but `create` never returned it."""
    sandbox = DockerSandbox(docker_client, tracer_dir=fake_tracer(""), reap_on_start=False)
    from docker.models.containers import ContainerCollection

    real_create = ContainerCollection.create

    def create_then_interrupt(self: Any, *args: Any, **kwargs: Any) -> Any:
        real_create(self, *args, **kwargs)  # the engine really creates it
        raise KeyboardInterrupt

    monkeypatch.setattr(ContainerCollection, "create", create_then_interrupt)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("")
    with pytest.raises(KeyboardInterrupt):
        sandbox.run_unit(
            UnitRequest(run_id, "u1", 0, "base-py311", jobs, tmp_path / "o" / "s.jsonl")
        )
    assert _containers(docker_client, run_id) == []


def test_the_engines_unix_socket_client_does_not_search_the_environment_at_every_call(
    docker_engine: None, monkeypatch: Any
) -> None:
    # requests reads proxies and .netrc from the environment for every request of a session that
    # trusts it: a third of each control call's CPU, for settings a Unix socket never uses.
    import requests.sessions

    from harvest import docker_client

    if not docker_client.engine_address().startswith("unix://"):
        pytest.skip("the engine is not on a Unix socket")
    monkeypatch.setattr(docker_client, "_clients", {})  # a client of its own, not the session's
    client = docker_client.get_client(30.0)  # (the SDK's version query on creation may search it)

    def searched(*args: object, **kwargs: object) -> None:
        raise AssertionError("a control call searched the environment")

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", searched)
    monkeypatch.setattr(requests.sessions, "get_netrc_auth", searched)
    assert client.ping()
    client.containers.list(limit=1)
