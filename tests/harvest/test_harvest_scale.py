"""The driver's bookkeeping per unit does not grow with the units of a harvest (no Ray: the units
run in this process, one after the other, in LocalSandboxes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harvest import run_manifest, runner, shard_io
from harvest.cli import cli
from harvest.plan import HarvestSettings, WorkUnit
from harvest.run_manifest import RunManifestWriter, RunRecord
from harvest.sandbox.local import LocalSandbox
from harvest.unit import UnitResult, execute_unit
from schemas import shards
from schemas.shards import MANIFEST_NAME


def programs_file(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "source": f"def f(x):\n    return x + {i}\n", "entrypoint": "f", "input": "1"}) + "\n")
    return path


def units_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harvest runs its units here, without Ray."""

    def run_units(units: list[WorkUnit], settings: HarvestSettings, out_dir: Path, run_id: str,
                  on_result: Callable[[UnitResult], None], on_failure: Any, **_: Any) -> None:
        sandbox = LocalSandbox()
        for unit in units:
            on_result(execute_unit(unit, settings, out_dir, run_id, sandbox))

    monkeypatch.setattr(runner, "start_ray", lambda options, sandbox: False)
    monkeypatch.setattr(runner, "run_units", run_units)


def harvest(programs: Path, out: Path, *args: str) -> None:
    result = CliRunner().invoke(cli, ["harvest", str(programs), "--out", str(out), "--sandbox", "local", "-s", *args])
    assert result.exit_code == 0, result.output


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_committing_a_unit_reads_no_other_units_bookkeeping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each unit used to re-read every manifest entry (to rebuild _manifest.json), list the whole
    output folder (for its stale temporaries) and have the driver write the run manifest (an entry
    per unit): quadratic in the units of a harvest."""
    units_in_process(monkeypatch)
    listings = count_calls(monkeypatch, shards, "_listing")  # of the manifest entries' folder
    sweeps = count_calls(monkeypatch, shard_io, "_remove_stale_temporaries")
    manifests = count_calls(monkeypatch, run_manifest, "write_run_manifest")
    monkeypatch.setattr(run_manifest, "_clock", FakeClock(tick=1.0))  # each write seems to take 1 s
    seen = []
    for n in (2, 6):
        listings[0] = sweeps[0] = manifests[0] = 0
        out = tmp_path / f"out{n}"
        harvest(programs_file(tmp_path / f"p{n}.jsonl", n), out, "--programs-per-unit", "1")
        seen.append((listings[0], sweeps[0], manifests[0]))
        # ... and the merged view lists every shard once the harvest ends.
        merged = json.loads((out / MANIFEST_NAME).read_text())
        assert sorted(s["file"] for s in merged["shards"]) == sorted(p.name for p in out.glob("unit-*.parquet"))
        assert len(merged["shards"]) == n and merged["rows"] == n
    assert seen[0] == seen[1], f"(entry listings, folder sweeps, run manifest writes) for 2 and 6 units: {seen}"
    assert seen[0][1] == 0  # first attempts: no earlier attempt can have left a temporary


def test_a_run_that_merged_no_manifest_is_merged_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver killed before the end of its run leaves the units' entries unmerged; the next run
    of the same command, with nothing left to do, merges them."""
    units_in_process(monkeypatch)
    programs = programs_file(tmp_path / "p.jsonl", 3)
    out = tmp_path / "out"
    harvest(programs, out, "--programs-per-unit", "1")
    merged = (out / MANIFEST_NAME).read_text()
    (out / MANIFEST_NAME).unlink()  # as if the driver had died before merging
    harvest(programs, out, "--programs-per-unit", "1")
    assert (out / MANIFEST_NAME).read_text() == merged


class FakeClock:
    """Time that moves only when told to (`tick`: by this much at every reading)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_the_run_manifest_is_written_at_a_bounded_share_of_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest holds an entry per unit, so a write costs more as the run goes: written after
    every unit, writing it was quadratic in the units. Spaced, its share of the run stays bounded."""
    clock = FakeClock()
    monkeypatch.setattr(run_manifest, "_clock", clock)
    written: list[int] = []

    def write(out_dir: Path, record: RunRecord) -> Path:
        clock.now += 0.0001 * len(record.results)  # a write's cost grows with the units recorded
        written.append(len(record.results))
        return out_dir

    monkeypatch.setattr(run_manifest, "write_run_manifest", write)
    record = RunRecord(run_id="r", command=[], inputs=[], settings=HarvestSettings())
    writer = RunManifestWriter(tmp_path, record)
    assert writer.write(force=True)
    units = 20_000
    for i in range(units):
        clock.now += 0.01  # a unit finishes every 10 ms
        record.results.append(UnitResult(unit_id=str(i), image="local", shard="s", n_programs=1, counts={"ok": 1},
                                         shard_bytes=1, attempt=1, rounds=1, wall_time_s=0.0, sandbox_time_s=0.0,
                                         program_time_s=0.0))
        writer.write()
    assert written[:2] == [0, 1] and len(written) > 20  # cheap writes follow the units closely
    writing = sum(0.0001 * n for n in written)
    assert writing < 0.1 * clock.now  # after every unit: 0.0001 * 20,000**2 / 2 = 20,000 s of ~200 s
    assert writer.write(force=True) and written[-1] == units  # the last write has every unit
