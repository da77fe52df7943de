"""`worldtrace inspect` and `worldtrace query` from the command line: formats, selection, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from harvest.cli import cli
from harvest.inspect import find_traces, load_traces
from harvest.inspect.steps import iter_steps
from schemas.cwm import render_cwm
from schemas.errors import ShardError
from schemas.reader import read_table


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def error(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("name", ["inspect", "query", "publish"])
def test_every_command_has_help_with_an_example(name: str) -> None:
    output = run(name, "--help")
    assert "Example:" in output and f"worldtrace {name} " in output


def test_text_shows_source_locals_stack_and_return(sample_shards: Path) -> None:
    (trace,) = find_traces(sample_shards, program_id="nested")
    steps = list(iter_steps(trace["events"]))
    output = run("inspect", str(sample_shards), "--program", "nested", "--no-color")
    assert output.count("── step ") == len(steps)
    assert "total([1, 2, 3]) -> ok: returned 14" in output
    # the step inside square(): current line marked, square's locals, the stack total -> square
    inner = next(s for s in steps if s.function == "square" and s.kind == "line" and "y" in s.locals)
    block = output.split(f"── step {inner.index + 1}/{len(steps)} ")[1].split("── step ")[0]
    assert f"→ {inner.lineno:>4}  {inner.line_source}" in block
    assert f"* y = {inner.locals['y']}" in block  # marked: this line set it
    assert "stack: total:8 → square:" in block
    assert "return value: 14" in output


def test_text_step_range_and_exception(sample_shards: Path) -> None:
    output = run("inspect", str(sample_shards), "--program", "divide", "--steps", "2:3")
    assert output.count("── step ") == 2 and "── step 2/" in output and "── step 3/" in output
    full = run("inspect", str(sample_shards), "--program", "divide")
    assert "raised ZeroDivisionError: division by zero" in full
    assert "exception: ZeroDivisionError: division by zero" in full


def test_cwm_and_json(sample_shards: Path) -> None:
    (trace,) = find_traces(sample_shards, program_id="fact")
    assert run("inspect", str(sample_shards), "--program", "fact", "-f", "cwm") == render_cwm(trace) + "\n"
    assert json.loads(run("inspect", str(sample_shards), "--trace", trace["trace_id"], "-f", "json")) == trace


def test_html_is_one_self_contained_file(sample_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.html"
    run("inspect", str(sample_shards), "--program", "fib", "--where", "input = '7'", "-f", "html", "-o", str(out))
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "wt-slider" in page
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered, "no network access needed"
    assert "<link" not in lowered and "src=" not in lowered


def test_selection_by_id_prefix_where_and_several_matches(sample_shards: Path) -> None:
    table = read_table(sample_shards, columns=["trace_id", "program_id"])
    fib_ids = [t for t, p in zip(*table.to_pydict().values(), strict=True) if p == "fib"]
    assert len(fib_ids) == 2
    result = CliRunner().invoke(cli, ["inspect", str(sample_shards), "--program", "fib", "-f", "json"])
    assert result.exit_code == 0 and "2 traces match" in result.output
    prefix = fib_ids[1][:10]
    shown = json.loads(run("inspect", str(sample_shards), "--trace", prefix, "-f", "json"))
    assert shown["trace_id"] == fib_ids[1]
    shown = json.loads(run("inspect", str(sample_shards), "--where", "status = 'exception'", "-f", "json"))
    assert shown["program_id"] == "divide"


def test_inspect_bad_input_is_one_error_line(sample_shards: Path, tmp_path: Path) -> None:
    assert "no such file" in error("inspect", str(tmp_path / "missing"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    assert "not a readable Parquet shard" in error("inspect", str(bad))
    assert "no trace with trace id 'ffffffffff'" in error("inspect", str(sample_shards), "--trace", "ffffffffff")
    assert "SQL error" in error("inspect", str(sample_shards), "--where", "status = = 'ok'")
    typo = error("inspect", str(sample_shards), "--program", "nestd")
    assert "no trace with program 'nestd'; did you mean 'nested'?" in typo
    assert "did you mean" not in error("inspect", str(sample_shards), "--program", "zzzzzz")
    assert "did you mean" not in error("inspect", str(sample_shards), "--program", "nested", "--where", "n_events < 0")
    assert "--steps" in error("inspect", str(sample_shards), "--steps", "x")
    other = tmp_path / "other.parquet"  # Parquet, but not traces
    pq.write_table(pa.table({"a": [1, 2]}), other)
    assert "not a trace shard (no column trace_id" in error("inspect", str(other))
    assert "not a trace shard" in error("query", str(other), "SELECT 1")
    with pytest.raises(ShardError, match="not a trace shard"):
        load_traces(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no .parquet shards" in error("inspect", str(empty), "--where", "true")


@pytest.mark.parametrize("fmt", ["text", "cwm", "json", "html"])
def test_an_unwritable_out_is_one_error_line_naming_it(sample_shards: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "no-such-folder" / "x.out"
    line = error("inspect", str(sample_shards), "--format", fmt, "--out", str(target))
    assert f"cannot write {target}" in line and "No such file or directory" in line
    assert not target.parent.exists()


def test_query_views_and_formats(sample_shards: Path) -> None:
    rows = read_table(sample_shards).to_pylist()
    got = json.loads(run("query", str(sample_shards), "SELECT count(*) AS n FROM traces", "-f", "json"))
    assert got == [{"n": len(rows)}]
    got = json.loads(run("query", str(sample_shards), "SELECT count(*) AS n FROM events", "-f", "json"))
    assert got == [{"n": sum(r["n_events"] for r in rows)}]
    got = json.loads(run("query", str(sample_shards), "SELECT sum(n_events) AS n FROM traces", "-f", "json"))
    assert got == [{"n": sum(r["n_events"] for r in rows)}]  # a number, not the text of a decimal
    # one row per recorded variable; the fold of the deltas gives the reader's full state
    (fact,) = [r for r in rows if r["program_id"] == "fact"]
    sql = (
        "SELECT step, kind, function, name, value FROM variables "
        f"WHERE trace_id = '{fact['trace_id']}' ORDER BY step, name"
    )
    variables = list(csv.DictReader(io.StringIO(run("query", str(sample_shards), sql, "-f", "csv"))))
    expected = sorted(
        (str(i), ev["kind"], ev["function"], loc["name"], loc["value"])
        for i, ev in enumerate(fact["events"]) for loc in ev["locals"]
    )
    assert sorted(tuple(v.values()) for v in variables) == expected
    sql = f"SELECT line_source FROM events WHERE trace_id = '{fact['trace_id']}' ORDER BY step"
    lines = json.loads(run("query", str(sample_shards), sql, "-f", "json"))
    assert [r["line_source"] for r in lines] == [e["source"] for e in fact["events"]]
    sql = f"SELECT step, locals_map['n'] AS n FROM events WHERE trace_id = '{fact['trace_id']}' AND kind = 'call'"
    calls = json.loads(run("query", str(sample_shards), sql, "-f", "json"))
    assert [c["n"] for c in calls] == ["4", "3", "2", "1"]
    table = run("query", str(sample_shards), "SELECT status, count(*) AS n FROM traces GROUP BY 1 ORDER BY 1")
    assert table.splitlines()[0].split() == ["status", "n"] and "(2 rows)" in table


def test_query_bad_input_is_one_error_line(sample_shards: Path, tmp_path: Path) -> None:
    assert "SQL error" in error("query", str(sample_shards), "SELEC 1")
    assert "SQL error" in error("query", str(sample_shards), "SELECT nope FROM traces")
    for empty in ("", " ;\n"):
        result = CliRunner().invoke(cli, ["query", str(sample_shards), empty])
        assert result.exit_code == 2 and "no statement given" in result.output, result.output
    # DuckDB would run both and print only the second's result.
    assert "2 statements given; run one at a time" in error("query", str(sample_shards), "SELECT 1; SELECT 2")
    assert "no such file" in error("query", str(tmp_path / "missing"), "SELECT 1")
    bad = tmp_path / "x.parquet"
    bad.write_text("hello")
    assert "not a readable Parquet shard" in error("query", str(bad), "SELECT 1")


def test_query_reads_only_the_shards_and_writes_nothing(sample_shards: Path, tmp_path: Path) -> None:
    """SQL over shards cannot read other host files, write any, or undo that with SET."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    written = tmp_path / "written.csv"
    for sql in (
        f"SELECT * FROM read_csv('{secret}')",
        f"COPY (SELECT 1 AS x) TO '{written}'",
        f"ATTACH '{tmp_path / 'x.db'}' AS x",
        f"EXPORT DATABASE '{tmp_path / 'exported'}'",
        "LOAD httpfs",
    ):
        line = error("query", str(sample_shards), sql)
        assert "SQL error" in line and "write nothing" in line, (sql, line)
    for sql in ("SET enable_external_access = true", f"SET allowed_paths = ['{secret}']"):
        assert "locked" in error("query", str(sample_shards), sql)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv"]
    assert "1" in run("query", str(sample_shards), "SELECT count(*) FROM variables")
    assert "SQL error" in error("inspect", str(sample_shards), "--where", f"trace_id IN (SELECT a FROM '{secret}')")
