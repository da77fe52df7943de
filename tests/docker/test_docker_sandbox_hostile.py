"""Hostile programs in one DockerSandbox unit, traced by the real batch runner: each gets its status,
the programs around it are unaffected, and the container is gone afterwards (the run_id fixture)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from harvest.sandbox import UnitRequest
from harvest.sandbox.docker import DockerSandbox

pytestmark = pytest.mark.docker

BENIGN = "def f(a):\n    b = a * 2\n    return b\n"

HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "output_flood": "import sys\nfor i in range(5):\n    sys.stdout.write('x' * 10 ** 7)\n",
    "os_exit": "import os\nos._exit(3)\n",
    "segfault": "import ctypes\nctypes.string_at(0)\n",
    "write_outside_tmp": "open('/etc/evil', 'w').write('x')\n",
    "write_tmp": "open('/tmp/fine', 'w').write('x')\nprint(open('/tmp/fine').read())\n",
    "tamper_jobs": "open('/out/jobs.jsonl', 'a').write('{}')\n",
    "tracer_off": "import sys\nsys.settrace(None)\nx = 1\nprint(x + 1)\n",
    # Leaves files in /tmp and /dev/shm, a directory it locked, and a link out of /tmp ...
    "leaves_files": (
        "import os\n"
        "open('/tmp/left', 'w').write('x')\n"
        "open('/dev/shm/left', 'w').write('x')\n"
        "os.makedirs('/tmp/locked/inner')\n"
        "open('/tmp/locked/inner/f', 'w').write('x')\n"
        "os.chmod('/tmp/locked', 0)\n"
        "os.symlink('/out/jobs.jsonl', '/tmp/link')\n"
    ),
    # ... that a later program of the same unit does not see (the runner empties them).
    "sees_scratch": "import os\nprint(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')))\n",
    # System V IPC objects outlive their program (and their memory counts against the container) ...
    "leaves_ipc": (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "made = [libc.shmget(0x5EC7, 1 << 20, 0o1600), libc.msgget(0x5EC8, 0o1600), libc.semget(0x5EC9, 1, 0o1600)]\n"
        "print([m >= 0 for m in made])\n"
    ),
    # ... so the runner removes them before the next program (--private-ipc).
    "sees_ipc": "print([len(open('/proc/sysvipc/' + k).read().splitlines()) - 1 for k in ('shm', 'msg', 'sem')])\n",
    # The unit's jobs (programs to come) and the rows of the programs before: not for reading.
    "reads_out": "print(len(open('/out/stream.jsonl').read()))\n",
    "reads_jobs": "print(len(open('/out/jobs.jsonl').read()))\n",
    # When the container runs out of memory, the kernel kills a program, not the runner.
    "oom_score": "print(open('/proc/self/oom_score_adj').read().strip())\n",
    # The runner's own files and process (same uid): Landlock keeps the programs off them.
    "tamper_stream": "open('/out/stream.jsonl', 'a').write('{\"program_id\": \"forged\"}\\n')\n",
    "kill_runner": "import os, signal\nos.kill(1 if os.getppid() == 1 else os.getppid(), signal.SIGKILL)\n",
}


def _jobs() -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for i, (name, source) in enumerate(HOSTILE.items()):
        jobs.append(
            {
                "program_id": f"before-{i}",
                "mode": "call",
                "source": BENIGN,
                "entrypoint": "f",
                "input": str(i),
            }
        )
        jobs.append({"program_id": name, "mode": "script", "source": source})
    jobs.append(
        {"program_id": "last", "mode": "call", "source": BENIGN, "entrypoint": "f", "input": "100"}
    )
    return jobs


@pytest.fixture(scope="module")
def traces(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, base_image: str
) -> dict[str, Any]:
    """Run every hostile program in one unit (one container) and return the traces by program id."""
    folder = tmp_path_factory.mktemp("hostile")
    jobs = folder / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(job) + "\n" for job in _jobs()))
    req = UnitRequest(
        run_id="test-hostile", unit_id="u1", attempt=0, image="base-py311", jobs_path=jobs,
        output_path=folder / "stream.jsonl", program_timeout_s=3, unit_timeout_s=240,
        memory_mb=256, pids=128,
    )  # fmt: skip
    with DockerSandbox(docker_client) as sandbox:
        try:
            outcome = sandbox.run_unit(req)
        finally:
            left = sandbox.containers("test-hostile")
            sandbox.reap("test-hostile")
    assert left == [], "the unit's container was not removed"
    assert outcome.exit_code == 0
    rows = [json.loads(line) for line in req.output_path.read_text().splitlines()]
    by_id = {row["program_id"]: row for row in rows}
    assert len(by_id) == len(rows) == len(_jobs()), "a program is missing, traced twice or forged"
    runs = req.output_path.parent / (req.output_path.name + ".runs.jsonl")
    by_id["<run record>"] = json.loads(runs.read_text().splitlines()[-1])
    return by_id


def test_programs_cannot_touch_the_runners_stream_or_signal_it(traces: dict[str, Any]) -> None:
    confinement = traces["<run record>"]["confinement"]
    if not confinement["landlock_abi"]:
        pytest.skip(f"the engine's kernel has no Landlock: {confinement['unavailable']}")
    assert "forged" not in traces  # the stream is the runner's alone
    assert traces["tamper_stream"]["exception_type"] == "PermissionError", traces["tamper_stream"]
    for name in ("reads_out", "reads_jobs"):
        assert traces[name]["exception_type"] == "PermissionError", traces[name]
    if confinement["signals_scoped"]:
        assert traces["kill_runner"]["exception_type"] == "PermissionError", traces["kill_runner"]


def test_benign_programs_are_unaffected(traces: dict[str, Any]) -> None:
    for i in range(len(HOSTILE)):
        row = traces[f"before-{i}"]
        assert (row["status"], row["return_value"]) == ("ok", str(2 * i)), row
    assert traces["last"]["return_value"] == "200"


@pytest.mark.parametrize(
    ("name", "statuses"),
    [
        ("infinite_loop", {"timeout"}),
        ("memory_bomb", {"memory"}),
        ("os_exit", {"crashed"}),
        ("segfault", {"crashed"}),
        ("write_outside_tmp", {"exception"}),
        ("tamper_jobs", {"exception"}),  # the jobs file is mounted read-only
        ("write_tmp", {"ok"}),
        ("tracer_off", {"ok"}),
        ("leaves_files", {"ok"}),
        ("sees_scratch", {"ok"}),
        ("leaves_ipc", {"ok"}),
        ("sees_ipc", {"ok"}),
        ("oom_score", {"ok"}),
        # every fork fails at the pids/process limits; the bomb ends as an exception or at its deadline
        ("fork_bomb", {"exception", "timeout", "crashed"}),
    ],
)
def test_hostile_program_gets_its_status(
    traces: dict[str, Any], name: str, statuses: set[str]
) -> None:
    assert traces[name]["status"] in statuses, traces[name]


def test_details_of_hostile_outcomes(traces: dict[str, Any]) -> None:
    assert "SIGSEGV" in traces["segfault"]["exception_message"]
    assert (
        "os._exit" in traces["os_exit"]["exception_message"]
        or "3" in traces["os_exit"]["exception_message"]
    )
    assert traces["write_outside_tmp"]["exception_type"] in ("OSError", "PermissionError")
    assert (
        "Read-only file system" in traces["write_outside_tmp"]["exception_message"]
        or "Permission" in (traces["write_outside_tmp"]["exception_message"])
    )
    assert traces["write_tmp"]["stdout"] == "x\n"
    assert traces["tracer_off"]["stdout"] == "2\n"
    assert traces["sees_scratch"]["stdout"] == "[] []\n", "a program saw files an earlier one left"
    assert traces["leaves_ipc"]["stdout"] == "[True, True, True]\n", traces["leaves_ipc"]
    assert traces["sees_ipc"]["stdout"] == "[0, 0, 0]\n", "a program saw System V IPC objects an earlier one left"
    assert traces["oom_score"]["stdout"] == "1000\n"
    flood = traces["output_flood"]
    assert flood["status"] == "ok" and flood["output_truncated"] is True
    assert len(flood["stdout"]) <= flood["limits"]["max_output_bytes"]


# A runner that Landlock does not confine (as every program is on an engine without it) leaves
# links to a host file, FIFOs and a folder where the host expects the files of its unit folder.
LINKS_TO_THE_HOST = """
import os
os.unlink('/out/stream.jsonl')
for name in ('stream.jsonl', 'stream.jsonl.runs.jsonl', 'stream.jsonl.started'):
    os.symlink(HOST_FILE, '/out/' + name)
"""
FIFOS_AND_A_FOLDER = """
import os
os.unlink('/out/stream.jsonl')
os.mkdir('/out/stream.jsonl')
os.mkfifo('/out/stream.jsonl.runs.jsonl')
os.mkfifo('/out/stream.jsonl.started')
"""


@pytest.mark.timeout(300)  # a host that opened a FIFO would block here for good
def test_the_host_takes_only_regular_files_from_the_unit_folder(
    tmp_path: Path, base_image: str, run_id: str, docker_client: Any, fake_tracer: Any
) -> None:
    host_file = tmp_path / "host-file"
    host_file.write_text('{"program_id": "p1", "status": "ok", "secret": "of the host"}\n')
    owner = (4242, 4242) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(host_file, *owner)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"program_id": "p1", "mode": "script", "source": "print(1)"}\n')
    runners = {"links": LINKS_TO_THE_HOST.replace("HOST_FILE", repr(str(host_file))), "fifos": FIFOS_AND_A_FOLDER}
    for name, runner in runners.items():
        output = tmp_path / name / "stream.jsonl"
        req = UnitRequest(run_id=run_id, unit_id="u1", attempt=0, image="base-py311", jobs_path=jobs,
                          output_path=output, unit_timeout_s=120)  # fmt: skip
        with DockerSandbox(docker_client, tracer_dir=fake_tracer(runner)) as sandbox:
            sandbox.run_unit(req)
            sandbox.run_unit(req)  # a second round moves the output back in, and hands it over
        beside = {p.name: os.lstat(p) for p in output.parent.iterdir()}
        assert all(stat.S_ISREG(st.st_mode) for st in beside.values()), beside
        assert "secret" not in "".join(p.read_text() for p in output.parent.iterdir())
        assert (os.stat(host_file).st_uid, os.stat(host_file).st_gid) == owner, "the host chowned a host file"
