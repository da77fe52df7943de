"""The steps model, the notebook API and the interactive pager."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from harvest.inspect import TraceNotFoundError, load_traces
from harvest.inspect.pager import page_trace
from harvest.inspect.steps import iter_steps
from harvest.inspect.text import TextStyle
from harvest.publish import PublishOptions, SplitSpec, publish
from schemas.reader import full_locals, read_table


def test_steps_agree_with_the_readers_full_state_view(sample_shards: Path) -> None:
    for row in read_table(sample_shards).to_pylist():
        events = row["events"]
        for step in iter_steps(events):
            assert dict(step.locals) == full_locals(events, step.index)
            assert step.stack[-1].frame_id == events[step.index]["frame_id"]
            assert len(step.stack) == events[step.index]["depth"] + 1


def test_recursion_builds_a_stack_of_frames(sample_shards: Path) -> None:
    trace = load_traces(sample_shards, where="program_id = 'fact'")[0]
    deepest = max(trace.steps(), key=lambda s: len(s.stack))
    assert [f.function for f in deepest.stack] == ["fact"] * 4
    assert [f.locals["n"] for f in deepest.stack] == ["4", "3", "2", "1"]


def test_notebook_api_loads_filters_and_displays(sample_shards: Path) -> None:
    traces = load_traces(sample_shards)
    rows = read_table(sample_shards, columns=["trace_id", "status", "n_events"]).to_pylist()
    assert len(traces) == len(rows)
    frame = traces.to_pandas()
    assert list(frame["trace_id"]) == [r["trace_id"] for r in rows] and "events" not in frame
    ok = traces.filter("status = 'ok' AND n_events > 10")
    assert sorted(t.trace_id for t in ok) == sorted(
        r["trace_id"] for r in rows if r["status"] == "ok" and r["n_events"] > 10
    )
    assert len(traces.events()) == sum(r["n_events"] for r in rows)
    per_status = traces.sql("SELECT status, count(*) AS n FROM traces GROUP BY 1").to_pylist()
    assert {r["status"]: r["n"] for r in per_status} == {
        s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}
    }
    trace = traces[rows[1]["trace_id"][:8]]
    assert trace.trace_id == rows[1]["trace_id"]
    shown = trace._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "wt-slider" in shown and "<script" not in shown
    assert "step 1/" in trace.text(0, 1) and trace.cwm().startswith("<|begin_of_text|>")
    assert "<table" in traces._repr_html_()
    with pytest.raises(TraceNotFoundError):
        traces["not-an-id"]


def test_load_traces_with_where_and_from_a_published_dataset(sample_shards: Path, tmp_path: Path) -> None:
    assert {t["program_id"] for t in load_traces(sample_shards, where="status <> 'ok'")} == {"divide"}
    publish(str(sample_shards), tmp_path / "ds", PublishOptions(name="t", splits=SplitSpec.parse("train")))
    published = load_traces(tmp_path / "ds" / "data")
    assert sorted(t.trace_id for t in published) == sorted(t.trace_id for t in load_traces(sample_shards))
    assert published[0].steps()


def test_pager_moves_with_keys(sample_shards: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    trace = load_traces(sample_shards, where="program_id = 'nested'")[0]
    keys = iter(["n", "\x1b[C", "\x1b[D", "e", "g", "q"])
    monkeypatch.setattr(click, "getchar", lambda: next(keys))
    monkeypatch.setattr(click, "clear", lambda: print("<clear>"))
    monkeypatch.setattr(click, "prompt", lambda *a, **k: 2)
    page_trace(trace.row, TextStyle())
    screens = [s for s in capsys.readouterr().out.split("<clear>") if s.strip()]
    total = len(trace.events)
    shown = [s.split("── step ")[1].split("/")[0] for s in screens]
    assert shown == ["1", "2", "3", "2", str(total), "2"]


def test_selected_traces_equal_the_readers_rows(sample_shards: Path) -> None:
    from harvest.inspect import find_traces

    expected = {r["trace_id"]: r for r in read_table(sample_shards).to_pylist()}
    for program in ("fib", "nested", "divide", "shout"):
        for trace in find_traces(sample_shards, program_id=program):
            assert trace == expected[trace["trace_id"]]
    assert find_traces(sample_shards)[0] == next(iter(expected.values()))


@pytest.mark.parametrize("separator", ["\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_text_and_pager_mark_the_executed_line_whatever_the_line_breaks(
    separator: str, newline: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python numbers lines at "\\n" only: a form feed or \\u2028 inside a line (a string, a comment)
    must not shift the marked line, as str.splitlines would."""
    from harvest.inspect.text import render_steps
    from schemas.convert import stream_object_to_row
    from tracer.api import trace_script

    source = newline.join(
        ["a = 1", f"b = '{separator}'  # {separator}", "c = 3", "d = 4", "e = 5", ""]
    )
    stream = trace_script("lines.py", source=source, program_id="lines")
    row = stream_object_to_row(stream, {"source": source, "image": "local"})
    line_steps = [s for s in iter_steps(row["events"]) if s.kind == "line" and s.lineno >= 3]
    assert [s.lineno for s in line_steps] == [3, 4, 5]
    blocks = list(render_steps(row, line_steps))
    keys = iter(["n"] * len(row["events"]) + ["q"])
    monkeypatch.setattr(click, "getchar", lambda: next(keys))
    monkeypatch.setattr(click, "clear", lambda: print("<clear>"))
    page_trace(row, TextStyle(), start=line_steps[0].index)
    screens = [s for s in capsys.readouterr().out.split("<clear>") if s.strip()]
    for step, block, screen in zip(line_steps, blocks, screens, strict=False):
        expected = f"→ {step.lineno:>4}  {'abcde'[step.lineno - 1]} = {step.lineno}"
        for text in (block, screen):
            (marked,) = [line for line in text.split("\n") if line.startswith("→ ")]
            assert marked == expected, text


def test_only_the_shown_traces_are_read_whole_from_their_own_shards(
    sample_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inspect --where` used to read every matching trace whole (events and all) to show one:
    gigabytes of memory on a big harvest. Now DuckDB finds them reading the columns the selection
    names, and only the traces asked for are read whole, from the shards that hold them."""
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from harvest.cli import cli

    shards = sorted(p.name for p in sample_shards.glob("*.parquet"))
    assert len(shards) == 2
    first_id = read_table(sample_shards / shards[0], columns=["trace_id"]).column(0)[0].as_py()
    read: list[list[str]] = []
    original = pq.read_table

    def spy(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        read.append([Path(f).name for f in (source if isinstance(source, list) else [source])])
        return original(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    result = CliRunner().invoke(cli, ["inspect", str(sample_shards), "--where", "n_events > 0", "-f", "json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["trace_id"] == first_id and "6 traces match" in result.stderr
    assert read == [[shards[0]]]
