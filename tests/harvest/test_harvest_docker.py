"""Harvests in real Docker sandboxes: the README command, CRUXEval, hostile programs, a killed driver,
a repository's test suite. No container of a run may outlive it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.rows import expected_rendering
from tests.harvest.conftest import (
    WORLDTRACE,
    Cluster,
    harvest_cmd,
    leftovers,
    run_harvest,
    shard_files,
    trace_ids,
)
from tracer._landlock import landlock_abi

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(docker_engine: None):  # type: ignore[no-untyped-def]
    import docker

    client = docker.from_env()
    yield client
    client.close()


def built(image: str) -> None:
    """Build the catalog image if it is missing (a no-op when its recipe hash is already built)."""
    done = subprocess.run([WORLDTRACE, "images", "build", image], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        pytest.skip(f"cannot build image {image}: {(done.stderr or done.stdout)[-500:]}")


@pytest.fixture(scope="module")
def base_image(engine) -> str:  # type: ignore[no-untyped-def]
    built("base-py311")
    return "base-py311"


def run_manifest(out: Path) -> dict:
    return json.loads((out / "harvest-run.json").read_text())


def containers_of(engine, run_id: str) -> list:  # type: ignore[no-untyped-def]
    # sparse: without it the SDK inspects each listed container, and one the harvest removes
    # in between (it polls while units start and stop) raised NotFound
    return engine.containers.list(all=True, sparse=True, filters={"label": f"worldtrace.run={run_id}"})


def rows(out: Path, columns: list[str]) -> list[dict]:
    found: list[dict] = []
    for shard in shard_files(out):
        found.extend(pq.read_table(shard, columns=columns).to_pylist())
    return found


def test_the_readme_command_harvests_the_examples(engine, base_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Embedded Ray, default image, Docker sandbox: exactly what the README runs."""
    out = tmp_path / "harvest-out"
    done = subprocess.run(harvest_cmd(REPO / "examples" / "programs", "--out", out), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"shards are in {out}/" in done.stdout
    for hint in (f"worldtrace inspect {out}", f"worldtrace query {out}", f"worldtrace validate {out}"):
        assert hint in done.stdout
    data = run_manifest(out)
    assert data["complete"] and data["images"] == {"base-py311": 16}
    assert data["counts"] == {"exception": 1, "ok": 15}
    assert containers_of(engine, data["run_id"]) == []
    by_id = {r["program_id"]: r for r in rows(out, ["program_id", "return_value", "stdout", "python_version"])}
    assert by_id["fibonacci"]["return_value"] == "55"
    assert by_id["word_ladder"]["stdout"] == "cold -> cord -> word -> ward -> warm\n"
    assert by_id["fibonacci"]["python_version"].startswith("3.11")
    check = subprocess.run([WORLDTRACE, "validate", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_examples_harvest_alike_in_the_newest_python_image(engine, base_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each program in base-py311 and in base-py315 (Debian testing's CPython 3.15, where `auto`
    picks the monitoring backend): same statuses, results and output in both."""
    built("base-py315")
    out = tmp_path / "out"
    done = run_harvest(REPO / "examples" / "programs", "--out", out, "--image", "base-py311", "--image", "base-py315", "-s")
    assert done.returncode == 0, done.stderr[-2000:]
    data = run_manifest(out)
    assert data["images"] == {"base-py311": 16, "base-py315": 16}
    # 3.15's batch runner forked the programs from an immortal heap, 3.11's could not
    assert data["immortal_heap"] == {"units_immortal": 1, "units_mortal": 1, "turned_off": [],
                                     "why_mortal": ["no immortal objects in this interpreter (cpython 3.11)"]}
    columns = ["program_id", "status", "return_value", "exception_type", "stdout", "python_version", "backend"]
    by_python: dict[str, dict] = {}
    for row in rows(out, columns):
        by_python.setdefault(row.pop("python_version")[:4], {})[row.pop("program_id")] = row
    assert sorted(by_python) == ["3.11", "3.15"]
    assert {r.pop("backend") for r in by_python["3.11"].values()} == {"settrace"}
    assert {r.pop("backend") for r in by_python["3.15"].values()} == {"monitoring"}
    assert by_python["3.15"] == by_python["3.11"]


# Crashes (SIGSEGV) only where the batch runner's heap is immortal (Python 3.12+ images), as a
# CPython whose immortal objects the tracer got wrong would.
CRASHES_ON_IMMORTAL = (
    "import os, signal, sys\n"
    "if sys.getrefcount(os.path.join) >= 2 ** 30:\n"
    "    os.kill(os.getpid(), signal.SIGSEGV)\n"
    "print('ran')\n"
)


def test_a_crash_of_the_immortal_heap_is_rerun_and_reported(engine, base_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """In a 3.12+ image the batch runner's fork server makes its heap immortal. A program that
    crashes only there runs again on a mortal heap (its row is that run's), and the harvest's
    summary and run manifest say which unit's runner went on with a mortal heap."""
    built("base-py315")
    source = tmp_path / "programs.jsonl"
    programs = [{"id": "heap-crash", "source": CRASHES_ON_IMMORTAL}, {"id": "after", "source": "print(sum(range(10)))\n"}]
    source.write_text("".join(json.dumps(p) + "\n" for p in programs))
    out = tmp_path / "out"
    done = run_harvest(source, "--out", out, "--image", "base-py315")
    assert done.returncode == 0, done.stderr[-2000:]
    found = {r["program_id"]: r for r in rows(out, ["program_id", "status", "stdout"])}
    assert found["heap-crash"]["status"] == "ok" and found["heap-crash"]["stdout"] == "ran\n", found
    assert found["after"]["stdout"] == "45\n"
    data = run_manifest(out)
    heap = data["immortal_heap"]
    assert [(t["after"], t["image"]) for t in heap["turned_off"]] == [("heap-crash", "base-py315")], heap
    assert heap["units_immortal"] == 1 and heap["units_mortal"] == 0  # it started immortal
    assert "crashed on the batch runner's immortal heap" in done.stdout and "base-py315" in done.stdout


def test_cruxeval_end_to_end(engine, base_image: str, ray_cluster: Cluster, cruxeval: list[dict], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """All 800 programs: every rendered return value equals the rendering of the expected output."""
    source = tmp_path / "cruxeval.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in cruxeval), encoding="utf-8")
    out = tmp_path / "out"
    done = run_harvest(source, "--out", out, "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    data = run_manifest(out)
    assert data["counts"] == {"ok": len(cruxeval)} and data["expected_output_mismatches"] == 0
    found = {r["program_id"]: r for r in rows(out, ["program_id", "status", "return_value"])}
    assert len(found) == len(cruxeval) == len(set(trace_ids(out)))
    wrong = [
        (row["id"], found[row["id"]]["return_value"], row["output"])
        for row in cruxeval
        if found[row["id"]]["return_value"] != expected_rendering(row["output"], 1000)
    ]
    assert wrong == []
    assert containers_of(engine, data["run_id"]) == []


SOLUTION = "n = int(input())\nxs = list(map(int, input().split()))\nprint(max(xs[:n]))\n"


def test_contest_solutions_read_their_tests_on_stdin_and_are_judged_by_stdout(engine, base_image: str, ray_cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A programming contest's tests: one row per (solution, test input, expected output)."""
    tests = {"t1": ("3\n4 9 2\n", "9\n"), "t2": ("2\n5 1\n", "4"), "t3": ("2\n5 x\n", "5"), "t4": ("1\n7\n", "7  \n\n")}
    source = tmp_path / "contest.jsonl"
    source.write_text("".join(
        json.dumps({"id": name, "source": SOLUTION, "stdin": stdin, "output": output}) + "\n"
        for name, (stdin, output) in tests.items()
    ))  # fmt: skip
    out = tmp_path / "out"
    done = run_harvest(source, "--out", out, "--ray-address", ray_cluster.address, env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert "results differing from the expected output (a call's return value, a script's stdout): 2" in done.stdout
    data = run_manifest(out)
    assert data["counts"] == {"exception": 1, "ok": 3} and data["expected_output_mismatches"] == 2
    found = {r["program_id"]: r for r in rows(out, ["program_id", "status", "input", "stdout", "exception_type"])}
    assert {name: (r["status"], r["input"], r["stdout"]) for name, r in found.items()} == {
        "t1": ("ok", "3\n4 9 2\n", "9\n"),
        "t2": ("ok", "2\n5 1\n", "5\n"),  # expected 4: a wrong answer, counted
        "t3": ("exception", "2\n5 x\n", ""),  # ValueError: counted
        "t4": ("ok", "1\n7\n", "7\n"),  # trailing blanks and blank lines do not count
    }
    assert len(set(trace_ids(out))) == 4  # the same program, four inputs: four traces
    assert containers_of(engine, data["run_id"]) == []


# Landlock signal scoping (ABI 6) in the sandboxes: the containers run on this kernel.
SIGNALS_SCOPED = landlock_abi()[0] >= 6

HOSTILE = {
    "infinite-loop": ("while True:\n    pass\n", {"timeout"}),
    "memory-bomb": ("data = b'x' * (4 * 1024**3)\n", {"memory"}),  # writes every byte: no lazy pages
    "fork-bomb": ("import os\nwhile True:\n    os.fork()\n", {"exception", "timeout", "crashed", "memory"}),
    "output-flood": ("for _ in range(200000):\n    print('x' * 100)\n", {"ok"}),
    "os-exit": ("import os\nos._exit(3)\n", {"crashed"}),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", {"crashed"}),
    "write-outside-tmp": ("open('/usr/lib/evil.txt', 'w').write('x')\n", {"exception"}),
    "tracer-off": ("import sys\nsys.settrace(None)\nx = 1\nprint(x)\n", {"ok", "error"}),
    # Its parent is the runner's fork server. Where Landlock scopes signals (Linux >= 6.12; the
    # containers share the host's kernel), the kill is refused: PermissionError. Elsewhere the
    # runner replaces the server, and the program is killed with it (crashed) unless it reported
    # first (ok): the kill is asynchronous.
    "kill-its-parent": (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        {"exception"} if SIGNALS_SCOPED else {"ok", "crashed"},
    ),
    # The runner's whole process group (runner and fork server): refused likewise; elsewhere the
    # host redoes the unit's rest (tests/harvest/test_harvest_unit.py covers that without Docker).
    "kill-the-runner": (
        "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n",
        {"exception"} if SIGNALS_SCOPED else {"crashed"},
    ),
}


def test_hostile_programs_get_their_status_and_spare_their_neighbours(engine, base_image: str, ray_cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    programs = tmp_path / "hostile.jsonl"
    with programs.open("w") as f:
        for i, (name, (source, _)) in enumerate(HOSTILE.items()):
            f.write(json.dumps({"id": name, "source": source}) + "\n")
            fine = f"def f(x):\n    return x + {i}\n"
            f.write(json.dumps({"id": f"fine-after-{name}", "source": fine, "entrypoint": "f", "input": "100"}) + "\n")
    out = tmp_path / "out"
    done = run_harvest(programs, "--out", out, "--timeout", "5", "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    found = {r["program_id"]: r for r in rows(out, ["program_id", "status", "return_value", "output_truncated"])}
    assert len(found) == 2 * len(HOSTILE)  # one unit, every program a row
    for i, (name, (_, statuses)) in enumerate(HOSTILE.items()):
        assert found[name]["status"] in statuses, (name, found[name])
        assert (found[f"fine-after-{name}"]["status"], found[f"fine-after-{name}"]["return_value"]) == ("ok", str(100 + i))
    assert found["output-flood"]["output_truncated"] is True
    assert not (Path("/usr/lib/evil.txt")).exists()
    assert containers_of(engine, run_manifest(out)["run_id"]) == []


def test_a_killed_driver_leaves_no_container_after_the_next_start(engine, base_image: str, ray_cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    programs = tmp_path / "slow.jsonl"
    with programs.open("w") as f:
        for i in range(8):
            f.write(json.dumps({"id": f"slow-{i}", "source": "import time\ntime.sleep(1)\n"}) + "\n")
    out = tmp_path / "out"
    args = [programs, "--out", out, "--programs-per-unit", "4", "--ray-address", ray_cluster.address, "-s"]
    proc = subprocess.Popen(harvest_cmd(*args), env=ray_cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "harvest-run.json"
    deadline = time.monotonic() + 300
    run_id = None
    while run_id is None or not containers_of(engine, run_id):
        assert proc.poll() is None and time.monotonic() < deadline, "no container started"
        if run_id is None and manifest.exists():
            run_id = json.loads(manifest.read_text())["run_id"]
        time.sleep(0.05)  # polling the engine for the run's first container, not synchronising
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run_harvest(*args, env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert containers_of(engine, run_id) == []  # the dead run's containers were reaped
    assert containers_of(engine, run_manifest(out)["run_id"]) == []
    assert len(trace_ids(out)) == len(set(trace_ids(out))) == 8
    assert leftovers(out) == []


def test_a_repository_test_suite_is_traced(engine, ray_cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    built("six")  # about 15 s from the base image; a no-op once built
    out = tmp_path / "out"
    done = run_harvest("--tests", "--image", "six", "--out", out, "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    found = rows(out, ["program_id", "status", "entrypoint", "n_events"])
    suite = [r for r in found if r["program_id"] == "six:tests"]
    calls = [r for r in found if r["program_id"].startswith("six:tests::")]
    assert suite and suite[0]["status"] == "ok"
    assert len(calls) >= 50 and all(r["n_events"] > 0 for r in calls)
    data = run_manifest(out)
    assert containers_of(engine, data["run_id"]) == []
    # The run counts traces (rows), not programs: one test-suite program made all of them.
    assert data["programs"] == 1 and sum(data["counts_this_run"].values()) == len(found)
    assert data["timing"]["traces_per_s"] > data["timing"]["programs_per_s"] > 0
    # The manifest says how the programs were confined (the containers run on this kernel).
    abi = landlock_abi()[0]
    assert data["confinement"]["units_confined"] == (1 if abi else 0)
    assert data["confinement"]["landlock_abi"] == ([abi] if abi else [])


def test_a_missing_image_on_a_cluster_is_reported_before_any_unit_runs(engine, ray_cluster: Cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every node with Docker slots checks its engine first; the node without the image is named.
    (A node of a cluster that lacks it while others have it: tests/harvest/test_harvest_engine_failures.py.)"""
    out = tmp_path / "out"
    done = run_harvest(REPO / "examples" / "programs", "--out", out, "--image", "worldtrace-no-such-image:0", "--ray-address", ray_cluster.address, "-s", env=ray_cluster.env)
    assert done.returncode == 1
    assert "not every node of the Ray cluster with Docker slots can run the units" in done.stderr
    assert "\n  node " in done.stderr and "neither in the image catalog nor on the Docker engine at" in done.stderr
    assert "worldtrace-no-such-image:0; the catalog has: base-py311" in done.stderr
    data = run_manifest(out)
    assert not data["complete"] and data["units"]["ran"] == 0
    assert shard_files(out) == [] and containers_of(engine, data["run_id"]) == []


def test_a_missing_image_is_reported_before_anything_runs(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done = run_harvest(REPO / "examples" / "programs", "--out", tmp_path / "out", "--image", "worldtrace-no-such-image:0")
    assert done.returncode == 1
    # Not a catalog name: say so and list the catalog, rather than suggest building it.
    assert "neither in the image catalog nor on the Docker engine at unix://" in done.stderr
    assert ": worldtrace-no-such-image:0; the catalog has" in done.stderr
    assert "the catalog has: base-py311" in done.stderr and "images build" not in done.stderr


def test_a_folder_script_imports_its_sibling_module_in_the_container(engine, base_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """main.py's `from helper import double` ended as ModuleNotFoundError in the container: only the
    script's own source travelled. In-process (this checkout's harvest and tracer), embedded Ray."""
    from click.testing import CliRunner

    from harvest.cli import cli
    from harvest.inputs import load_programs, unit_jobs

    prog = tmp_path / "prog"
    (prog / "pkg").mkdir(parents=True)
    (prog / "helper.py").write_text("from pkg import TIMES\n\ndef double(x):\n    return x * TIMES\n", encoding="utf-8")
    (prog / "pkg" / "__init__.py").write_text("from ._impl import TIMES\n", encoding="utf-8")
    (prog / "pkg" / "_impl.py").write_text("TIMES = 2\n", encoding="utf-8")
    (prog / "main.py").write_text("import os\nfrom helper import double\nprint(double(21), __file__)\n", encoding="utf-8")
    # A data file that two scripts read travels once in the unit's jobs file, as a blob line.
    (prog / "words.txt").write_text("w" * 600 + "\n", encoding="utf-8")
    (prog / "count.py").write_text("print(open('words.txt').read().count('w'))\n", encoding="utf-8")
    (prog / "last.py").write_text("print(open('words.txt').read()[-2:])\n", encoding="utf-8")
    assert sum("blob" in line for line in unit_jobs(load_programs([prog]))) == 1
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["harvest", str(prog), "--out", str(out), "--image", base_image, "-s"])
    assert result.exit_code == 0, result.output
    by_id = {r["program_id"]: r for r in rows(out, ["program_id", "status", "stdout", "events"])}
    main = by_id["main"]
    assert (main["status"], main["stdout"]) == ("ok", "42 /tmp/program/main.py\n")  # the same path on every run
    assert {e["file"] for e in main["events"]} == {"main.py", "helper.py", "pkg/__init__.py", "pkg/_impl.py"}
    assert (by_id["count"]["stdout"], by_id["last"]["stdout"]) == ("600\n", "w\n\n")


def test_resuming_after_a_catalog_image_was_rebuilt_says_so(engine, base_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A catalog image rebuilt from a changed recipe (a newer worldtrace) between two runs into one
    --out: the second run added traces of other content under the same name, and only images of
    your own were compared. The rebuild is played by moving the recipe-hash tag to other content."""
    from images.catalog import get_spec

    tag = get_spec(base_image).tag
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    programs = [json.dumps({"id": f"p{i}", "source": f"print({i})\n"}) for i in range(2)]
    first.write_text(programs[0] + "\n")
    second.write_text(programs[0] + "\n" + programs[1] + "\n")
    out = tmp_path / "out"
    done = run_harvest(first, "--out", out, "--image", base_image, "--programs-per-unit", "1", "-s")
    assert done.returncode == 0, done.stderr[-2000:]
    original = engine.images.get(tag)
    blank = engine.containers.create(tag, ["true"])
    try:
        rebuilt = blank.commit(changes="LABEL worldtrace.test-rebuilt=1")
    finally:
        blank.remove(force=True)
    try:
        rebuilt.tag(tag)  # the catalog's tag now names other content, as after a rebuild
        done = run_harvest(second, "--out", out, "--image", base_image, "--programs-per-unit", "1", "-s")
        assert done.returncode == 0, done.stderr[-2000:]
        assert (
            f"catalog image {base_image!r} is {rebuilt.id} now (its recipe changed since), "
            f"but the units done before in {out} ran in {original.id}"
        ) in done.stderr
    finally:
        original.tag(tag)
        engine.images.remove(rebuilt.id, force=True)
