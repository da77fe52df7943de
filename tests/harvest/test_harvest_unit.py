"""One unit, no Ray: the real batch runner in a LocalSandbox, resumed, and brought down by a program."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harvest.errors import RunnerFailed
from harvest.inputs import Program, load_programs, unit_jobs
from harvest.plan import HarvestSettings, plan_units
from harvest.sandbox.local import LocalSandbox
from harvest.shard_io import check_no_overlap, committed_shards, expected_output_mismatches
from harvest.unit import execute_unit, read_stream, unit_work_dir

REPO = Path(__file__).resolve().parents[2]
SETTINGS = HarvestSettings(image="local", sandbox="local", timeout_s=10, programs_per_unit=100)


def call(pid: str, body: str, arg: str = "1") -> Program:
    return Program(program_id=pid, mode="call", source=f"def f(x):\n{body}\n", entrypoint="f", input=arg)


def shard_rows(path: Path) -> list[dict]:
    return pq.read_table(path, columns=["program_id", "status", "return_value", "trace_id"]).to_pylist()


def test_a_unit_becomes_one_committed_shard(tmp_path: Path) -> None:
    (unit,) = plan_units(load_programs([REPO / "examples" / "programs"]), SETTINGS)
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    assert committed_shards(tmp_path) == {unit.shard_name}
    rows = shard_rows(tmp_path / unit.shard_name)
    assert sorted(r["program_id"] for r in rows) == sorted(p.program_id for p in unit.programs)
    by_id = {r["program_id"]: r for r in rows}
    assert by_id["fibonacci"]["return_value"] == "55"
    assert by_id["parse_config"]["status"] == "exception"
    assert result.counts == {"ok": len(unit) - 1, "exception": 1}
    assert (result.n_programs, result.attempt, result.rounds) == (len(unit), 1, 1)
    assert not unit_work_dir(tmp_path, unit.unit_id).exists()  # scratch removed on commit


def test_a_half_done_unit_resumes_without_rerunning_or_duplicating(tmp_path: Path) -> None:
    programs = [call(f"p{i}", f"    return x + {i}") for i in range(6)]
    (unit,) = plan_units(programs, SETTINGS)
    # A first attempt died after three programs, in the middle of writing the fourth.
    first = unit_work_dir(tmp_path, unit.unit_id) / "attempt-1"
    first.mkdir(parents=True)
    jobs = first / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(p.job()) + "\n" for p in programs[:3]), encoding="utf-8")
    stream = first / "stream.jsonl"
    LocalSandbox().run_unit(_request(unit.unit_id, jobs, stream))
    done_before = {r["program_id"]: r for r in read_stream(stream)}
    with stream.open("a", encoding="utf-8") as f:
        f.write('{"format": "worldtrace.stream/1", "program_id": "p3", "sta')  # torn line
    # ... and its killed writer left a temporary shard file.
    (tmp_path / f".{unit.shard_name}.tmp-0123456789abcdef").write_bytes(b"PAR1 half a shard")
    result = execute_unit(unit, SETTINGS, tmp_path, "run-2", LocalSandbox())
    assert result.attempt == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file() and "unit-" in p.name) == [unit.shard_name]
    rows = shard_rows(tmp_path / unit.shard_name)
    assert [r["program_id"] for r in rows] == [f"p{i}" for i in range(6)]  # each once, in order
    assert [r["return_value"] for r in rows] == [str(1 + i) for i in range(6)]
    full = pq.read_table(tmp_path / unit.shard_name, columns=["program_id", "wall_time_s"]).to_pylist()
    for row in full[:3]:  # the first attempt's rows were kept, not traced again
        assert row["wall_time_s"] == done_before[row["program_id"]]["wall_time_s"]


def test_a_data_file_that_every_script_of_a_unit_reads_is_in_its_jobs_file_once(tmp_path: Path) -> None:
    """Each script's job carried its own copy of its folder's data files and modules: a folder of
    400 scripts reading one 1 MiB file made a 400 MiB jobs file. A content that several programs
    of a unit carry is now a blob line before the first job that names it; the traces are as before."""
    folder = tmp_path / "course"
    folder.mkdir()
    table = "".join(f"row {i}\n" for i in range(2000))
    helper = "def count(path):\n    return sum(1 for _ in open(path))\n" + "# notes\n" * 80
    (folder / "table.csv").write_text(table, encoding="utf-8")
    (folder / "_helper.py").write_text(helper, encoding="utf-8")  # "_": a module, not a program
    (folder / "small.txt").write_text("tiny\n", encoding="utf-8")
    (folder / "own.txt").write_text("x" * 2000, encoding="utf-8")  # one script's: stays in its job
    for i in range(5):
        (folder / f"s{i}.py").write_text(
            f"import _helper\nprint(_helper.count('table.csv') + {i}, open('small.txt').read().strip())\n"
            + ("print(len(open('own.txt').read()))\n" if i == 0 else ""),
            encoding="utf-8",
        )
    programs = load_programs([folder])
    lines = list(unit_jobs(programs))
    digest = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in (("table", table), ("helper", helper))}
    assert [line.get("blob") for line in lines[:2]] == [digest["helper"], digest["table"]]  # before the first job
    jobs = lines[2:]
    assert [job["program_id"] for job in jobs] == [f"s{i}" for i in range(5)]
    for job in jobs:
        assert job["modules"] == {"_helper.py": {"blob": digest["helper"]}}
        assert job["files"]["table.csv"] == {"blob": digest["table"]} and job["files"]["small.txt"] == "tiny\n"
    assert jobs[0]["files"]["own.txt"] == "x" * 2000
    size = sum(len(json.dumps(line)) for line in lines)
    assert size < sum(len(json.dumps(p.job())) for p in programs) / 3

    settings = HarvestSettings(image="local", sandbox="local", timeout_s=10)
    (unit,) = plan_units(programs, settings)
    (tmp_path / "out").mkdir()
    result = execute_unit(unit, settings, tmp_path / "out", "run-1", LocalSandbox())
    assert result.counts == {"ok": 5}
    rows = pq.read_table(tmp_path / "out" / unit.shard_name, columns=["program_id", "stdout"]).to_pylist()
    assert {r["program_id"]: r["stdout"] for r in rows} == {
        f"s{i}": f"{2000 + i} tiny\n" + ("2000\n" if i == 0 else "") for i in range(5)
    }


def test_a_program_that_kills_the_runner_is_a_crashed_row_and_the_rest_still_run(tmp_path: Path) -> None:
    killer = Program(
        program_id="kill-runner",
        mode="script",
        # the runner's whole process group: the runner and its fork server (the program's parent)
        source="import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n",
    )
    programs = [call("before", "    return x"), killer, call("after", "    return x * 2", "21")]
    (unit,) = plan_units(programs, SETTINGS)
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    by_id = {r["program_id"]: r for r in shard_rows(tmp_path / unit.shard_name)}
    assert by_id["before"]["status"] == "ok"
    assert by_id["kill-runner"]["status"] == "crashed"
    assert (by_id["after"]["status"], by_id["after"]["return_value"]) == ("ok", "42")
    assert result.rounds >= 2 and result.sandbox_failures


def test_a_forged_report_is_the_programs_error_row_and_the_unit_completes(tmp_path: Path) -> None:
    # The program writes its own "result" to the report channel (fd 1000), with a wall time that
    # is not a number (and events the runner takes: a list): its row is an error row, and the
    # unit's bookkeeping does not choke on it.
    forger = Program(
        program_id="forger",
        mode="script",
        source=(
            "import json, os\n"
            "fake = {'kind': 'result', 'trace': {'status': 'ok', 'wall_time_s': 'slow', 'events': []}}\n"
            "os.write(1000, b'{\"kind\": \"ran\"}\\n' + json.dumps(fake).encode() + b'\\n')\n"
            "os._exit(0)\n"
        ),
    )
    (unit,) = plan_units([call("before", "    return x"), forger, call("after", "    return x * 2", "21")], SETTINGS)
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    by_id = {r["program_id"]: r for r in shard_rows(tmp_path / unit.shard_name)}
    assert by_id["forger"]["status"] == "error"
    assert (by_id["after"]["status"], by_id["after"]["return_value"]) == ("ok", "42")
    assert result.counts == {"ok": 2, "error": 1}  # as the shard says


def test_expected_outputs_are_checked(tmp_path: Path) -> None:
    right = Program(program_id="right", mode="call", source="def f(a):\n    return [a, 'x']\n", entrypoint="f", input="1", expected_output="[1, 'x']")
    wrong = Program(program_id="wrong", mode="call", source="def f(a):\n    return a\n", entrypoint="f", input="1", expected_output="2")
    (unit,) = plan_units([right, wrong], SETTINGS)
    assert execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox()).mismatches == 1
    # The shard keeps its mismatch count for later runs to add up (a resumed harvest's manifest).
    assert expected_output_mismatches([tmp_path / unit.shard_name]) == 1


def test_a_committed_shard_that_was_truncated_is_redone(tmp_path: Path) -> None:
    (unit,) = plan_units([call(f"p{i}", "    return x") for i in range(3)], SETTINGS)
    execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    shard = tmp_path / unit.shard_name
    with shard.open("r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    assert committed_shards(tmp_path) == set()  # so the harvest runs the unit again
    execute_unit(unit, SETTINGS, tmp_path, "run-2", LocalSandbox())
    assert committed_shards(tmp_path) == {unit.shard_name}
    assert [r["program_id"] for r in shard_rows(shard)] == ["p0", "p1", "p2"]


def _request(unit_id: str, jobs: Path, out: Path):  # type: ignore[no-untyped-def]
    from harvest.sandbox.base import UnitRequest

    return UnitRequest(run_id="run-0", unit_id=unit_id, attempt=1, image="local", jobs_path=jobs, output_path=out)



def test_a_differently_planned_harvest_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    from harvest.errors import ConfigError
    from harvest.shard_io import check_no_overlap

    programs = [call(f"p{i}", "    return x") for i in range(4)]
    for unit in plan_units(programs, replace(SETTINGS, programs_per_unit=2)):
        execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    same = plan_units(programs, replace(SETTINGS, programs_per_unit=2))
    check_no_overlap(tmp_path, same, committed_shards(tmp_path))  # the same plan: fine (resume)
    other = plan_units(programs, replace(SETTINGS, programs_per_unit=3))
    with pytest.raises(ConfigError, match="already holds a trace of program 'p[0-3]' .*new --out"):
        check_no_overlap(tmp_path, other, committed_shards(tmp_path))
    # A shard no manifest entry records (its writer was killed right after renaming it into place)
    # still holds traces: a differently planned harvest is refused all the same.
    for entry in tmp_path.glob("_manifest*"):
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    assert committed_shards(tmp_path) == set()
    with pytest.raises(ConfigError, match="already holds a trace of program 'p[0-3]' .*new --out"):
        check_no_overlap(tmp_path, other, committed_shards(tmp_path))


def test_a_rerun_after_an_input_was_edited_is_refused_naming_the_edit(tmp_path: Path) -> None:
    # The same command, but a program's source edited after its unit was done: the re-run plans
    # another unit for it (the old shard holds its old trace). The refusal blamed "other settings
    # or other unit sizes", which the user had not changed.
    from harvest.errors import ConfigError

    programs = [call(f"p{i}", "    return x") for i in range(4)]
    for unit in plan_units(programs, SETTINGS):
        execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    edited = [call("p0", "    return x + 1"), *programs[1:]]
    with pytest.raises(ConfigError, match=r"already holds a trace of program 'p[0-3]' .*edited in the inputs since"):
        check_no_overlap(tmp_path, plan_units(edited, SETTINGS), committed_shards(tmp_path))


def test_a_folder_of_another_tracer_versions_traces_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another tracer version records other traces of the same programs (the version is in every
    # trace id): after an upgrade, neither the same command nor other programs may add to the folder.
    from harvest import plan, shard_io
    from harvest.errors import ConfigError
    from tracer import __version__

    programs = [call(f"p{i}", "    return x") for i in range(4)]
    for unit in plan_units(programs[:2], SETTINGS):
        execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    monkeypatch.setattr(plan, "tracer_version", "99.0.0")
    monkeypatch.setattr(shard_io, "tracer_version", "99.0.0")
    upgraded = plan_units(programs[:2], SETTINGS)
    assert not {u.shard_name for u in upgraded} & committed_shards(tmp_path)  # other units: nothing skipped
    for wanted in (programs[:2], programs[2:]):
        with pytest.raises(ConfigError, match=f"recorded by tracer {__version__} .* with tracer 99.0.0.*new --out"):
            check_no_overlap(tmp_path, plan_units(wanted, SETTINGS), committed_shards(tmp_path))


def test_rows_are_converted_a_bounded_number_of_events_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit's rows go from the stream into its shard a batch at a time (a unit of big traces
    # must not hold all its rows at once): with a tiny event bound every row is its own batch,
    # and the shard still has every row once, in order, with all its events.
    from harvest import shard_io
    from schemas.reader import iter_traces

    batches: list[int] = []
    real = shard_io.rows_to_batch
    monkeypatch.setattr(shard_io, "BATCH_EVENTS", 3)
    monkeypatch.setattr(shard_io, "rows_to_batch", lambda rows, first: batches.append(len(rows)) or real(rows, first))
    programs = [call(f"p{i}", "    y = x + 1\n    z = y * 2\n    return z", str(i)) for i in range(5)]
    (unit,) = plan_units(programs, SETTINGS)
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    assert batches == [1, 1, 1, 1, 1] and result.counts == {"ok": 5}
    rows = list(iter_traces(tmp_path / unit.shard_name))
    assert [r["program_id"] for r in rows] == [f"p{i}" for i in range(5)]
    assert [r["return_value"] for r in rows] == [str((i + 1) * 2) for i in range(5)]
    assert all([e["kind"] for e in r["events"]] == ["call", "line", "line", "line", "return"] for r in rows)


FORGER = Program(
    program_id="forger",
    mode="script",
    source="import os\nos.write(1000, b'{\"kind\": \"ran\"}\\n{\"kind\": \"result\", \"trace\": {\"status\": \"ok\", \"events\": []}}\\n')\nos._exit(0)\n",
)


@pytest.mark.parametrize("kept_bytes", [None, 0], ids=["kept", "read-again"])
def test_each_row_is_checked_once_on_its_way_to_the_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kept_bytes: int | None
) -> None:
    # The pass that finds every program done hands its parsed, checked rows to the shard; a unit
    # whose rows are more than KEPT_ROWS_BYTES of stream reads it again, and makes the same shard.
    from harvest import shard_io
    from harvest import unit as unit_module
    from schemas import convert

    checks: list[str] = []
    real = convert.check_stream_object

    def counting(obj: object) -> None:
        checks.append(getattr(obj, "get", lambda _k: None)("program_id"))
        real(obj)

    monkeypatch.setattr(convert, "check_stream_object", counting)
    monkeypatch.setattr(shard_io, "check_stream_object", counting)
    if kept_bytes is not None:
        monkeypatch.setattr(unit_module, "KEPT_ROWS_BYTES", kept_bytes)
    programs = [call("a", "    return x"), FORGER, call("b", "    y = x * 2\n    return y", "21")]
    (unit,) = plan_units(programs, SETTINGS)
    with caplog.at_level("WARNING", logger="harvest"):
        result = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    assert sorted(checks) == (["a", "b", "forger"] if kept_bytes is None else ["a", "a", "b", "b", "forger", "forger"])
    warnings = [r.getMessage() for r in caplog.records if "malformed tracer output" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("program forger: ")  # once, either way
    rows = pq.read_table(tmp_path / unit.shard_name, columns=["program_id", "status", "return_value", "n_events"]).to_pylist()
    assert rows == [
        {"program_id": "a", "status": "ok", "return_value": "1", "n_events": 3},
        {"program_id": "forger", "status": "error", "return_value": None, "n_events": 0},
        {"program_id": "b", "status": "ok", "return_value": "42", "n_events": 4},
    ]
    assert result.counts == {"ok": 2, "error": 1}


def test_a_runner_that_cannot_start_is_the_infrastructures_failure_not_a_programs_row(tmp_path: Path) -> None:
    # An image whose Python cannot run the runner (here: a "python" that fails at once, as python2
    # or a broken interpreter would): no program ran, so none may get a `crashed` row, in this
    # attempt or in the one that runs once the sandbox is fixed.
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'this interpreter cannot run the batch runner' >&2\nexit 1\n")
    broken.chmod(0o755)
    programs = [call(f"p{i}", f"    return x + {i}") for i in range(4)]
    (unit,) = plan_units(programs, SETTINGS)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RunnerFailed, match="cannot run the batch runner") as failed:
        execute_unit(unit, SETTINGS, out, "run-1", LocalSandbox(python=str(broken)))
    assert failed.value.exit_code == 1
    assert list(read_stream(unit_work_dir(out, unit.unit_id) / "attempt-1" / "stream.jsonl")) == []
    result = execute_unit(unit, SETTINGS, out, "run-2", LocalSandbox())
    assert result.counts == {"ok": 4} and result.attempt == 2
    assert [(r["program_id"], r["status"]) for r in shard_rows(out / unit.shard_name)] == [(f"p{i}", "ok") for i in range(4)]


class KilledMidLine(LocalSandbox):
    """A first round whose runner is killed (SIGKILL) while it writes its first program's row, as
    a program that kills the runner's group can make it; later rounds run normally."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0

    def run_unit(self, req):  # type: ignore[no-untyped-def]
        self.rounds += 1
        if self.rounds > 1:
            return super().run_unit(req)
        first = json.loads(req.jobs_path.read_text().splitlines()[0])["program_id"]
        with open(f"{req.output_path}.started", "a") as f:
            f.write(json.dumps(first) + "\n")
        with req.output_path.open("a") as f:
            f.write('{"format": "worldtrace.stream/1", "program_id": ' + json.dumps(first) + ', "status": "o')
        raise RunnerFailed("the batch runner was killed (signal 9)", exit_code=-9)


def test_a_runner_killed_mid_line_gives_its_program_a_crashed_row_that_the_next_round_can_read(tmp_path: Path) -> None:
    programs = [call(f"p{i}", f"    return x + {i}") for i in range(4)]
    (unit,) = plan_units(programs, SETTINGS)
    sandbox = KilledMidLine()
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", sandbox)
    # The half-written row was cut off before the crashed row was added, so the runner could
    # resume the stream in the second round (it refuses a complete line that is not a row).
    assert sandbox.rounds == 2 and result.counts == {"crashed": 1, "ok": 3}
    rows = shard_rows(tmp_path / unit.shard_name)
    assert [(r["program_id"], r["status"]) for r in rows] == [("p0", "crashed"), ("p1", "ok"), ("p2", "ok"), ("p3", "ok")]


class ForgesRows(LocalSandbox):
    """A sandbox whose stream also has rows of ids that are no program of its unit, as a program
    that runs unconfined (an engine without Landlock) can write there."""

    def run_unit(self, req):  # type: ignore[no-untyped-def]
        outcome = super().run_unit(req)
        row = json.loads(req.output_path.read_text().splitlines()[0])
        with req.output_path.open("a") as f:
            for forged in ("of-another-unit", "p0::call"):  # p0 is no pytest job: it has no calls
                f.write(json.dumps({**row, "program_id": forged, "return_value": "666"}) + "\n")
        return outcome


def test_rows_of_programs_that_are_not_the_units_are_left_out(tmp_path: Path) -> None:
    programs = [call(f"p{i}", f"    return x + {i}") for i in range(2)]
    (unit,) = plan_units(programs, SETTINGS)
    result = execute_unit(unit, SETTINGS, tmp_path, "run-1", ForgesRows())
    assert result.counts == {"ok": 2}
    assert [(r["program_id"], r["return_value"]) for r in shard_rows(tmp_path / unit.shard_name)] == [("p0", "1"), ("p1", "2")]


def test_a_dead_attempts_sandbox_folder_is_read_for_its_stream_file_only(tmp_path: Path) -> None:
    # An attempt that died left its sandbox's folder (the container wrote it) with a link to a
    # host file where the stream was: the next attempt must not take rows from the host file.
    programs = [call(f"p{i}", f"    return x + {i}") for i in range(2)]
    (unit,) = plan_units(programs, SETTINGS)
    host_file = tmp_path / "host-file"
    host_file.write_text(json.dumps({"program_id": "p0", "status": "ok", "return_value": "666"}) + "\n")
    sandbox_dir = unit_work_dir(tmp_path / "out", unit.unit_id) / "attempt-1" / ".stream.jsonl.sandbox"
    sandbox_dir.mkdir(parents=True)
    (sandbox_dir / "stream.jsonl").symlink_to(host_file)
    result = execute_unit(unit, SETTINGS, tmp_path / "out", "run-1", LocalSandbox())
    assert result.counts == {"ok": 2}
    assert [r["return_value"] for r in shard_rows(tmp_path / "out" / unit.shard_name)] == ["1", "2"]


def test_a_runner_failure_reaches_the_driver_whole() -> None:
    # Ray pickles a task's exception to send it to the driver: the failure must survive that,
    # or all the driver can say is "Failed to deserialize exception".
    failure = pickle.loads(pickle.dumps(RunnerFailed("the runner exited", exit_code=3, stderr_tail="why")))
    assert (str(failure), failure.exit_code, failure.stderr_tail) == ("the runner exited", 3, "why")



class FrozenMidRound(LocalSandbox):
    """A worker frozen while its runner ran (its node given up for lost by Ray): meanwhile the
    unit's retry starts elsewhere; then the worker wakes up and goes on with its unit."""

    def __init__(self, out: Path, unit) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.out, self.unit = out, unit

    def run_unit(self, req):  # type: ignore[no-untyped-def]
        outcome = super().run_unit(req)
        retry = unit_work_dir(self.out, self.unit.unit_id) / "attempt-2"
        retry.mkdir()
        (retry / "stream.jsonl").write_text("")  # the retry's runner writes here
        return outcome


def test_a_worker_that_wakes_up_while_its_unit_is_retried_commits_and_removes_nothing(tmp_path: Path) -> None:
    """It committed the unit's shard and removed the unit's work folder: the retry's own folder,
    pulled from under its runner (the retry then failed, or could not write its files)."""
    from harvest.errors import AttemptSuperseded

    (unit,) = plan_units([call(f"p{i}", f"    return x + {i}") for i in range(3)], SETTINGS)
    with pytest.raises(AttemptSuperseded, match="attempt 1 was superseded: attempt 2 runs the unit"):
        execute_unit(unit, SETTINGS, tmp_path, "run-1", FrozenMidRound(tmp_path, unit))
    assert (unit_work_dir(tmp_path, unit.unit_id) / "attempt-2" / "stream.jsonl").exists()  # left to the retry
    assert not (tmp_path / unit.shard_name).exists()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_a_worker_that_wakes_up_after_its_unit_was_retried_leaves_the_retrys_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen with its rows read, about to write the shard, while the retry committed the unit:
    it replaced the retry's shard (and the shard the driver counted) with its own."""
    import harvest.unit as unit_module
    from harvest.errors import AttemptSuperseded
    from schemas.shards import read_manifest

    (unit,) = plan_units([call(f"p{i}", f"    return x + {i}") for i in range(3)], SETTINGS)
    run_records = unit_module._run_records
    committed = {}

    def frozen_here(stream: Path):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(unit_module, "_run_records", run_records)
        retry = execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
        assert retry.attempt == 2
        committed.update(read_manifest(tmp_path) or {})
        return run_records(stream)

    monkeypatch.setattr(unit_module, "_run_records", frozen_here)
    with pytest.raises(AttemptSuperseded, match="attempt 1 was superseded: its folder is gone"):
        execute_unit(unit, SETTINGS, tmp_path, "run-1", LocalSandbox())
    assert read_manifest(tmp_path) == committed  # the retry's shard and entry, untouched
    assert committed[unit.shard_name].bytes == (tmp_path / unit.shard_name).stat().st_size
    assert not unit_work_dir(tmp_path, unit.unit_id).exists()
