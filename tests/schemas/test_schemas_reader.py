"""Reader: files, directories, globs and URIs; the full-state view of locals."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stream_samples import IMAGE, SIMPLE_SOURCE, event, simple_trace, stream_object

from schemas.convert import stream_to_batches
from schemas.errors import ShardError
from schemas.reader import (
    full_locals,
    iter_batches,
    iter_full_locals,
    iter_traces,
    read_table,
    shard_paths,
)
from schemas.shards import write_shard


def make(folder: Path, name: str, ids: range) -> Path:
    lines = [json.dumps(simple_trace(i, f"p{i}")) for i in ids]
    path = folder / name
    write_shard(path, stream_to_batches(lines, context={"source": SIMPLE_SOURCE, "image": IMAGE}))
    return path


def test_file_directory_and_glob(tmp_path: Path) -> None:
    a = make(tmp_path, "a.parquet", range(0, 3))
    make(tmp_path / "sub", "b.parquet", range(3, 5))
    (tmp_path / ".hidden.parquet").write_bytes(a.read_bytes())
    (tmp_path / "_scratch").mkdir()
    (tmp_path / "_scratch" / "c.parquet").write_bytes(a.read_bytes())
    ids = lambda path: [t["program_id"] for t in iter_traces(path)]  # noqa: E731
    assert ids(a) == ["p0", "p1", "p2"]
    assert ids(tmp_path) == [f"p{i}" for i in range(5)]  # recursive, hidden and _ skipped
    assert ids(str(tmp_path / "*.parquet")) == ["p0", "p1", "p2"]
    assert ids(str(tmp_path / "**" / "*.parquet")) == [f"p{i}" for i in range(5)]
    assert ids(f"file://{tmp_path}") == [f"p{i}" for i in range(5)]
    assert read_table(tmp_path, columns=["program_id"]).num_rows == 5
    assert [b.num_rows for b in iter_batches(a, columns=["status"])] == [3]


def test_a_folder_linked_into_itself_or_twice_is_read_once(tmp_path: Path) -> None:
    """pyarrow's listing followed a link back up (ln -s .. up) until the path was too long: every
    shard some 40 times (and with two such links, an exponential walk ending in ELOOP)."""
    loop = tmp_path / "loop"
    make(loop, "a.parquet", range(0, 2))
    (loop / "up").symlink_to(loop)
    assert shard_paths(loop) == [str(loop / "a.parquet")]
    assert [t["program_id"] for t in iter_traces(loop)] == ["p0", "p1"]
    twice = tmp_path / "twice"
    make(twice / "sub", "b.parquet", range(2, 3))
    (twice / "also-sub").symlink_to(twice / "sub")
    assert shard_paths(twice) == [str(twice / "sub" / "b.parquet")]  # its own name, not the link's


def test_a_glob_over_linked_folders_or_files_lists_each_shard_once(tmp_path: Path) -> None:
    """Python's glob followed a link back up too: `DIR/**/*.parquet` listed a shard 41 times over
    one such link (a query counted its rows 41 times) and never ended over two."""
    root = tmp_path / "out"
    make(root / "sub", "a.parquet", range(0, 2))
    (root / "sub" / "up").symlink_to(root)
    (root / "sub" / "up2").symlink_to(root)
    (root / "b-link.parquet").symlink_to(root / "sub" / "a.parquet")  # one shard, two names
    (root / "sub" / "also").symlink_to(root / "sub")
    only = [str(root / "sub" / "a.parquet")]
    assert shard_paths(str(root / "**" / "*.parquet")) == only
    assert shard_paths(str(root / "*" / "*.parquet")) == only  # its own name, not a link's
    assert shard_paths(root) == only
    assert [t["program_id"] for t in iter_traces(str(root / "**" / "a.parquet"))] == ["p0", "p1"]
    (root / "sub" / ".hidden").mkdir()
    make(root / "sub" / ".hidden", "c.parquet", range(2, 3))
    make(root / "sub" / "deeper", "d.parquet", range(3, 4))
    assert shard_paths(str(root / "**" / "*.parquet")) == [*only, str(root / "sub" / "deeper" / "d.parquet")]
    # a shard that the pattern matches only through a link is listed under that name
    assert shard_paths(str(root / "s?b" / "[!x]*" / "*.parquet")) == [
        str(root / "sub" / "also" / "a.parquet"), str(root / "sub" / "deeper" / "d.parquet")]


def test_fsspec_uri(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    a = make(tmp_path, "a.parquet", range(2))
    fs = fsspec.filesystem("memory")
    fs.pipe("/wt-test/data/a.parquet", a.read_bytes())
    try:
        assert [t["program_id"] for t in iter_traces("memory://wt-test/data")] == ["p0", "p1"]
        assert len(shard_paths("memory://wt-test/data/*.parquet")) == 1
    finally:
        fs.rm("/wt-test", recursive=True)


def test_missing_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no such file"):
        list(iter_traces(tmp_path / "missing"))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(ShardError, match="not the trace schema"):
        list(iter_traces(tmp_path / "x.parquet"))
    (tmp_path / "y.parquet").write_text("not parquet")
    with pytest.raises(ShardError, match="not a readable Parquet shard"):
        list(iter_traces(tmp_path / "y.parquet"))


def test_plain_strings_read_back_as_the_trace_schema(tmp_path: Path) -> None:
    """A published dataset stores dictionary-encoded strings plain: readers accept and cast them;
    any other type change is still not the trace schema."""
    from schemas.arrow import plain_schema, trace_schema
    from schemas.reader import schema_problems

    shard = make(tmp_path, "a.parquet", range(3))
    table = read_table(shard)
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(table.cast(plain_schema(table.schema)), plain / "p.parquet")
    assert schema_problems(pq.read_schema(plain / "p.parquet")) == []
    assert list(iter_traces(plain)) == list(iter_traces(shard))
    assert [b.schema.equals(trace_schema()) for b in iter_batches(plain)] == [True]
    assert read_table(plain).schema.equals(table.schema)
    at = table.schema.get_field_index("schema_version")
    wrong = table.schema.set(at, table.schema.field(at).with_type(pa.int64()))
    assert "column 'schema_version' has type int64, expected int16" in schema_problems(plain_schema(wrong))


def test_full_state_of_locals() -> None:
    trace = stream_object([
        event("call", 1, "def f(a):", {"a": "1"}),
        event("line", 2, "    b = g(a)"),
        event("call", 5, "def g(x):", {"x": "1"}, function="g", depth=1, frame_id=1),
        event("line", 6, "    return x", function="g", depth=1, frame_id=1),
        event("return", 6, "    return x", arg="1", function="g", depth=1, frame_id=1),
        event("line", 3, "    del a", {"b": "1"}),
        event("line", 4, "    return b", {"a": None}),
    ])
    events = trace["events"]
    expected = [{"a": "1"}, {"a": "1"}, {"x": "1"}, {"x": "1"}, {"x": "1"}, {"a": "1", "b": "1"}, {"b": "1"}]
    assert list(iter_full_locals(events)) == expected
    assert [full_locals(events, i) for i in range(len(events))] == expected
    assert full_locals(events, -1) == {"b": "1"}
    # rows read back (locals as name/value lists) give the same view
    rows = [dict(e, locals=[{"name": k, "value": v} for k, v in e["locals"].items()]) for e in events]
    assert list(iter_full_locals(rows)) == expected
    with pytest.raises(IndexError):
        full_locals(events, 7)
