"""ShardWriter: atomic commit (a killed writer leaves nothing under the final name) and the manifest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from stream_samples import IMAGE, SIMPLE_SOURCE, simple_trace

from schemas.convert import stream_to_batches
from schemas.errors import ShardError
from schemas.reader import iter_traces, shard_paths
from schemas.shards import (
    MANIFEST_NAME,
    ShardWriter,
    read_manifest,
    remove_stale_temporaries,
    write_shard,
)
from schemas.validate import validate

REPO = Path(__file__).resolve().parents[2]
CONTEXT = {"source": SIMPLE_SOURCE, "image": IMAGE}


def batches(n: int, start: int = 0):
    return stream_to_batches([json.dumps(simple_trace(i, f"p{i}")) for i in range(start, start + n)],
                             context=CONTEXT, batch_rows=50)


WRITER_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from stream_samples import SIMPLE_SOURCE, simple_trace
    from schemas.convert import stream_to_batches
    from schemas.shards import ShardWriter

    lines = [json.dumps(simple_trace(i, f"p{{i}}")) for i in range(2000)]
    batches = stream_to_batches(lines, context={{"source": SIMPLE_SOURCE, "image": "img"}}, batch_rows=100)
    with ShardWriter({path!r}, row_group_bytes=1) as writer:
        for i, batch in enumerate(batches):
            writer.write_batch(batch)
            if i == 3:
                print("row groups on disk", flush=True)
                sys.stdin.readline()  # wait here, mid-write, until the parent kills us
    """
)


def test_killed_writer_leaves_no_file_under_its_final_name(tmp_path: Path) -> None:
    final = tmp_path / "shard-0.parquet"
    code = WRITER_CHILD.format(tests=str(Path(__file__).parent), path=str(final))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "row groups on disk"
        temps = list(tmp_path.glob(".shard-0.parquet.tmp-*"))
        assert len(temps) == 1 and temps[0].stat().st_size > 1000  # really mid-write
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not final.exists()
    assert shard_paths(tmp_path) == []  # readers ignore the leftover temporary file
    assert list(iter_traces(tmp_path)) == []
    report = validate(tmp_path)
    assert any("leftover temporary file" in w for w in report.warnings)
    # a re-run cleans up what is old enough and writes the shard normally
    assert remove_stale_temporaries(tmp_path, older_than_s=3600) == []  # could still be writing
    assert remove_stale_temporaries(tmp_path, older_than_s=-1) == temps
    assert not validate(tmp_path).warnings
    info = write_shard(final, batches(20))
    assert info.rows == 20 and final.exists()
    assert validate(tmp_path).ok


def test_exception_while_writing_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "s.parquet"
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(final, row_group_bytes=1) as writer:
        writer.write_batches(batches(100))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing the temporary file flushes it, which fails again on a full disk: the temporary file
    was left behind (on the disk that is full), and that second error hid the first."""
    import errno

    from schemas import shards

    def full_disk(path: Path, mode: str):  # type: ignore[no-untyped-def]
        Path(path).touch()  # the temporary file exists; every byte written to it fails to land
        return open("/dev/full", mode)

    monkeypatch.setattr(shards, "open", full_disk, raising=False)
    with pytest.raises(OSError) as raised:
        write_shard(tmp_path / "s.parquet", batches(20))
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_names_and_existing_files(tmp_path: Path) -> None:
    write_shard(tmp_path / "s.parquet", batches(1))
    with pytest.raises(ShardError, match="already exists"):
        ShardWriter(tmp_path / "s.parquet")
    for name in (".hidden.parquet", "_x.parquet"):
        with pytest.raises(ShardError, match="must not start"):
            ShardWriter(tmp_path / name)
    assert write_shard(tmp_path / "s.parquet", batches(2), overwrite=True).rows == 2


def test_manifest_records_rows_bytes_and_sha256(tmp_path: Path) -> None:
    import hashlib

    info = write_shard(tmp_path / "a.parquet", batches(30))
    data = (tmp_path / "a.parquet").read_bytes()
    assert info.bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.rows == 30 and info.events == 120
    merged = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert merged["rows"] == 30 and merged["shards"][0]["sha256"] == info.sha256
    assert read_manifest(tmp_path) == {"a.parquet": info}


CONCURRENT_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from stream_samples import SIMPLE_SOURCE, simple_trace
    from schemas.convert import stream_to_batches
    from schemas.shards import write_shard
    worker = int(sys.argv[1])
    for k in range(3):
        lines = [json.dumps(simple_trace(i, f"w{{worker}}-{{k}}-{{i}}")) for i in range(10)]
        write_shard(f"{dir}/w{{worker}}-{{k}}.parquet",
                    stream_to_batches(lines, context={{"source": SIMPLE_SOURCE, "image": "img"}}))
    """
)


def test_concurrent_writers_share_one_manifest(tmp_path: Path) -> None:
    code = CONCURRENT_CHILD.format(tests=str(Path(__file__).parent), dir=str(tmp_path))
    children = [subprocess.Popen([sys.executable, "-c", code, str(w)], cwd=REPO) for w in range(4)]
    assert [c.wait(timeout=300) for c in children] == [0, 0, 0, 0]
    manifest = read_manifest(tmp_path)
    assert manifest is not None and len(manifest) == 12
    merged = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert len(merged["shards"]) == 12 and merged["rows"] == 120
    assert validate(tmp_path).ok
    assert len(list(iter_traces(tmp_path))) == 120


@pytest.mark.parametrize("merge", [True, False])
def test_two_writers_of_one_shard_that_interleave_leave_an_entry_that_describes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merge: bool
) -> None:
    """A worker frozen between renaming its shard into place and recording it (declared dead, its
    unit retried elsewhere) wakes up after the retry committed the same shard: the retry's file was
    on disk, the zombie's entry in the manifest (other size and sha256: a corrupt shard)."""
    from schemas import shards

    path = tmp_path / "unit.parquet"
    record = shards.record_shard
    calls = []

    def retry_commits_first(directory: Path, info: shards.ShardInfo, merge: bool = True) -> None:
        calls.append(info)
        if len(calls) == 1:  # the zombie's shard is in place, its entry not yet written
            monkeypatch.setattr(shards, "record_shard", record)
            retry = write_shard(path, batches(5, start=100), overwrite=True, merge_manifest=merge)
            monkeypatch.setattr(shards, "record_shard", retry_commits_first)
            assert retry.rows == 5
        record(directory, info, merge=merge)

    monkeypatch.setattr(shards, "record_shard", retry_commits_first)
    zombie = write_shard(path, batches(3), overwrite=True, merge_manifest=merge)
    monkeypatch.setattr(shards, "record_shard", record)
    assert calls[0].rows == 3  # the zombie's entry was written after the retry's
    assert zombie.rows == 5 and zombie.bytes == path.stat().st_size  # it recorded the file on disk
    if not merge:
        shards.rebuild_manifest(tmp_path)
    assert read_manifest(tmp_path) == {"unit.parquet": zombie}
    report = validate(tmp_path)
    assert report.ok, report.problems + [p for s in report.shards for p in s.problems]
    assert [t["program_id"] for t in iter_traces(tmp_path)] == [f"p{i}" for i in range(100, 105)]


def test_plain_string_batches_are_cast_and_foreign_ones_refused(tmp_path: Path) -> None:
    import pyarrow as pa

    batch = next(iter(batches(5)))
    plain = pa.Table.from_batches([batch]).to_pandas()  # dictionaries become plain objects
    table = pa.Table.from_pandas(plain, preserve_index=False)
    table = table.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                  for f in batch.schema]), safe=False)
    assert write_shard(tmp_path / "a.parquet", table.to_batches()).rows == 5
    assert [t["program_id"] for t in iter_traces(tmp_path / "a.parquet")] == [f"p{i}" for i in range(5)]
    with pytest.raises(ShardError, match="does not match the trace schema"):
        write_shard(tmp_path / "b.parquet", [pa.record_batch({"x": [1]})])
    assert not (tmp_path / "b.parquet").exists()
