"""The locked-down container, verified from inside it: DockerSandbox runs a probe instead of the tracer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harvest.errors import ImageNotFound, RunnerFailed, UnitDeadlineExceeded
from harvest.sandbox import UnitRequest
from harvest.sandbox.docker import SANDBOX_HOSTNAME, DockerSandbox

pytestmark = pytest.mark.docker

# Runs inside the container as `python3 -m tracer batch JOBS --out OUT ...`; writes one JSON object.
PROBE = r"""
import ctypes, errno, json, os, sys

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def read(*paths):
    for p in paths:
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            pass
    return None

status = dict(l.split(":\t", 1) for l in read("/proc/self/status").splitlines() if ":\t" in l)
args = sys.argv[1:]
out = args[args.index("--out") + 1]
tmp = os.statvfs("/tmp")
probe = {
    "argv": args,
    "uid": os.getuid(), "gid": os.getgid(),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "write_root": attempt(lambda: open("/evil", "w")),
    "write_usr": attempt(lambda: open("/usr/lib/evil", "w")),
    "write_tracer": attempt(lambda: open("/opt/worldtrace/tracer/evil", "w")),
    "write_tmp": attempt(lambda: open("/tmp/fine", "w").write("x")),
    "write_jobs": attempt(lambda: open(args[1], "a")),
    "write_out": attempt(lambda: open("/out/extra", "w")),
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "pids_max": read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "mem_max": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "memsw_max": read("/sys/fs/cgroup/memory.swap.max", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
    "cpu_quota": read("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    "tmp_bytes": tmp.f_blocks * tmp.f_frsize,
    "pid1": read("/proc/1/comm"),
    "env": {k: os.environ.get(k) for k in ("PYTHONHASHSEED", "TZ", "LANG", "PYTHONPATH")},
    "cwd": os.getcwd(),
    "tracer_file": __file__,
}
with open(out, "a") as f:
    f.write(json.dumps(probe) + "\n")
"""


def _request(tmp_path: Path, run_id: str, **kw: Any) -> UnitRequest:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"program_id": "p1", "mode": "script", "source": "print(1)"}\n')
    options: dict[str, Any] = dict(
        run_id=run_id, unit_id="u1", attempt=0, image="base-py311",
        jobs_path=jobs, output_path=tmp_path / "out" / "stream.jsonl",
    )  # fmt: skip
    options.update(kw)
    return UnitRequest(**options)


def test_container_is_locked_down(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    tracer = fake_tracer(PROBE)
    req = _request(tmp_path, run_id, memory_mb=200, pids=64, tmpfs_mb=32, cpus=0.5)
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox:
        outcome = sandbox.run_unit(req)
    assert outcome.exit_code == 0 and outcome.container_id and not outcome.oom_killed
    assert 0 < outcome.startup_s < outcome.wall_time_s and outcome.teardown_s > 0
    (probe,) = [json.loads(line) for line in req.output_path.read_text().splitlines()]
    assert probe["uid"] != 0 and probe["gid"] != 0
    assert probe["interfaces"] == ["lo"]  # network_mode=none
    assert probe["write_root"] == "EROFS" and probe["write_usr"] == "EROFS"
    assert probe["write_tracer"] == "EROFS"  # the tracer is mounted read-only
    assert probe["write_tmp"] == "ok" and probe["write_out"] == "ok"
    assert probe["write_jobs"] == "EROFS"  # the unit's jobs are read-only, even inside /out
    assert int(probe["cap_eff"], 16) == 0 and int(probe["cap_bnd"], 16) == 0
    assert probe["no_new_privs"] == "1"
    assert probe["pids_max"] == "64"
    assert int(probe["mem_max"]) == 200 * 2**20
    assert probe["memsw_max"] in (str(200 * 2**20), "0")  # v1: mem+swap total; v2: swap only
    assert probe["cpu_quota"] in ("50000", "50000 100000")  # cpus=0.5 (cgroup v1, v2)
    assert probe["tmp_bytes"] == 32 * 2**20
    assert probe["pid1"] in ("docker-init", "tini")  # init=True
    assert probe["env"] == {
        "PYTHONHASHSEED": "0",
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/opt/worldtrace",
    }
    assert probe["tracer_file"] == "/opt/worldtrace/tracer/__main__.py"
    assert probe["argv"][:2] == ["batch", "/out/jobs.jsonl"]
    assert probe["argv"][probe["argv"].index("--out") + 1] == "/out/stream.jsonl"
    # the stream came back to the host, owned by us, and the unit's private folder is gone
    assert req.output_path.stat().st_uid == Path(tmp_path).stat().st_uid
    assert [p.name for p in req.output_path.parent.iterdir()] == [
        "stream.jsonl"
    ]  # /out/extra went too


def test_stream_is_appended_across_runs(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    tracer = fake_tracer(
        "import sys\nout = sys.argv[sys.argv.index('--out') + 1]\nopen(out, 'a').write('{\"n\": 1}\\n')\n",
    )
    req = _request(tmp_path, run_id)
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox:
        sandbox.run_unit(req)
        sandbox.run_unit(req)
    assert req.output_path.read_text() == '{"n": 1}\n{"n": 1}\n'


def test_relative_paths_work_as_in_docs_sandbox_md(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer = fake_tracer("import sys\nout = sys.argv[sys.argv.index('--out') + 1]\nopen(out, 'a').write('{}\\n')\n")
    monkeypatch.chdir(tmp_path)
    req = _request(tmp_path, run_id, jobs_path=Path("jobs.jsonl"), output_path=Path("out/u0001.jsonl"))
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox:
        assert sandbox.run_unit(req).exit_code == 0
    assert (tmp_path / "out" / "u0001.jsonl").read_text() == "{}\n"


def test_unit_deadline_kills_the_container(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    tracer = fake_tracer("import time\nwhile True:\n    time.sleep(1)\n")
    req = _request(tmp_path, run_id, unit_timeout_s=3)
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox, pytest.raises(
        UnitDeadlineExceeded
    ):
        sandbox.run_unit(req)


def test_runner_failure_is_an_error_with_its_stderr(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    tracer = fake_tracer("import sys\nprint('bad jobs file', file=sys.stderr)\nsys.exit(2)\n")
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox, pytest.raises(
        RunnerFailed
    ) as info:
        sandbox.run_unit(_request(tmp_path, run_id))
    assert info.value.exit_code == 2 and "bad jobs file" in info.value.stderr_tail


def test_missing_image_is_an_infrastructure_error(
    tmp_path: Path, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    tracer = fake_tracer("")
    req = _request(tmp_path, run_id, image="worldtrace-no-such-image:0")
    with DockerSandbox(docker_client, tracer_dir=tracer) as sandbox, pytest.raises(
        ImageNotFound
    ) as info:
        sandbox.run_unit(req)
    # Not in the catalog either: the message says so instead of suggesting a build that would fail.
    assert not info.value.retryable and "not in the image catalog" in str(info.value)
    assert "base-py311" in str(info.value)


def test_programs_see_the_same_deterministic_world(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any
) -> None:
    """Hash seed, set order, time zone and locale: equal across containers and equal to LocalSandbox;
    the host name (which Docker makes the container id, and puts in $HOSTNAME) equal across containers."""
    from harvest.sandbox.local import LocalSandbox

    source = (
        "import locale, os, socket, sys, time\n"
        "print(hash('worldtrace'), list({'alpha', 'beta', 'gamma', 'delta'}), time.tzname,\n"
        "      locale.getpreferredencoding(False), sys.flags.hash_randomization)\n"
        "print(socket.gethostname(), os.environ.get('HOSTNAME'))\n"
    )
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"program_id": "world", "mode": "script", "source": source}) + "\n")
    outputs = []
    with DockerSandbox(docker_client) as sandbox:
        for unit in ("a", "b"):
            req = UnitRequest(run_id, unit, 0, "base-py311", jobs, tmp_path / unit / "stream.jsonl")
            sandbox.run_unit(req)
            outputs.append(json.loads(req.output_path.read_text())["stdout"])
    local = UnitRequest(run_id, "local", 0, "-", jobs, tmp_path / "local" / "stream.jsonl")
    LocalSandbox().run_unit(local)
    outputs.append(json.loads(local.output_path.read_text())["stdout"])
    assert outputs[0] == outputs[1] and outputs[0].splitlines()[0] == outputs[2].splitlines()[0], outputs
    assert "('UTC', 'UTC') UTF-8 0" in outputs[0]
    assert outputs[0].splitlines()[1] == f"{SANDBOX_HOSTNAME} {SANDBOX_HOSTNAME}"
