"""Finding traces in shards: by id (or a unique prefix), by program, or by an SQL condition."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from harvest.errors import ConfigError
from harvest.query import query, trace_shard_files
from schemas.arrow import trace_schema
from schemas.reader import iter_batches, read_table


class TraceNotFoundError(ConfigError):
    """No trace matches what was asked for (or a prefix matches several)."""


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def selection_where(
    *, trace_id: str | None = None, program_id: str | None = None, where: str | None = None
) -> str | None:
    """The SQL condition over the `traces` view for the given selectors (combined with AND)."""
    parts = []
    if trace_id is not None:
        parts.append(f"starts_with(trace_id, {_sql_string(trace_id)})")
    if program_id is not None:
        parts.append(f"program_id = {_sql_string(program_id)}")
    if where is not None:
        parts.append(f"({where})")
    return " AND ".join(parts) if parts else None


def read_traces(path: str | os.PathLike[str], where: str | None = None) -> pa.Table:
    """Every trace row `path` names that matches the SQL condition `where` (all when None).

    DuckDB evaluates the condition; the rows themselves come from the schemas reader, which hands
    out complete trace rows (whatever the shards store in a compact form).
    """
    if where is None:
        trace_shard_files(path)
        return read_table(path)
    ids = [str(v) for v in query(path, f"SELECT trace_id FROM traces WHERE {where}\n").column(0).to_pylist()]
    table = read_table(path, filters=[("trace_id", "in", ids or ["\0"])])
    # each id once (a folder may hold a re-run's copy), in the order DuckDB found them
    first_row: dict[str, int] = {}
    for row, tid in enumerate(table.column("trace_id").to_pylist()):
        first_row.setdefault(tid, row)
    rows = [first_row[tid] for tid in dict.fromkeys(ids) if tid in first_row]
    return table.take(pa.array(rows, pa.int64()))


def select_traces(
    path: str | os.PathLike[str],
    *,
    trace_id: str | None = None,
    program_id: str | None = None,
    where: str | None = None,
) -> pa.Table:
    """The trace rows matching the selectors, as a table; the first trace when none is given.

    A `trace_id` may be a unique prefix of an id. TraceNotFoundError when nothing matches.
    """
    condition = selection_where(trace_id=trace_id, program_id=program_id, where=where)
    if condition is None:
        # naming the columns skips the reader's strict type check, so that a published dataset's
        # files (the same columns with plain strings) can be inspected too; the columns are checked
        trace_shard_files(path)
        for batch in iter_batches(path, columns=trace_schema().names, batch_rows=1):
            if batch.num_rows:
                return pa.Table.from_batches([batch.slice(0, 1)])
        raise TraceNotFoundError(f"{os.fspath(path)}: no traces")
    table = read_traces(path, condition)
    if trace_id is not None:
        ids = set(table.column("trace_id").to_pylist())
        if trace_id in ids:
            table = table.filter(pa.compute.equal(table.column("trace_id"), trace_id))
        elif len(ids) > 1:
            raise TraceNotFoundError(f"trace id prefix {trace_id!r} matches {len(ids)} traces")
    if table.num_rows == 0:
        asked = ", ".join(
            f"{k} {v!r}" for k, v in (("trace id", trace_id), ("program", program_id), ("where", where)) if v
        )
        raise TraceNotFoundError(f"{os.fspath(path)}: no trace with {asked}")
    return table


def find_traces(
    path: str | os.PathLike[str],
    *,
    trace_id: str | None = None,
    program_id: str | None = None,
    where: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Trace rows (dicts) matching the selectors (see select_traces), at most `limit` of them."""
    table = select_traces(path, trace_id=trace_id, program_id=program_id, where=where)
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pylist()
