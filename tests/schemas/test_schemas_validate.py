"""validate / `worldtrace validate`: truncated, corrupted and foreign files are caught."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from stream_samples import IMAGE, SIMPLE_SOURCE, simple_trace

from harvest.cli import cli
from schemas.convert import stream_to_batches
from schemas.errors import ShardError
from schemas.shards import MANIFEST_ENTRIES_DIR, MANIFEST_NAME, write_shard
from schemas.validate import ValidationReport, validate


def make_shards(folder: Path, n: int = 2) -> list[Path]:
    paths = []
    for k in range(n):
        lines = [json.dumps(simple_trace(i, f"s{k}-{i}")) for i in range(200)]
        path = folder / f"shard-{k}.parquet"
        write_shard(path, stream_to_batches(lines, context={"source": SIMPLE_SOURCE, "image": IMAGE}))
        paths.append(path)
    return paths


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_valid_directory(tmp_path: Path) -> None:
    make_shards(tmp_path)
    report = validate(tmp_path)
    assert report.ok, report.lines()
    assert [s.rows for s in report.shards] == [200, 200]
    assert sum(s.events for s in report.shards) == 1600


def test_truncated_shard(tmp_path: Path) -> None:
    first, _ = make_shards(tmp_path)
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    report = validate(tmp_path)
    assert not report.ok
    (bad,) = [s for s in report.shards if not s.ok]
    assert bad.path.endswith("shard-0.parquet")
    text = " ".join(bad.problems)
    assert "differs from the manifest" in text and "not a Parquet shard" in text


def test_corrupted_data_page_is_caught_even_without_a_manifest(tmp_path: Path) -> None:
    (path,) = make_shards(tmp_path, 1)
    (tmp_path / MANIFEST_NAME).unlink()
    for entry in (tmp_path / MANIFEST_ENTRIES_DIR).iterdir():
        entry.unlink()
    (tmp_path / MANIFEST_ENTRIES_DIR).rmdir()
    assert validate(path).ok
    # a byte inside the first column chunk's pages: the page CRC catches it
    flip_byte(path, 200)
    report = validate(path)
    assert not report.ok, report.lines()
    assert any("corrupted" in p for p in report.shards[0].problems)


def test_corruption_caught_by_the_manifest_checksum(tmp_path: Path) -> None:
    path, _ = make_shards(tmp_path)
    flip_byte(path, os.path.getsize(path) // 2)
    report = validate(tmp_path)
    assert any("sha256 differs" in p for p in report.shards[0].problems)


def test_manifest_and_directory_disagree(tmp_path: Path) -> None:
    first, second = make_shards(tmp_path)
    second.unlink()
    stray = tmp_path / "stray.parquet"
    first.rename(stray)
    report = validate(tmp_path)
    assert any("shard-1.parquet: listed in the manifest but missing" in p for p in report.problems)
    assert any("not listed" in p for p in report.shards[0].problems)


def test_a_glob_notices_a_shard_missing_from_its_manifest(tmp_path: Path) -> None:
    second = make_shards(tmp_path, 3)[1]
    second.unlink()
    report = validate(str(tmp_path / "*.parquet"))
    assert report.problems == [f"{second}: listed in the manifest but missing"]
    assert validate(str(tmp_path / "shard-[02].parquet")).ok  # an entry the glob does not match is not missing
    assert not validate(str(tmp_path / "shard-[01].parquet")).ok


def test_foreign_parquet_and_wrong_version(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    report = validate(tmp_path / "foreign.parquet")
    problems = " ".join(report.shards[0].problems)
    assert "missing column 'events'" in problems and "no worldtrace.schema_version" in problems
    (path,) = make_shards(tmp_path / "v", 1)
    table = pq.read_table(path)
    table = table.replace_schema_metadata({**table.schema.metadata, b"worldtrace.schema_version": b"99"})
    pq.write_table(table, tmp_path / "v2.parquet")
    report = validate(tmp_path / "v2.parquet")
    assert any("schema version 99" in p for p in report.shards[0].problems)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no such file or directory"):
        validate(tmp_path / "nope")
    with pytest.raises(ShardError, match="no file matches"):
        validate(str(tmp_path / "*.parquet"))
    report = validate(tmp_path)
    assert not report.ok and "no shards" in report.problems[0]


def test_cli_reports_and_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    first, _ = make_shards(tmp_path)
    result = runner.invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 shards, 400 traces, 1600 events: valid" in result.output
    result = runner.invoke(cli, ["validate", str(tmp_path / "*.parquet"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)[0]["ok"] is True
    first.write_bytes(first.read_bytes()[:100])
    result = runner.invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "INVALID (3 problems)" in result.output
    result = runner.invoke(cli, ["validate", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'missing'}: no such file or directory"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = runner.invoke(cli, ["validate", str(notes)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {notes}: not a Parquet shard") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    assert runner.invoke(cli, ["validate", "--help"]).exit_code == 0


def test_duplicate_traces_across_shards(tmp_path: Path) -> None:
    make_shards(tmp_path, 1)
    lines = [json.dumps(simple_trace(i, f"s0-{i}")) for i in (5, 6)]  # already in shard-0
    write_shard(tmp_path / "again.parquet",
                stream_to_batches(lines, context={"source": SIMPLE_SOURCE, "image": IMAGE}))
    report = validate(tmp_path)
    assert not report.ok
    (bad,) = [s for s in report.shards if not s.ok]
    assert bad.path.endswith("shard-0.parquet")  # files are checked in name order
    assert "2 duplicate trace_ids" in bad.problems[0] and "again.parquet" in bad.problems[0]


def test_duplicate_traces_across_paths_and_a_corrupt_shard_of_a_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        make_shards(folder, 1)  # the same traces in both folders
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(first), str(second)])
    assert result.exit_code == 1 and "200 duplicate trace_ids" in result.output, result.output
    assert runner.invoke(cli, ["validate", str(first), str(first)]).exit_code == 0  # the same path twice
    # A folder's only shard, corrupted: the per-shard report, not a one-line "not a shard" error.
    (shard,) = first.glob("*.parquet")
    shard.write_bytes(shard.read_bytes() + b"x")
    result = runner.invoke(cli, ["validate", str(first)])
    assert result.exit_code == 1 and "FAIL" in result.output and "differs from the manifest" in result.output


def test_duplicate_traces_within_a_shard(tmp_path: Path) -> None:
    lines = [json.dumps(simple_trace(1, "same"))] * 3
    write_shard(tmp_path / "dup.parquet", stream_to_batches(lines, context={"source": SIMPLE_SOURCE, "image": IMAGE}))
    report = validate(tmp_path)
    assert "2 duplicate trace_ids" in report.shards[0].problems[0]
    assert "also in this shard" in report.shards[0].problems[0]


def test_validate_a_remote_copy(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    make_shards(tmp_path, 1)
    fs = fsspec.filesystem("memory")
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            fs.pipe(f"/wt-validate/{path.relative_to(tmp_path)}", path.read_bytes())
    try:
        report = validate("memory://wt-validate")
        assert report.ok, report.lines()
        assert report.shards[0].rows == 200 and not report.shards[0].warnings  # manifest found
        fs.pipe("/wt-validate/shard-0.parquet", (tmp_path / "shard-0.parquet").read_bytes()[:-10])
        assert not validate("memory://wt-validate").ok
    finally:
        fs.rm("/wt-validate", recursive=True)


def test_verdict_counts_problems_in_words() -> None:
    one = ValidationReport(path="d", problems=["no shards"])
    assert one.lines()[-1].endswith("INVALID (1 problem)")
    one.problems.append("another")
    assert one.lines()[-1].endswith("INVALID (2 problems)")
