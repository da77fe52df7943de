"""The notebook API: traces from shards as Arrow/pandas, filtered with SQL, shown with the viewer."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from harvest.inspect.html import render_html, render_iframe
from harvest.inspect.load import TraceNotFoundError, read_traces
from harvest.inspect.steps import Step, iter_steps
from harvest.inspect.text import TextStyle, header, render_steps

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_COLUMNS = (
    "trace_id", "program_id", "entrypoint", "input", "status", "return_value", "exception_type",
    "n_events", "truncated", "wall_time_s", "python_version", "backend", "image",
)


class Trace:
    """One trace row, with its steps, its CWM text and the HTML stepper as its notebook display."""

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = dict(row)

    def __getitem__(self, key: str) -> Any:
        return self.row[key]

    @property
    def trace_id(self) -> str:
        return str(self.row["trace_id"])

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.row["events"])

    def steps(self) -> list[Step]:
        """Every step: the event, its frame's full locals and the call stack."""
        return list(iter_steps(self.row["events"]))

    def text(self, start: int = 0, stop: int | None = None) -> str:
        """The terminal view of steps [start, stop)."""
        steps = islice(iter_steps(self.row["events"]), start, stop)
        return "\n".join([header(self.row), *render_steps(self.row, steps, TextStyle())])

    def cwm(self) -> str:
        """The trace in Meta CWM's trace text format."""
        from schemas.cwm import render_cwm

        return render_cwm(self.row)

    def to_json(self) -> str:
        return json.dumps(self.row, ensure_ascii=False)

    def to_html(self) -> str:
        """The self-contained stepper page."""
        return render_html(self.row)

    def save_html(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html())

    def _repr_html_(self) -> str:
        return render_iframe(self.row)

    def __repr__(self) -> str:
        return f"<Trace {self.trace_id} {self.row['program_id']} {self.row['status']} {self.row['n_events']} events>"


class Traces:
    """A set of trace rows (an Arrow table of the trace schema), as loaded by load_traces."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[Trace]:
        for batch in self.table.to_batches():
            for row in batch.to_pylist():
                yield Trace(row)

    def __getitem__(self, key: int | str) -> Trace:
        """The trace at a position, or with an id (or a unique id prefix)."""
        if isinstance(key, int):
            if not -len(self) <= key < len(self):
                raise IndexError(f"trace {key} of {len(self)}")
            return Trace(self.table.slice(key % len(self), 1).to_pylist()[0])
        ids = self.table.column("trace_id").to_pylist()
        hits = [i for i, tid in enumerate(ids) if tid == key] or [
            i for i, tid in enumerate(ids) if tid.startswith(key)
        ]
        if len(hits) != 1:
            raise TraceNotFoundError(
                f"no trace with id {key!r}" if not hits else f"id prefix {key!r} matches {len(hits)} traces"
            )
        return Trace(self.table.slice(hits[0], 1).to_pylist()[0])

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_pandas(self, events: bool = False) -> pd.DataFrame:
        """One row per trace; the summary columns, or every column with `events=True`."""
        columns = self.table.column_names if events else [c for c in SUMMARY_COLUMNS if c in self.table.column_names]
        return self.table.select(columns).to_pandas()

    def events(self) -> pd.DataFrame:
        """One row per event (the `events` view of `worldtrace query`)."""
        return self.sql("SELECT * EXCLUDE (locals) FROM events").to_pandas()

    def sql(self, query: str) -> pa.Table:
        """Run DuckDB SQL over these traces (views `traces`, `events`, `variables`)."""
        from harvest.query import EVENTS_VIEW, VARIABLES_VIEW, run_query

        con = duckdb.connect()
        try:
            con.register("traces", self.table)
            con.execute(EVENTS_VIEW)
            con.execute(VARIABLES_VIEW)
            return run_query(con, query)
        finally:
            con.close()

    def filter(self, where: str) -> Traces:
        """The traces matching an SQL condition over the trace columns, e.g. "status = 'ok'"."""
        ids = self.sql(f"SELECT trace_id FROM traces WHERE {where}").column(0)
        mask = pa.compute.is_in(self.table.column("trace_id"), value_set=pa.array(ids.to_pylist(), pa.string()))
        return Traces(self.table.filter(mask))

    def _repr_html_(self) -> str:
        frame = self.to_pandas()
        return f"<p>{len(self)} traces</p>" + frame.head(50).to_html(escape=True)

    def __repr__(self) -> str:
        return f"<Traces: {len(self)} traces>"


def load_traces(path: str | os.PathLike[str], where: str | None = None) -> Traces:
    """The traces in the shards `path` names (file, folder, glob or URI), optionally filtered by SQL.

    >>> traces = load_traces("harvest-out", where="status = 'exception'")  # doctest: +SKIP
    >>> traces.to_pandas().head(); traces[0]                                 # doctest: +SKIP
    """
    return Traces(read_traces(path, where))
