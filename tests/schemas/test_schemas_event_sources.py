"""Shards leave out events' source lines that the program text gives, and every reader restores them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard
from stream_samples import IMAGE, event, stream_object

from schemas.arrow import shard_schema, trace_schema
from schemas.convert import rows_to_batch, stream_object_to_row, stream_to_batches
from schemas.event_sources import elide_event_sources, restore_event_sources
from schemas.ids import trace_id
from schemas.reader import iter_traces, open_shard, read_table
from schemas.shards import write_shard
from schemas.validate import validate

# Line 2 ends in \r (a CRLF file split at \n), line 3 is non-ASCII, the file has 4 lines.
PROGRAM = "def f(x):\r\n    y = 'é中'\n    return helper(y)\nimport os"
EVENTS = [
    event("call", 1, "def f(x):", {"x": "1"}),                   # the tracer strips \r\n: kept as text
    event("line", 2, "    y = 'é中'"),                          # line 2 exactly: left out
    event("line", 3, "    return helper(y)"),                   # left out
    {**event("call", 3, "def helper(v):", {"v": "'é中'"}, function="helper", depth=1, frame_id=1),
     "file": "/lib/helper.py"},                                 # another file, another text: kept
    {**event("line", 4, "import os", function="helper", depth=1, frame_id=1),
     "file": "/lib/helper.py"},                                 # another file, same text: left out
    event("line", 9, "    print(v)", function="helper", depth=1, frame_id=1),   # past the end: kept
    event("line", 0, "", function="helper", depth=1, frame_id=1),               # lineno 0: kept
    event("return", 4, "", None, "'x'", function="helper", depth=1, frame_id=1),  # "" != line 4: kept
    event("return", 3, "    return helper(y)", None, "'x'"),    # left out
]
STORED = ["def f(x):", None, None, "def helper(v):", None, "    print(v)", "", "", None]


def _batch(n: int = 1, *, vary: bool = False) -> pa.RecordBatch:
    """n rows of EVENTS over PROGRAM; with `vary`, row i's program starts with i more lines and
    its events' line numbers are shifted to match (a row mixed up with another shows)."""
    rows = []
    for i in range(n):
        shift = i if vary else 0
        events = [{**e, "lineno": e["lineno"] + shift if e["lineno"] else 0} for e in EVENTS]
        obj = stream_object(events, program_id=f"p{i}")
        rows.append(stream_object_to_row(obj, {"source": "#\n" * shift + PROGRAM, "image": IMAGE}))
    return rows_to_batch(rows)


def _event_sources(rows: pa.Table | pa.RecordBatch) -> list[Any]:
    return [e["source"] for events in rows.column("events").to_pylist() for e in events]


def test_only_lines_the_program_gives_are_left_out(tmp_path: Path) -> None:
    batch = _batch()
    elided = elide_event_sources(batch)
    assert _event_sources(elided) == STORED
    assert elided.schema.equals(shard_schema(), check_metadata=False)
    restored = restore_event_sources(elided)
    assert restored.schema.equals(trace_schema(), check_metadata=False)
    assert restored.to_pylist() == batch.to_pylist()


def test_shards_store_the_short_form_and_readers_restore_it(tmp_path: Path) -> None:
    batch = _batch(3)
    path = tmp_path / "shard-0.parquet"
    write_shard(path, [batch])
    assert _event_sources(pq.read_table(path)) == STORED * 3  # what pyarrow, DuckDB, polars see
    assert list(iter_traces(path)) == batch.to_pylist()
    assert read_table(tmp_path).to_pylist() == batch.to_pylist()
    events_only = read_table(tmp_path, columns=["program_id", "events"])
    assert events_only.column_names == ["program_id", "events"]
    assert events_only.column("events").to_pylist() == batch.column("events").to_pylist()
    shard = open_shard(pafs.LocalFileSystem(), str(path))
    (read,) = shard.iter_batches(columns=["events"])
    assert read.schema.names == ["events"] and _event_sources(read) == _event_sources(batch)
    assert shard.read_row_group(0).to_pylist() == batch.to_pylist()
    assert validate(tmp_path).ok


def test_sliced_and_chunked_rows_keep_their_lines() -> None:
    varied = _batch(5, vary=True)
    for piece in (varied, varied.slice(1, 3), varied.slice(4, 1)):
        elided = elide_event_sources(piece)
        assert _event_sources(elided) == STORED * piece.num_rows
        assert restore_event_sources(elided).to_pylist() == piece.to_pylist()
    batch = _batch(5)
    piece = batch.slice(2, 2)  # a slice: list offsets do not start at 0
    assert restore_event_sources(elide_event_sources(piece)).to_pylist() == piece.to_pylist()
    table = pa.Table.from_batches([batch.slice(0, 1), batch.slice(1, 4)])
    round_trip = restore_event_sources(elide_event_sources(table))
    assert round_trip.num_rows == 5 and round_trip.to_pylist() == table.to_pylist()
    assert restore_event_sources(table.select(["program_id", "events"])).num_rows == 5  # no source: as is


def test_a_shard_with_every_line_stored_still_reads_and_validates(tmp_path: Path) -> None:
    """Shards written before lines were left out (events.source not null) stay readable."""
    batch = _batch(2)
    schema = pa.schema(list(trace_schema()), metadata=trace_schema().metadata)
    pq.write_table(pa.Table.from_batches([batch]).cast(schema), tmp_path / "old.parquet")
    assert list(iter_traces(tmp_path)) == batch.to_pylist()
    report = validate(tmp_path)
    assert report.ok, report.lines()


def test_validate_reports_a_left_out_line_the_program_lacks(tmp_path: Path) -> None:
    batch = elide_event_sources(_batch())
    events = batch.column("events").to_pylist()
    events[0][1]["lineno"] = 40  # left out, but the program has no line 40
    broken = batch.set_column(batch.schema.get_field_index("events"), batch.schema.field("events"),
                              pa.array(events, batch.schema.field("events").type))
    pq.write_table(pa.Table.from_batches([broken]), tmp_path / "broken.parquet")
    report = validate(tmp_path)
    assert not report.ok and any("1 events have no source line" in p for s in report.shards for p in s.problems)


def test_cruxeval_shard_no_larger_than_jsonl_zstd(cruxeval_traces: list[tuple[dict, str]], tmp_path: Path) -> None:
    """Issue 3's storage target, on the same rows as benchmarks/storage.py, at the default level."""
    lines, by_program, rows = [], {}, []
    for obj, src in cruxeval_traces:
        lines.append(json.dumps(obj))
        by_program[obj["program_id"]] = src
        tid = trace_id(obj["program_id"], src, obj["entrypoint"], obj["input"], IMAGE, obj["backend"],
                       obj["tracer_version"])
        rows.append(json.dumps({"trace_id": tid, "source": src, "image": IMAGE, **obj}))
    info = write_shard(tmp_path / "crux.parquet", stream_to_batches(
        lines, context=lambda o: {"source": by_program[o["program_id"]], "image": IMAGE}))
    jsonl = len(zstandard.ZstdCompressor(level=9).compress(("\n".join(rows) + "\n").encode()))
    assert info.bytes <= jsonl, f"shard {info.bytes} B > JSONL+zstd {jsonl} B"
    assert list(iter_traces(tmp_path / "crux.parquet"))[0]["events"][0]["source"].startswith("def f(")


@pytest.mark.parametrize("level", [1, 19])
def test_compression_level_does_not_change_what_is_read(level: int, tmp_path: Path) -> None:
    batch = _batch(2)
    write_shard(tmp_path / "s.parquet", [batch], compression_level=level)
    assert list(iter_traces(tmp_path)) == batch.to_pylist()
