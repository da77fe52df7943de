"""The determinism check (`harvest --recheck`): the sample, the comparison, and end to end on Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harvest.inputs import Program
from harvest.plan import HarvestSettings, plan_units
from harvest.recheck import (
    RECHECK_DIR,
    REPORT,
    first_difference,
    judge,
    plan_recheck,
    sample,
    sampled,
)
from tests.harvest.conftest import Cluster, run_harvest


def programs(n: int) -> list[Program]:
    return [Program(program_id=f"p{i}", mode="call", source=f"def f():\n    return {i}\n", entrypoint="f", input="")
            for i in range(n)]


def test_the_sample_is_a_function_of_the_program_and_grows_with_the_fraction() -> None:
    hashes = [p.content_hash() for p in programs(400)]
    small = {h for h in hashes if sampled(h, "base-py311", 0.1)}
    large = {h for h in hashes if sampled(h, "base-py311", 0.3)}
    assert small <= large
    assert 20 <= len(small) <= 60 and 80 <= len(large) <= 160  # ~40 and ~120 of 400
    assert small == {h for h in hashes if sampled(h, "base-py311", 0.1)}
    assert {h for h in hashes if sampled(h, "base-py313", 0.1)} != small  # the image is part of it
    assert all(sampled(h, "x", 1.0) for h in hashes)


def test_recheck_units_leave_out_test_suites_and_have_ids_of_their_own() -> None:
    settings = HarvestSettings(programs_per_unit=3)
    suite = Program(program_id="toolz:tests", mode="pytest", image="base-py311", file="tests")
    units = plan_units([*programs(5), suite], settings)
    wanted = sample(units, 1.0)
    assert [pid for _, pid in wanted] == [f"p{i}" for i in range(5)]
    checks = plan_recheck(units, settings, set(wanted))
    assert [p.program_id for c in checks for p in c.programs] == [f"p{i}" for i in range(5)]
    assert not {c.unit_id for c in checks} & {u.unit_id for u in units}
    assert plan_recheck(units, settings, set(wanted)) == checks
    assert plan_recheck(units, settings, set()) == []


def test_the_comparison_holds_one_unit_of_the_check_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare() used to read the traces of the whole sample, both runs, as Python objects before
    judging any: gigabytes on a big harvest. Now one unit of the check at a time, and a trace
    becomes a Python object only when its program is judged."""
    from harvest import recheck
    from harvest.sandbox.local import LocalSandbox
    from harvest.unit import execute_unit

    settings = HarvestSettings(image="local", sandbox="local", programs_per_unit=2)
    units = plan_units(programs(4), settings)
    checks = plan_recheck(units, settings, set(sample(units, 1.0)))
    assert [len(c) for c in checks] == [2, 2]
    sandbox = LocalSandbox()
    for unit in units:
        execute_unit(unit, settings, tmp_path, "run-1", sandbox)
    (tmp_path / RECHECK_DIR).mkdir(parents=True)  # as the harvest does before the check's units
    for check in checks:
        execute_unit(check, settings, tmp_path / RECHECK_DIR, "run-1", sandbox)
    held: list[int] = []  # programs whose traces one read holds
    original = recheck._rows

    def spy(folder: Path, wanted: dict[str, set[str]]):  # type: ignore[no-untyped-def]
        held.append(sum(len(ids) for ids in wanted.values()))
        return original(folder, wanted)

    monkeypatch.setattr(recheck, "_rows", spy)
    found = recheck.compare(tmp_path, units, checks)
    assert {key: entry["verdict"] for key, entry in found.items()} == {("local", f"p{i}"): "identical" for i in range(4)}
    assert held == [2, 2, 2, 2]  # each unit of the check: its harvest traces, then its re-run's


def test_first_difference_names_every_differing_field_and_where() -> None:
    event = {"kind": "line", "lineno": 2, "function": "f", "depth": 0, "thread_id": 0, "locals": [], "arg": None}
    a = {"status": "ok", "return_value": "1", "stdout": "", "events": [event, event]}
    assert first_difference(a, dict(a)) is None
    later = {**event, "locals": [{"name": "t", "value": "5"}]}
    b = {**a, "return_value": "2", "events": [event, later, event]}
    diff = first_difference(a, b)
    assert diff == {"fields": ["return_value", "events"], "offset": 0, "first": "1", "second": "2"}
    diff = first_difference(a, {**a, "events": [event, later]})
    assert diff is not None and (diff["fields"], diff["event"], diff["events"]) == (["events"], 1, [2, 2])
    assert json.loads(diff["second"])["locals"] == [{"name": "t", "value": "5"}]
    long_a = {**a, "stdout": "line\n" * 200 + "0x7f01\n"}
    diff = first_difference(long_a, {**long_a, "stdout": "line\n" * 200 + "0x7f02\n"})
    assert diff is not None and diff["offset"] == 1005 and diff["first"] != diff["second"]  # shown where they differ


def test_verdicts_of_runs_that_say_nothing_about_the_program() -> None:
    ok = {"trace_id": "t1", "status": "ok", "return_value": "1", "stdout": "", "events": [],
          "tracer_version": "0.1.0", "python_version": "3.11.2", "backend": "settrace"}
    assert judge(ok, dict(ok)) == {"verdict": "identical"}
    assert judge(ok, {**ok, "status": "exception"})["verdict"] == "differing"
    assert judge(ok, {**ok, "return_value": "2"})["trace_id"] == "t1"  # what publish drops
    one_sided = judge(ok, {**ok, "status": "timeout"})
    assert one_sided["reason"] == "hit a sandbox limit in one run only (ok, then timeout)" and one_sided["retry"]
    assert judge({**ok, "status": "memory"}, ok)["verdict"] == "not_compared"
    both = judge({**ok, "status": "timeout"}, {**ok, "status": "timeout", "events": [1]})
    assert both["reason"] == "timed out both times" and "retry" not in both
    assert judge({**ok, "status": "memory"}, {**ok, "status": "timeout"})["reason"] == "hit sandbox limits both times (memory, timeout)"
    upgraded = judge(ok, {**ok, "tracer_version": "0.2.0", "return_value": "2"})
    assert upgraded["reason"] == "traced by another tracer version (0.1.0, then 0.2.0)"
    assert judge(ok, None) == {"verdict": "not_compared", "reason": "no trace in the re-run", "retry": True}


NONDETERMINISTIC = {
    "clock": "import time\ndef main():\n    t = time.time_ns()\n    return t % 1000\n",
    "uuid": "import uuid\ndef main():\n    return str(uuid.uuid4())\n",
    "address": "class P:\n    pass\ndef main():\n    print(P())\n    return 1\n",
}
DETERMINISTIC = {
    "seeded": "import random\ndef main():\n    return random.random()\n",  # the sandbox seeds it
    "loop": "def main():\n    s = 0\n    for i in range(5):\n        s += i\n    return s\n",
    "strings": "def main():\n    return sorted({'a', 'b'}) + list({'c', 'd', 'e'})\n",  # fixed hash seed
    "raises": "def main():\n    return {}['missing']\n",
}


@pytest.mark.ray
@pytest.mark.slow
def test_recheck_flags_nondeterministic_programs_resumes_and_feeds_publish(ray_cluster: Cluster, tmp_path: Path) -> None:
    jsonl = tmp_path / "programs.jsonl"
    rows = [{"id": k, "source": v, "entrypoint": "main", "input": ""} for k, v in {**NONDETERMINISTIC, **DETERMINISTIC}.items()]
    rows.append({"id": "spin", "source": "def main():\n    while True:\n        pass\n", "entrypoint": "main", "input": ""})
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = [jsonl, "--out", out, "--sandbox", "local", "--timeout", "1", "--programs-per-unit", "4", "--recheck", "1",
            "--ray-address", ray_cluster.address]
    done = run_harvest(*args, env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / REPORT).read_text())
    assert {d["program_id"] for d in report["differing"]} == set(NONDETERMINISTIC)
    assert [(e["program_id"], e["reason"]) for e in report["not_compared"]] == [("spin", "timed out both times")]
    assert (report["rechecked"], report["identical"], report["nondeterministic"]) == (8, 4, 3)
    fields = {d["program_id"]: d["fields"] for d in report["differing"]}
    assert fields["address"] == ["stdout"] and "return_value" in fields["uuid"]
    assert "determinism: 4 of 8 programs run again traced identically, 3 differently" in done.stdout
    manifest = json.loads((out / "harvest-run.json").read_text())
    assert manifest["complete"] and manifest["recheck"]["nondeterministic"] == 3
    assert manifest["counts"] == {"ok": 6, "exception": 1, "timeout": 1}  # the re-run adds no traces
    assert not (out / RECHECK_DIR).exists()  # the re-run's shards go once their verdicts are written

    # The same command again: nothing runs, neither the harvest nor the check; the report stands.
    again = run_harvest(*args, "--json", env=ray_cluster.env)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["units"]["ran"] == 0 and rerun["recheck"]["rechecked_this_run"] == 0
    assert json.loads((out / REPORT).read_text()) == report

    # Another harvest into the same folder adds its verdicts to the report: the earlier ones stay.
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "clock2", "source": NONDETERMINISTIC["clock"], "entrypoint": "main", "input": ""})
                    + "\n" + json.dumps({"id": "loop2", "source": DETERMINISTIC["loop"].replace("5", "6"), "entrypoint": "main",
                                 "input": ""})
                    + "\n")
    added = run_harvest(more, *args[1:], env=ray_cluster.env)
    assert added.returncode == 0, added.stderr
    merged = json.loads((out / REPORT).read_text())
    assert {d["program_id"] for d in merged["differing"]} == {*NONDETERMINISTIC, "clock2"}
    assert (merged["rechecked"], merged["identical"], len(merged["runs"])) == (10, 5, 2)

    worldtrace = str(Path(sys.executable).parent / "worldtrace")
    published = subprocess.run([worldtrace, "publish", str(out), "--to", str(tmp_path / "ds"), "--split", "train=1",
                                "--drop-nondeterministic"], capture_output=True, text=True)
    assert published.returncode == 0, published.stderr
    assert "4 nondeterministic" in published.stderr
    kept = subprocess.run([worldtrace, "query", str(tmp_path / "ds" / "data"), "--format", "json",
                           "SELECT program_id FROM traces ORDER BY program_id"], capture_output=True, text=True)
    assert kept.returncode == 0, kept.stderr
    assert [r["program_id"] for r in json.loads(kept.stdout)] == sorted({*DETERMINISTIC, "spin", "loop2"})
    assert list((tmp_path / "ds" / "provenance").glob("determinism-*.json"))
    assert "programs that traced differently when run again dropped" in (tmp_path / "ds" / "README.md").read_text()


@pytest.mark.ray
@pytest.mark.slow
def test_an_empty_sample_still_writes_a_report(ray_cluster: Cluster, tmp_path: Path) -> None:
    jsonl = tmp_path / "programs.jsonl"
    jsonl.write_text(json.dumps({"id": "one", "source": DETERMINISTIC["loop"], "entrypoint": "main", "input": ""}) + "\n")
    fraction = "0.001"
    assert not sampled(programs_of(jsonl)[0].content_hash(), "local", float(fraction))
    out = tmp_path / "out"
    done = run_harvest(jsonl, "--out", out, "--sandbox", "local", "--recheck", fraction,
                       "--ray-address", ray_cluster.address, env=ray_cluster.env)
    assert done.returncode == 0, done.stderr
    assert "no program of this harvest is in the --recheck sample" in done.stdout
    assert json.loads((out / REPORT).read_text())["rechecked"] == 0


def programs_of(path: Path) -> list[Program]:
    from dataclasses import replace

    from harvest.inputs import load_programs

    return [replace(p, image="local") for p in load_programs([path])]


def test_drop_nondeterministic_without_a_report_is_a_clear_error(sample_shards: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from harvest.cli import cli

    result = CliRunner().invoke(cli, ["publish", str(sample_shards), "--to", str(tmp_path / "ds"), "--drop-nondeterministic"])
    assert result.exit_code == 1
    assert "no determinism report (determinism.json) beside the shards" in result.output
    assert "--recheck FRACTION" in result.output
    assert not (tmp_path / "ds").exists()
