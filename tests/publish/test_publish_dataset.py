"""`worldtrace publish`: layout, splits, de-duplication, filters, card, Croissant, checksums, loaders."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from harvest.cli import cli
from harvest.publish import PublishOptions, SplitSpec, publish, published_schema
from harvest.publish.stats import size_category
from schemas.reader import read_table

SPLIT = "train=0.5,test=0.5"


def _publish(shards: Path, out: Path, *args: str) -> None:
    result = CliRunner().invoke(cli, ["publish", str(shards), "--to", str(out), "--name", "test/traces", *args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def published(sample_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "ds"
    _publish(sample_shards, out, "--split", SPLIT, "--license", "mit")
    return out


def _input_rows(shards: Path) -> dict[str, dict]:
    return {row["trace_id"]: row for row in read_table(shards).to_pylist()}


def test_layout_names_every_file_split_i_of_n(published: Path) -> None:
    names = sorted(p.name for p in (published / "data").iterdir())
    assert names and all(
        n.endswith(".parquet") and n.split("-")[0] in ("train", "test") and "-of-" in n for n in names
    ), names
    assert (published / "README.md").is_file() and (published / "croissant.json").is_file()
    assert not [p for p in published.rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_datasets_loads_every_row_with_nested_events_intact(
    published: Path, sample_shards: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset

    expected = _input_rows(sample_shards)
    cache = str(tmp_path / "hf-cache")  # never a cached copy of an earlier run's files
    for loaded in (
        load_dataset("parquet", data_dir=str(published / "data"), cache_dir=cache),
        load_dataset(str(published), cache_dir=cache),
    ):
        assert set(loaded) == {"train", "test"}
        rows = [row for split in loaded.values() for row in split]
        assert sorted(r["trace_id"] for r in rows) == sorted(expected)
        for row in rows:
            assert row["events"] == expected[row["trace_id"]]["events"]
            assert row["source"] == expected[row["trace_id"]]["source"]


def test_duckdb_and_polars_read_the_same_counts(published: Path, sample_shards: Path) -> None:
    pattern = str(published / "data" / "*.parquet")
    n_traces = len(_input_rows(sample_shards))
    n_events = sum(r["n_events"] for r in _input_rows(sample_shards).values())
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{pattern}'").fetchone() == (n_traces,)
    assert con.execute(f"SELECT sum(len(events)) FROM '{pattern}'").fetchone() == (n_events,)
    frame = pl.scan_parquet(pattern).select(pl.len(), pl.col("events").list.len().sum()).collect()
    assert frame.row(0) == (n_traces, n_events)


def test_a_program_never_lands_in_two_splits(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    publish(str(sample_shards), out, PublishOptions(name="t", splits=SplitSpec.parse(SPLIT)))
    programs = {
        split: set(pq.read_table(list((out / "data").glob(f"{split}-*.parquet")), columns=["program_id"])
                   .column("program_id").to_pylist())
        for split in ("train", "test")
    }
    assert programs["train"] and programs["test"], "the sample should reach both splits"
    assert not programs["train"] & programs["test"]
    # fib has two traces (two inputs): both in one split
    assert sum("fib" in p for p in programs.values()) == 1


def test_splits_are_deterministic(sample_shards: Path, tmp_path: Path) -> None:
    def assignment(out: Path) -> dict[str, set[str]]:
        publish(str(sample_shards), out, PublishOptions(name="t", splits=SplitSpec.parse(SPLIT)))
        return {
            f.name: set(pq.read_table(f, columns=["trace_id"]).column("trace_id").to_pylist())
            for f in (out / "data").iterdir()
        }

    assert assignment(tmp_path / "a") == assignment(tmp_path / "b")
    spec = SplitSpec.parse("train=0.95,test=0.05")
    assert spec.assign("some-program") == spec.assign("some-program")


def test_exact_duplicates_are_dropped(sample_shards: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(sample_shards, inputs / "run1")
    shutil.copytree(sample_shards, inputs / "run2")  # a second copy of every trace
    out = tmp_path / "ds"
    result = publish(str(inputs), out, PublishOptions(name="t"))
    unique = len(_input_rows(sample_shards))
    assert result.stats.read == 2 * unique
    assert result.stats.dropped_duplicates == unique
    ids = pq.read_table(list((out / "data").iterdir()), columns=["trace_id"]).column("trace_id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == unique


def test_filters_by_status_and_event_count(sample_shards: Path, tmp_path: Path) -> None:
    rows = _input_rows(sample_shards).values()
    _publish(sample_shards, tmp_path / "ok", "--status", "ok", "--split", "train")
    table = pq.read_table(tmp_path / "ok" / "data")
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert table.num_rows == sum(r["status"] == "ok" for r in rows)
    limit = sorted(r["n_events"] for r in rows)[2]
    _publish(sample_shards, tmp_path / "small", "--max-events", str(limit), "--split", "train")
    table = pq.read_table(tmp_path / "small" / "data")
    assert max(table.column("n_events").to_pylist()) <= limit
    assert table.num_rows == sum(r["n_events"] <= limit for r in rows)


def test_files_and_row_groups_are_bounded_in_bytes(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _publish(sample_shards, out, "--split", "train", "--shard-size", "1B", "--row-group-size", "1B")
    files = sorted((out / "data").iterdir())
    # every row group closes a file at 1 byte, and every batch of rows is its own row group
    assert len(files) > 1
    assert [f.name for f in files] == [f"train-{i:05d}-of-{len(files):05d}.parquet" for i in range(len(files))]
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == len(_input_rows(sample_shards))
    out2 = tmp_path / "ds2"
    _publish(sample_shards, out2, "--split", "train", "--row-group-size", "1B")
    (single,) = (out2 / "data").iterdir()
    assert pq.ParquetFile(single).metadata.num_row_groups > 1


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_front_matter_is_generated_from_the_schema(published: Path, sample_shards: Path) -> None:
    from datasets import DatasetInfo, Features

    card = (published / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "mit"
    assert meta["language"] == ["code"]
    assert meta["task_categories"] and "execution-traces" in meta["tags"]
    assert meta["size_categories"] == [size_category(len(_input_rows(sample_shards)))]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*.parquet"},
        {"split": "test", "path": "data/test-*.parquet"},
    ]
    expected = DatasetInfo(features=Features.from_arrow_schema(published_schema()))._to_yaml_dict()
    assert meta["dataset_info"]["features"] == expected["features"]
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert sum(splits.values()) == len(_input_rows(sample_shards))


def test_card_body_has_schema_usage_statistics_and_provenance(published: Path, sample_shards: Path) -> None:
    card = (published / "README.md").read_text()
    rows = _input_rows(sample_shards).values()
    for needle in ("## Schema", "`events[].locals[].value`", "## How to read a trace", "load_dataset",
                   "## Statistics", "## Provenance", "test-run", "Python version"):
        assert needle in card, needle
    n_ok = sum(r["status"] == "ok" for r in rows)
    assert f"| `ok` | {n_ok:,} |" in card
    assert (published / "provenance" / "run-test-run.json").is_file()
    inputs = json.loads((published / "provenance" / "inputs.json").read_text())
    assert len(inputs["shards"]) == 2


def test_croissant_validates_with_events_as_a_repeated_field(published: Path) -> None:
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=str(published / "croissant.json"))  # raises ValidationError if invalid
    assert not dataset.metadata.issues.errors
    doc = json.loads((published / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    (record_set,) = doc["recordSet"]
    events = next(f for f in record_set["field"] if f["name"] == "events")
    assert events["repeated"] is True
    names = [f["name"] for f in events["subField"]]
    assert names[:3] == ["kind", "lineno", "source"] and "locals" in names
    locals_ = next(f for f in events["subField"] if f["name"] == "locals")
    assert locals_["repeated"] is True and [f["name"] for f in locals_["subField"]] == ["name", "value"]
    files = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    for item in files:
        assert hashlib.sha256((published / item["contentUrl"]).read_bytes()).hexdigest() == item["sha256"]


def test_checksums_cover_every_file(published: Path) -> None:
    listed = {}
    for line in (published / "checksums.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()}
    assert set(listed) == files - {"checksums.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256((published / name).read_bytes()).hexdigest() == digest


def test_croissant_records_load_with_mlcroissant(sample_shards: Path, tmp_path: Path) -> None:
    """mlcroissant reads the records, nested events included; it cannot read a list nested in a
    list from Parquet yet, so the events' `locals` sub-field is left out of this read."""
    import mlcroissant as mlc

    out = tmp_path / "ds"
    _publish(sample_shards, out, "--split", SPLIT)
    doc = json.loads((out / "croissant.json").read_text())
    events = next(f for f in doc["recordSet"][0]["field"] if f["name"] == "events")
    events["subField"] = [f for f in events["subField"] if f["name"] != "locals"]
    copy = out / "croissant-without-locals.json"  # beside the original: paths are relative to it
    copy.write_text(json.dumps(doc))
    expected = _input_rows(sample_shards)
    records = list(mlc.Dataset(jsonld=str(copy)).records("traces"))
    assert len(records) == len(expected)
    for record in records:
        row = expected[record["traces/trace_id"].decode()]
        assert record["traces/status"].decode() == row["status"]
        assert record["traces/n_events"] == row["n_events"]
        assert [e["traces/events/kind"].decode() for e in record["traces/events"]] == [
            e["kind"] for e in row["events"]
        ]
        assert [e["traces/events/lineno"] for e in record["traces/events"]] == [e["lineno"] for e in row["events"]]


def test_the_project_reads_validates_and_republishes_a_published_dataset(
    published: Path, sample_shards: Path, tmp_path: Path
) -> None:
    from schemas.arrow import trace_schema
    from schemas.reader import iter_batches, iter_traces
    from schemas.validate import validate

    data = published / "data"
    assert {row["trace_id"]: row for row in iter_traces(data)} == _input_rows(sample_shards)
    for batch in iter_batches(data):  # the same types as a harvest's shards give
        assert batch.schema.equals(trace_schema())
    assert read_table(data).schema.field("status").type == trace_schema().field("status").type
    report = validate(data)
    assert report.ok, report.lines()
    out = tmp_path / "again"
    _publish(data, out, "--split", SPLIT)
    for name in ("train", "test"):
        (first,) = data.glob(f"{name}-*.parquet")
        (second,) = (out / "data").glob(f"{name}-*.parquet")
        assert first.read_bytes() == second.read_bytes()


def test_the_cards_loading_snippet_loads_every_split(sample_shards: Path, tmp_path: Path) -> None:
    """Custom split names survive the card's file-based loading line (a bare data_dir drops them)."""
    from functools import partial

    from datasets import load_dataset

    out = tmp_path / "ds"
    _publish(sample_shards, out, "--split", "first=0.5,second=0.5")
    card = (out / "README.md").read_text()
    snippet = card.split("## Loading")[1].split("```python\n")[1].split("```")[0]
    code = []
    for line in snippet.splitlines():
        if line.startswith(("from datasets", "ds = load_dataset(")):
            continue  # the import is given below; the Hub id is not a folder here
        if line.startswith(("# ds =", "#     ", "# })")):
            line = line[2:]
        code.append(line.replace("path/to/this/folder", str(out)))
    scope = {"load_dataset": partial(load_dataset, cache_dir=str(tmp_path / "hf-cache"))}
    exec("\n".join(code), scope)
    loaded = scope["ds"]
    assert set(loaded) == {"first", "second"}
    assert sum(split.num_rows for split in loaded.values()) == len(_input_rows(sample_shards))
    assert scope["trace"] == loaded["first"][0]
