"""Tracer stream -> Arrow -> Parquet -> read back gives identical traces (hand-made, hostile, CRUXEval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from stream_samples import IMAGE, SIMPLE_SOURCE, event, simple_trace, stream_object

from schemas.arrow import SCHEMA_VERSION, shard_schema
from schemas.convert import row_to_stream_object, stream_to_batches
from schemas.errors import StreamFormatError
from schemas.event_sources import restore_event_sources
from schemas.ids import trace_id
from schemas.reader import iter_traces, read_table
from schemas.shards import write_shard


def roundtrip(objects: list[dict[str, Any]], sources: list[str], tmp_path: Path, **options: Any) -> list[dict]:
    """Write the objects as JSON Lines -> shard, read them back as stream objects."""
    lines = [json.dumps(obj) for obj in objects]
    by_program = {obj["program_id"]: src for obj, src in zip(objects, sources)}
    batches = stream_to_batches(
        lines, context=lambda obj: {"source": by_program[obj["program_id"]], "image": IMAGE}, **options
    )
    write_shard(tmp_path / "shard-0.parquet", batches)
    rows = list(iter_traces(tmp_path))
    assert [r["source"] for r in rows] == sources
    assert all(r["image"] == IMAGE and r["schema_version"] == SCHEMA_VERSION for r in rows)
    return [row_to_stream_object(r) for r in rows]


def assert_identical(back: list[dict], original: list[dict]) -> None:
    assert len(back) == len(original)
    for got, want in zip(back, original):
        assert got == want
        # Dict equality ignores order: the order of locals is part of the trace too.
        for ev_got, ev_want in zip(got["events"], want["events"]):
            assert list(ev_got["locals"].items()) == list(ev_want["locals"].items())


def test_simple_traces_roundtrip(tmp_path: Path) -> None:
    objects = [simple_trace(i, f"p{i}") for i in range(20)]
    assert_identical(roundtrip(objects, [SIMPLE_SOURCE] * 20, tmp_path, batch_rows=7), objects)


def test_trace_id_is_stable_and_discriminating(tmp_path: Path) -> None:
    obj = simple_trace(1)
    roundtrip([obj], [SIMPLE_SOURCE], tmp_path)
    (row,) = iter_traces(tmp_path)
    args = ("p1", SIMPLE_SOURCE, "f", "1", IMAGE, "settrace", "0.1.0")
    assert row["trace_id"] == trace_id(*args)
    assert len(row["trace_id"]) == 32
    for i in range(len(args)):
        changed = list(args)
        changed[i] = str(changed[i]) + "x"
        assert trace_id(*changed) != row["trace_id"]
    assert trace_id("p", "s", None, None, "i", "b", "v") != trace_id("p", "s", "", "", "i", "b", "v")


def hostile_objects() -> tuple[list[dict], list[str]]:
    huge = "'" + "x" * (8 << 20) + "'"
    big_list = "[" + ", ".join(str(i) for i in range(100000)) + "]"
    depth = 2000
    recursion = [event("call", 1, "def r(n):", {"n": str(depth)}, function="r")]
    for d in range(1, depth + 1):
        recursion.append(event("line", 2, "    return r(n - 1) if n else 0", function="r", depth=d - 1, frame_id=d - 1))
        recursion.append(event("call", 1, "def r(n):", {"n": str(depth - d)}, function="r", depth=d, frame_id=d))
    for d in range(depth, -1, -1):
        recursion.append(event("return", 2, "    return r(n - 1) if n else 0", arg="0", function="r", depth=d, frame_id=d))
    objects = [
        # huge values, in locals, return value and output
        stream_object(
            [event("call", 1, "def f(x):", {"x": huge}), event("line", 2, "    return x", {"y": big_list}),
             event("return", 2, "    return x", arg=huge)],
            program_id="huge", return_value=huge, stdout=huge[:1000000], output_truncated=True,
        ),
        # non-UTF-8 output as the tracer escapes it, unusual Unicode, NUL, special tokens, deletions
        stream_object(
            [event("call", 1, "def f(s):", {"s": "'\\xff\\xfe'", "ключ": "'é 中 🐍'"}),
             event("line", 2, "    del s", {"t": "'\\x00<|frame_sep|>'"}),
             event("line", 3, "    return t", {"s": None}),
             event("exception", 3, "    return t", arg="ValueError: bad \\udcff"),
             event("return", 3, "    return t", arg=None)],
            program_id="bytes", status="exception", exception_type="ValueError",
            exception_message="bad \\udcff", stdout="caf\\xe9\\n", stderr="\x00\x01\u2028",
        ),
        # deep recursion: 6000 events, depths up to 2000
        stream_object(recursion, program_id="recursion", entrypoint="r", input=str(depth), return_value="0"),
        # a tracer failure: no events, error status, truncation flags
        stream_object([], program_id="error", status="error", tracer_error="unknown entry point 'g'",
                      entrypoint="g", input=None, truncated=True, truncated_reason="max_events"),
        # a script: no entry point, no input
        stream_object([event("call", 1, "import os", function="<module>")], program_id="script",
                      entrypoint=None, input=None, status="crashed",
                      exception_message="killed by signal 9 (SIGKILL)"),
    ]
    sources = ["def f(x):\n    return x\n", "def f(s):\n    del s\n    return t\n",
               "def r(n):\n    return r(n - 1) if n else 0\n", "def f():\n    pass\n", "import os\n"]
    return objects, sources


def test_hostile_traces_roundtrip(tmp_path: Path) -> None:
    objects, sources = hostile_objects()
    # Small batches and row groups: the huge trace gets a batch and a row group of its own.
    back = roundtrip(objects, sources, tmp_path, batch_bytes=1 << 20)
    assert_identical(back, objects)
    meta = pq.ParquetFile(tmp_path / "shard-0.parquet").metadata
    assert meta.num_rows == len(objects)


def test_row_groups_are_bounded_in_bytes(tmp_path: Path) -> None:
    lines = [json.dumps(simple_trace(i, f"p{i}")) for i in range(3000)]
    context = {"source": SIMPLE_SOURCE, "image": IMAGE}
    sizes = [b.nbytes for b in stream_to_batches(lines, context=context, batch_rows=100)]
    bound = 256 << 10
    write_shard(tmp_path / "s.parquet", stream_to_batches(lines, context=context, batch_rows=100),
                row_group_bytes=bound)
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(groups) == 3000 and len(groups) > 3
    # reading batches larger than a row group (each with its own dictionaries) works
    assert [t["program_id"] for t in iter_traces(tmp_path / "s.parquet")] == [f"p{i}" for i in range(3000)]
    for rows in groups[:-1]:
        # a row group closes with the first batch that brings it to the bound
        assert rows % 100 == 0
        assert (rows // 100 - 1) * min(sizes) < bound <= (rows // 100) * max(sizes)


def test_shard_file_metadata_and_statistics(tmp_path: Path) -> None:
    roundtrip([simple_trace(i, f"p{i}") for i in range(3)], [SIMPLE_SOURCE] * 3, tmp_path)
    pf = pq.ParquetFile(tmp_path / "shard-0.parquet")
    assert pf.schema_arrow.metadata[b"worldtrace.schema_version"] == b"1"
    # the stored schema: events.source may be null there (schemas/event_sources.py)
    assert pf.schema_arrow.equals(shard_schema(), check_metadata=False)
    column = pf.metadata.row_group(0).column(pf.schema_arrow.get_field_index("wall_time_s"))
    assert column.compression == "ZSTD"
    assert column.statistics is not None and column.statistics.has_min_max
    table = read_table(tmp_path, columns=["program_id", "n_events"], filters=[("n_events", ">", 0)])
    assert table.num_rows == 3


def test_bad_lines_are_reported_with_their_line_number() -> None:
    good = json.dumps(simple_trace())
    broken = [
        ("{not json", "not JSON"),
        (json.dumps({**simple_trace(), "format": "other/9"}), "format"),
        (json.dumps({k: v for k, v in simple_trace().items() if k != "status"}), "lacks keys ['status']"),
        (json.dumps({**simple_trace(), "n_events": 7}), "n_events is 7"),
        (json.dumps({**simple_trace(), "truncated": "no"}), "'truncated' is str"),
        (json.dumps(stream_object([{**event("line", 1, "x"), "lineno": "one"}])), "wrong type"),
        (json.dumps(stream_object([{**event("line", 1, "x"), "kind": "jump"}])), "unknown event kind"),
        (json.dumps(stream_object([event("call", 1, "def f(s):", {"s": "'\udcff'"})])), "not valid Unicode"),
        (json.dumps(stream_object([{**event("line", 1, "x"), "locals": ["a"]}])), "event 0 is not an object"),
        (json.dumps(stream_object(["line"])), "event 0 is not an object"),
    ]
    context = {"source": SIMPLE_SOURCE, "image": IMAGE}
    for line, message in broken:
        with pytest.raises(StreamFormatError, match="stream line 2") as info:
            list(stream_to_batches([good, line, good], context=context))
        assert message in str(info.value)
        errors: list[StreamFormatError] = []
        batches = list(stream_to_batches([good, line, good], context=context, on_error=errors.append))
        assert sum(b.num_rows for b in batches) == 2
        assert len(errors) == 1 and errors[0].line_number == 2


def test_context_must_give_source_and_image() -> None:
    with pytest.raises(StreamFormatError, match="'image'"):
        list(stream_to_batches([json.dumps(simple_trace())], context={"source": "x"}))


def test_cruxeval_roundtrip(cruxeval: list[dict], cruxeval_traces: list[tuple[dict, str]], tmp_path: Path) -> None:
    objects = [obj for obj, _ in cruxeval_traces]
    sources = [src for _, src in cruxeval_traces]
    assert len(objects) == len(cruxeval) == 800
    assert sum(obj["n_events"] for obj in objects) > 10000
    assert_identical(roundtrip(objects, sources, tmp_path, batch_rows=64), objects)


def test_huggingface_datasets_loads_a_shard(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    objects, sources = hostile_objects()
    keep = [1, 2, 4]  # the huge one would only slow this down
    roundtrip([objects[i] for i in keep], [sources[i] for i in keep], tmp_path)
    # the documented way: a glob of shards (the manifest files beside them are not Parquet)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 3
    rows = list(iter_traces(tmp_path))
    # On disk, events' source lines that the program text gives are null; one map restores them.
    assert any(e["source"] is None for e in ds[0]["events"])
    ds = ds.with_format("arrow").map(restore_event_sources, batched=True).with_format(None)
    for i in range(3):
        assert ds[i] == rows[i]  # nested events with locals as name/value structs, intact
    assert ds[0]["events"][0]["locals"][1] == {"name": "ключ", "value": "'é 中 🐍'"}


def test_conversion_streams_with_bounded_buffering() -> None:
    """Batches come out while the input is still being read: at most ~batch_bytes are held."""
    line = json.dumps(simple_trace(1))
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield line

    batches = stream_to_batches(endless(), context={"source": SIMPLE_SOURCE, "image": IMAGE},
                                batch_bytes=50 * len(line), batch_rows=10**9)
    for _ in range(3):
        assert next(batches).num_rows == 50
    assert consumed == 150  # nothing read ahead beyond the batch being built


def test_huggingface_datasets_streams_a_shard(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    objects, sources = hostile_objects()
    roundtrip([objects[2]], [sources[2]], tmp_path)  # deep recursion: 6002 nested events
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "*.parquet"), split="train", streaming=True)
    ds = ds.with_format("arrow").map(restore_event_sources, batched=True).with_format(None)
    (row,) = list(ds)
    assert row == next(iter(iter_traces(tmp_path)))
    assert len(row["events"]) == 1 + 2 * 2000 + 2001 and max(e["depth"] for e in row["events"]) == 2000
