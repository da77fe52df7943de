"""`worldtrace harvest` at its boundary: help, usage errors and input errors (no Ray needed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harvest.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["harvest", *args])
    return result.exit_code, result.output


def test_help_has_an_example() -> None:
    code, output = invoke("--help")
    assert code == 0
    assert "worldtrace harvest examples/programs --out harvest-out" in output
    for option in ("--image", "--sandbox", "--backend", "--timeout", "--max-events", "--programs-per-unit", "--ray-address", "--silent", "--tests"):
        assert option in output


def test_usage_errors(tmp_path: Path) -> None:
    code, output = invoke("--out", str(tmp_path / "o"))
    assert code == 2 and "give PROGRAMS to trace" in output
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--sandbox", "local", "--image", "base-py311")
    assert code == 2 and "--image needs --sandbox docker" in output
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--programs-per-unit", "0")
    assert code == 2 and "--programs-per-unit" in output


def test_a_bad_programs_file_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "source": "pass"}\n{"id": "b", "source": }\n')
    code, output = invoke(str(bad), "--out", str(tmp_path / "o"), "--sandbox", "local")
    assert code == 1
    assert f"Error: {bad}:2: not valid JSON" in output
    assert not (tmp_path / "o").exists()  # nothing written for a harvest that never started
    assert "PROGRAMS are Python scripts" not in output  # a .jsonl file: the JSON is what is wrong
    notes = tmp_path / "notes.md"
    notes.write_text("# not programs\n")
    code, output = invoke(str(notes), "--out", str(tmp_path / "o"), "--sandbox", "local")
    assert code == 1 and "notes.md:1: not valid JSON" in output and "PROGRAMS are Python scripts (.py)" in output


def test_tests_needs_a_repository_image(tmp_path: Path) -> None:
    code, output = invoke("--tests", "--image", "base-py311", "--out", str(tmp_path / "o"))
    assert code == 2 and "not a repository image" in output
    code, output = invoke("--tests", "--out", str(tmp_path / "o"))
    assert code == 2 and "--tests needs --image NAME of a repository image" in output
    code, output = invoke("--tests", "--image", "toolz", "--sandbox", "local", "--out", str(tmp_path / "o"))
    assert code == 2 and "--tests needs --sandbox docker" in output


def test_the_summary_warns_when_programs_ran_unconfined(tmp_path: Path) -> None:
    from harvest.commands.harvest import _summary
    from harvest.plan import HarvestSettings
    from harvest.run_manifest import RunRecord
    from harvest.unit import UnitResult

    def unit(uid: str, confinements: list) -> UnitResult:
        return UnitResult(unit_id=uid, image="base-py311", shard=f"unit-{uid}.parquet", n_programs=2,
                          counts={"ok": 2}, shard_bytes=1, attempt=1, rounds=1, wall_time_s=1.0,
                          sandbox_time_s=1.0, program_time_s=0.1, confinements=confinements)

    record = RunRecord(run_id="r", command=["worldtrace"], inputs=[], settings=HarvestSettings())
    record.results = [unit("a", [{"landlock_abi": 7, "writable": ["/tmp"], "signals_scoped": True}])]
    data = record.to_json()["confinement"]
    assert (data["units_confined"], data["units_unconfined"], data["landlock_abi"]) == (1, 0, [7])
    assert "WARNING" not in _summary(record, tmp_path)
    record.results.append(unit("b", [{"landlock_abi": 0, "unavailable": "Landlock is not available here (x)"}]))
    data = record.to_json()["confinement"]
    assert (data["units_confined"], data["units_unconfined"]) == (1, 1)
    assert "in 1 unit(s) the programs ran without Landlock confinement (Landlock is not available here (x))" in _summary(record, tmp_path)


def test_the_run_manifest_names_every_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harvest.commands import harvest as command

    seen: list[dict] = []
    monkeypatch.setattr(command, "_harvest", lambda units, settings, out, record, *rest: seen.append(record.to_json()))
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    invoke(str(script), "--out", str(tmp_path / "o"), "--image", "base-py311", "--image", "base-py313")
    settings = seen[0]["settings"]
    assert list(settings["images"]) == ["base-py311", "base-py313"] and settings["image"] == "base-py311"
    assert seen[0]["images"] == {"base-py311": 1, "base-py313": 1}
    # An image given twice is one image (not every program twice, then dropped as a repeat).
    invoke(str(script), "--out", str(tmp_path / "o"), "--image", "base-py313", "--image", "base-py311", "--image", "base-py313")
    assert list(seen[1]["settings"]["images"]) == ["base-py313", "base-py311"]
    assert seen[1]["programs"] == 2


def test_an_unreachable_ray_address_is_a_quick_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["harvest", str(script), "--out", str(tmp_path / "o"), "--sandbox", "local"],
                                env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1 and time.monotonic() - started < 30
    assert "Error: cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    # The run manifest written before Ray was asked says how the run ended.
    manifest = json.loads((tmp_path / "o" / "harvest-run.json").read_text())
    assert manifest["finished_at"] and not manifest["complete"]
    assert manifest["error"].startswith("cannot reach the Ray cluster at 127.0.0.1:1")


def test_monitoring_on_an_image_without_it_is_refused_up_front(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--backend", "monitoring")
    assert code == 2 and "--backend monitoring needs Python 3.12+" in output and "base-py311 has Python 3.11" in output
    if sys.version_info < (3, 12):
        code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--backend", "monitoring", "--sandbox", "local")
        assert code == 2 and "the host (--sandbox local) has Python" in output
    assert not (tmp_path / "o").exists()


def test_the_summary_names_worldtrace_as_this_run_was_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harvest.commands import harvest as command
    from harvest.plan import HarvestSettings
    from harvest.run_manifest import RunRecord

    record = RunRecord(run_id="r", command=["worldtrace"], inputs=[], settings=HarvestSettings())
    monkeypatch.setattr(command.shutil, "which", lambda name: None)  # not on PATH
    monkeypatch.setattr(command.sys, "argv", [".venv/bin/worldtrace", "harvest"])
    assert f".venv/bin/worldtrace inspect {tmp_path}" in command._summary(record, tmp_path)
    monkeypatch.setattr(command.shutil, "which", lambda name: "/usr/local/bin/worldtrace")
    assert f"\n  worldtrace inspect {tmp_path}" in command._summary(record, tmp_path)


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    # (A full one, a read-only mount: the same path, measured in docs/harvest.md's "Failures".)
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    result = CliRunner().invoke(cli, ["harvest", str(script), "--out", str(blocker / "out"), "--sandbox", "local"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.exception
    assert f"Not a directory: {blocker / 'out'}" in result.output and "re-run the same command" in result.output


def test_the_run_manifest_names_versions_without_importing_them() -> None:
    """A harvest with nothing left to do starts no Ray; importing it only to read its version
    took half of such a run (~1.4 s of ~3 s over 100 finished units)."""
    import subprocess

    code = ("import json, sys; from harvest.run_manifest import versions; found = versions(); "
            "print(json.dumps([[m for m in ('ray', 'docker') if m in sys.modules], found]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    imported, found = json.loads(done.stdout)
    assert imported == [] and found["ray"][0].isdigit() and found["docker"][0].isdigit()


def test_a_harvest_refused_before_it_starts_leaves_no_output_folder(tmp_path: Path, docker_engine: None) -> None:
    # An image that is neither in the catalog nor on the engine is found after the output folder
    # and its lock were made: a folder the harvest made itself goes again; one that existed stays.
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--image", "no-such-image")
    assert code == 1 and "no-such-image" in output
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()
    code, output = invoke(str(script), "--out", str(tmp_path / "mine"), "--image", "no-such-image")
    assert code == 1 and (tmp_path / "mine").is_dir()


def test_python_m_harvest_cli_runs_the_command_line() -> None:
    """It exited 0 having done nothing (the module only defined the group)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "harvest.cli", "query", "--help"], capture_output=True,
                          text=True, timeout=120, cwd=root, env={"PYTHONPATH": str(root)})
    assert done.returncode == 0 and "Usage: worldtrace query" in done.stdout, done.stderr
    done = subprocess.run([sys.executable, "-m", "harvest.cli", "query", str(root / "missing"), "SELECT 1"],
                          capture_output=True, text=True, timeout=120, cwd=root, env={"PYTHONPATH": str(root)})
    assert done.returncode == 1 and "no such file or directory" in done.stderr


def test_a_harvest_refused_by_anothers_lock_leaves_that_harvests_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two harvests started together into a new --out: both find it missing, one takes its lock
    and the other is refused. The refused one removed the folder as its own (lock file and all),
    and the first went on without a lock, open to a third harvest."""
    import fcntl

    from harvest.commands import harvest as command

    out = tmp_path / "o"
    held = []
    exclusive = command._exclusive

    def first_takes_the_lock(folder: Path):  # type: ignore[no-untyped-def]
        lock = folder / command.LOCK_FILE
        lock.parent.mkdir(parents=True, exist_ok=True)
        held.append(lock.open("a+"))  # the other harvest's lock: another open file, as another process has
        fcntl.flock(held[0].fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return exclusive(folder)

    monkeypatch.setattr(command, "_exclusive", first_takes_the_lock)
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    try:
        code, output = invoke(str(script), "--out", str(out), "--sandbox", "local")
        assert code == 1 and f"another harvest is writing to {out} right now" in output
        assert (out / command.LOCK_FILE).is_file()
    finally:
        held[0].close()


def test_the_work_folder_of_a_unit_killed_after_its_shard_was_committed_goes_on_the_next_run(tmp_path: Path) -> None:
    """A worker killed (Ctrl-C cancels the units in flight, a killed driver takes its workers)
    between committing its unit's shard and removing the unit's work folder left that folder,
    a copy of the unit's traces, for good: no later run ran the unit again."""
    from harvest.commands.harvest import _programs
    from harvest.plan import HarvestSettings, plan_units
    from harvest.sandbox.local import LocalSandbox
    from harvest.unit import execute_unit, unit_work_dir

    programs = tmp_path / "p.jsonl"
    programs.write_text("".join(json.dumps({"id": f"p{i}", "source": f"print({i})\n"}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    out.mkdir()
    args = [str(programs), "--out", str(out), "--sandbox", "local", "--programs-per-unit", "2", "-s"]
    settings = HarvestSettings(image="local", images=("local",), sandbox="local", programs_per_unit=2)
    units = plan_units(_programs((programs,), ("local",), False, "local", 900.0, 60.0), settings)
    for unit in units:  # as the harvest would: the same units, each committed
        execute_unit(unit, settings, out, "run-1", LocalSandbox())
    left = unit_work_dir(out, units[0].unit_id) / "attempt-1"
    left.mkdir(parents=True)
    (left / "stream.jsonl").write_text("{}\n")  # what the killed worker had not removed yet
    code, output = invoke(*args)
    assert code == 0, output
    assert json.loads((out / "harvest-run.json").read_text())["units"]["done_before"] == len(units)
    assert not unit_work_dir(out, units[0].unit_id).exists()


def test_a_folder_script_imports_its_sibling_module_as_python_runs_it(tmp_path: Path) -> None:
    """`python prog/main.py` runs, but `worldtrace harvest prog` gave main the status `exception`,
    ModuleNotFoundError: No module named 'helper' (only the script's own source travelled)."""
    import pyarrow.parquet as pq

    from schemas.ids import trace_id
    from schemas.validate import validate

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "helper.py").write_text("def double(x):\n    return x * 2\n", encoding="utf-8")
    (prog / "main.py").write_text("from helper import double\nprint(double(21))\n", encoding="utf-8")
    out = tmp_path / "out"
    code, output = invoke(str(prog), "--out", str(out), "--sandbox", "local", "-s")
    assert code == 0, output
    (shard,) = out.glob("unit-*.parquet")
    rows = {row["program_id"]: row for row in pq.read_table(shard).to_pylist()}
    main = rows["main"]
    assert (main["status"], main["stdout"], main["exception_message"]) == ("ok", "42\n", None)
    assert main["source"] == "from helper import double\nprint(double(21))\n"  # the script's own text
    assert [(e["file"], e["function"], e["kind"]) for e in main["events"] if e["function"] == "double"] == [
        ("helper.py", "double", "call"), ("helper.py", "double", "line"), ("helper.py", "double", "return"),
    ]
    assert {e["file"] for e in main["events"]} == {"main.py", "helper.py"}
    assert validate(out).ok
    # The trace id covers the modules too (an edited helper.py is another trace); none: as before.
    fields = ["local", main["backend"], main["tracer_version"]]
    helper_text = (prog / "helper.py").read_text(encoding="utf-8")
    assert main["trace_id"] == trace_id("main", main["source"], None, None, *fields, {"helper.py": helper_text})
    assert main["trace_id"] != trace_id("main", main["source"], None, None, *fields)
    assert rows["helper"]["trace_id"] == trace_id("helper", helper_text, None, None, *fields)


def test_a_folder_script_reads_its_data_files_as_python_runs_it_in_its_folder(tmp_path: Path) -> None:
    """`cd course && python main.py` runs, but `worldtrace harvest course` gave main the status
    `exception`, FileNotFoundError: [Errno 2] No such file or directory: 'input.txt' (only code
    travelled, and it ran in the runner's working directory)."""
    import subprocess

    import pyarrow.parquet as pq

    from schemas.ids import trace_id
    from schemas.validate import validate

    course = tmp_path / "course"
    (course / "data").mkdir(parents=True)
    main_text = (
        "import os\nfrom pathlib import Path\n"
        "words = open('input.txt', encoding='utf-8').read().split()\n"
        "rows = Path('data/table.csv').read_text(encoding='utf-8').splitlines()\n"
        "with open(os.path.join(os.path.dirname(__file__), 'pic.bin'), 'rb') as f:\n"
        "    pic = f.read()\n"
        "print(len(words), words[-1], rows, pic, os.path.basename(__file__))\n"
        "print(sorted(os.listdir('.')), sorted(os.listdir('data')))\n"
    )
    (course / "main.py").write_text(main_text, encoding="utf-8")
    (course / "input.txt").write_text("le cœur a ses raisons\n", encoding="utf-8")
    (course / "data" / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (course / "pic.bin").write_bytes(b"\x00\xff\xfe")
    untraced = subprocess.run([sys.executable, "main.py"], cwd=course, capture_output=True, text=True, timeout=60)
    assert untraced.returncode == 0, untraced.stderr
    out = tmp_path / "out"
    code, output = invoke(str(course), "--out", str(out), "--sandbox", "local", "-s")
    assert code == 0, output
    (shard,) = out.glob("unit-*.parquet")
    (main,) = pq.read_table(shard).to_pylist()
    assert (main["status"], main["exception_message"]) == ("ok", None)
    assert main["stdout"] == untraced.stdout  # its working directory holds what course/ holds
    assert validate(out).ok
    files = {"data/table.csv": "a,b\n1,2\n", "input.txt": "le cœur a ses raisons\n", "pic.bin": {"base64": "AP/+"}}
    fields = ["local", main["backend"], main["tracer_version"]]
    assert main["trace_id"] == trace_id("main", main_text, None, None, *fields, None, files)
    assert main["trace_id"] != trace_id("main", main_text, None, None, *fields)
