"""Shards load in the tools people already use: DuckDB, polars, pandas (datasets: roundtrip tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stream_samples import IMAGE, SIMPLE_SOURCE, simple_trace

from schemas.convert import stream_to_batches
from schemas.event_sources import DUCKDB_LINE_SOURCE, restore_event_sources
from schemas.reader import iter_traces
from schemas.shards import write_shard


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    for k in range(2):
        lines = [json.dumps(simple_trace(i, f"s{k}-{i}")) for i in range(10)]
        write_shard(tmp_path / f"shard-{k}.parquet",
                    stream_to_batches(lines, context={"source": SIMPLE_SOURCE, "image": IMAGE}))
    return tmp_path


def test_duckdb_queries_nested_events(shards: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    glob = str(shards / "*.parquet")
    assert duckdb.sql(f"SELECT count(*), sum(n_events) FROM '{glob}'").fetchall() == [(20, 80)]
    rows = duckdb.sql(
        f"SELECT e.kind, l.name, l.value FROM (SELECT unnest(events) AS e FROM '{glob}' "
        f"WHERE program_id = 's0-3'), (SELECT unnest(e.locals) AS l) ORDER BY ALL"
    ).fetchall()
    assert ("call", "x", "3") in rows and ("line", "y", "4") in rows
    line = DUCKDB_LINE_SOURCE.format(event="e", program="source")
    lines = duckdb.sql(f"SELECT {line} FROM (SELECT source, unnest(events) AS e FROM '{shards}/shard-0.parquet')")
    expected = [e["source"] for trace in iter_traces(shards / "shard-0.parquet") for e in trace["events"]]
    assert [r[0] for r in lines.fetchall()] == expected and "    y = x + 1" in expected


def test_polars_and_pandas_read_shards(shards: Path) -> None:
    pl = pytest.importorskip("polars")
    pd = pytest.importorskip("pandas")
    expected = list(iter_traces(shards))
    frame = pl.read_parquet(str(shards / "*.parquet"))
    assert frame.height == 20
    # events' source lines that the program text gives are left out on disk; restored from Arrow
    raw = frame.row(0, named=True)["events"]
    assert [e["source"] for e in raw] == [None] * len(raw)
    assert raw == [{**e, "source": None} for e in expected[0]["events"]]
    whole = pl.from_arrow(restore_event_sources(frame.to_arrow()))
    assert isinstance(whole, pl.DataFrame)
    assert whole.row(0, named=True)["events"] == expected[0]["events"]
    pdf = pd.read_parquet(shards / "shard-0.parquet")
    assert list(pdf["program_id"]) == [f"s0-{i}" for i in range(10)]
    first = pdf["events"].iloc[0][0]
    assert first["kind"] == "call" and list(first["locals"][0].values()) == ["x", "0"]
