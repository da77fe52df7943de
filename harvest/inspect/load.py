"""Finding traces in shards: by id (or a unique prefix), by program, or by an SQL condition."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from harvest.errors import ConfigError
from harvest.query import locate, query, trace_shard_files
from schemas.arrow import trace_schema
from schemas.reader import iter_batches, read_files, read_table, resolve_shards


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
    return _read_located(path, _first_of_each(locate(path, where)))


def _first_of_each(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(trace id, file) pairs, each id once (a folder may hold a re-run's copy), in order."""
    first: dict[str, str] = {}
    for trace_id, file in found:
        first.setdefault(trace_id, file)
    return list(first.items())


def _read_located(path: str | os.PathLike[str], located: list[tuple[str, str]]) -> pa.Table:
    """The whole rows of the traces `located` names, in that order, read from their own files only."""
    if not located:
        return read_table(path, filters=[("trace_id", "in", ["\0"])])
    fs, _ = resolve_shards(path)
    files = list(dict.fromkeys(file for _, file in located))
    ids = [trace_id for trace_id, _ in located]
    table = read_files(fs, files, filters=[("trace_id", "in", ids)], shown=os.fspath(path))
    first_row: dict[str, int] = {}
    for row, tid in enumerate(table.column("trace_id").to_pylist()):
        first_row.setdefault(tid, row)
    rows = [first_row[tid] for tid in ids if tid in first_row]
    return table.take(pa.array(rows, pa.int64()))


@dataclass(frozen=True)
class Selection:
    """The first traces that match a selection, and how many match in all."""

    table: pa.Table
    matches: int


def select(
    path: str | os.PathLike[str],
    *,
    trace_id: str | None = None,
    program_id: str | None = None,
    where: str | None = None,
    limit: int | None = None,
) -> Selection:
    """The traces matching the selectors (the first trace when none is given): whole rows of the
    first `limit` (all when None) and the number that match. A `trace_id` may be a unique prefix
    of an id. Only the rows shown are read whole, from the shards that hold them: DuckDB finds
    them reading the columns the selectors name. TraceNotFoundError when nothing matches."""
    condition = selection_where(trace_id=trace_id, program_id=program_id, where=where)
    if condition is None:
        # naming the columns skips the reader's strict type check, so that a published dataset's
        # files (the same columns with plain strings) can be inspected too; the columns are checked
        trace_shard_files(path)
        for batch in iter_batches(path, columns=trace_schema().names, batch_rows=1):
            if batch.num_rows:
                return Selection(pa.Table.from_batches([batch.slice(0, 1)]), 1)
        raise TraceNotFoundError(f"{os.fspath(path)}: no traces")
    located = _first_of_each(locate(path, condition))
    if trace_id is not None:
        exact = [(tid, file) for tid, file in located if tid == trace_id]
        if exact:
            located = exact
        elif len(located) > 1:
            raise TraceNotFoundError(f"trace id prefix {trace_id!r} matches {len(located)} traces")
    if not located:
        asked = ", ".join(
            f"{k} {v!r}" for k, v in (("trace id", trace_id), ("program", program_id), ("where", where)) if v
        )
        raise TraceNotFoundError(f"{os.fspath(path)}: no trace with {asked}{_suggestions(path, program_id)}")
    return Selection(_read_located(path, located[:limit]), len(located))


def _suggestions(path: str | os.PathLike[str], program_id: str | None) -> str:
    """For a `program_id` that matched nothing (a typo, most often): the closest ids there are."""
    if program_id is None:
        return ""
    ids = query(path, "SELECT DISTINCT program_id FROM traces").column(0).to_pylist()
    if program_id in ids:  # it is there: another selector (--where, --trace) left it out
        return ""
    close = difflib.get_close_matches(program_id, [i for i in ids if i is not None], n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


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
    return select(path, trace_id=trace_id, program_id=program_id, where=where).table


def find_traces(
    path: str | os.PathLike[str],
    *,
    trace_id: str | None = None,
    program_id: str | None = None,
    where: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Trace rows (dicts) matching the selectors (see select_traces), at most `limit` of them."""
    return select(path, trace_id=trace_id, program_id=program_id, where=where, limit=limit).table.to_pylist()
