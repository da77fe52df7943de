"""DuckDB over trace shards: a `traces` view (one row per trace), `events` and `variables` views."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa

from harvest.errors import ConfigError
from schemas.arrow import trace_schema
from schemas.errors import ShardError
from schemas.reader import open_shard, resolve_shards


class QueryError(ConfigError):
    """SQL that DuckDB rejects, or shards it cannot read."""


# `events`: one row per event, in execution order (`step` counts from 0 within the trace); the
# event's `locals` (the variables new or changed at that event, as the tracer records them) are
# there as the list and as a MAP (`locals_map['x']`), and `variables` has one row per such
# (event, variable).
EVENTS_VIEW = """
CREATE OR REPLACE VIEW events AS
SELECT trace_id, program_id, status,
       step, ev.kind AS kind, ev.lineno AS lineno,
       -- a shard may leave out a line's text when line `lineno` of the program's source gives it
       coalesce(ev.source, string_split(source, chr(10))[ev.lineno]) AS line_source,
       ev.function AS function, ev.file AS file, ev.depth AS depth, ev.frame_id AS frame_id,
       ev.thread_id AS thread_id, ev.arg AS arg, ev.locals AS locals,
       map_from_entries(ev.locals) AS locals_map
FROM (
    SELECT trace_id, program_id, status, source,
           unnest(events) AS ev, generate_subscripts(events, 1) - 1 AS step
    FROM traces
)
"""

VARIABLES_VIEW = """
CREATE OR REPLACE VIEW variables AS
SELECT trace_id, program_id, step, kind, function, frame_id, lineno, var.name AS name,
       var.value AS value
FROM (SELECT trace_id, program_id, step, kind, function, frame_id, lineno, unnest(locals) AS var
      FROM events)
"""


def trace_shard_files(path: str | os.PathLike[str]) -> list[str]:
    """The shard files `path` names, each checked to be Parquet with the trace schema's columns."""
    fs, files = resolve_shards(path)
    if not files:
        raise ShardError(f"{os.fspath(path)}: no .parquet shards found")
    required = trace_schema().names
    for file in files:
        names = set(open_shard(fs, file).schema_arrow.names)
        missing = [name for name in required if name not in names]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise ShardError(f"{file}: not a trace shard (no column {shown})")
    return files


def connect(path: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the `traces`, `events` and `variables` views over `path`."""
    return _connect(path, trace_shard_files(path))


def _connect(path: str | os.PathLike[str], files: list[str]) -> duckdb.DuckDBPyConnection:
    """The views over `files`, on a connection that can read those files and no others, and
    write none: SQL over shards must not be a way to read /etc/passwd, COPY or ATTACH onto the
    host, or install an extension (the settings are locked, so no SET undoes this)."""
    con = duckdb.connect()
    quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    try:
        con.execute(f"CREATE VIEW traces AS SELECT * FROM read_parquet([{quoted}], union_by_name=true)")
        con.execute(EVENTS_VIEW)
        con.execute(VARIABLES_VIEW)
        con.execute(f"SET allowed_paths = [{quoted}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        con.close()
        raise QueryError(f"{os.fspath(path)}: DuckDB cannot read the shards: {_first_line(e)}") from e
    return con


def locate(path: str | os.PathLike[str], where: str) -> list[tuple[str, str]]:
    """(trace id, shard file) of the traces `path` names that match the SQL condition `where`
    (over the `traces` view's columns; the other views may be used in subqueries), in the order
    DuckDB finds them. Only the columns the condition names are read, not whole traces."""
    files = trace_shard_files(path)
    con = _connect(path, files)
    quoted = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    try:
        try:
            con.execute(
                f"CREATE TEMP VIEW located_traces AS SELECT * FROM read_parquet([{quoted}], union_by_name=true, filename=true)"
            )
        except duckdb.Error as e:
            raise QueryError(f"{os.fspath(path)}: DuckDB cannot read the shards: {_first_line(e)}") from e
        found = run_query(con, f"SELECT trace_id, filename FROM located_traces WHERE {where}\n")
    finally:
        con.close()
    return list(zip(found.column(0).to_pylist(), found.column(1).to_pylist(), strict=True))


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """The result of `sql` as an Arrow table, or QueryError with DuckDB's message."""
    try:
        statements = len(con.extract_statements(sql))
        if statements > 1:  # DuckDB would run them all and show the last one's result only
            raise QueryError(f"SQL error: {statements} statements given; run one at a time")
        result = con.sql(sql)
        if result is None:  # a statement without a result (e.g. SET)
            return pa.table({})
        return result.to_arrow_table()
    except duckdb.PermissionException as e:
        raise QueryError(
            f"SQL error: {_first_line(e)} (queries read the shards' views only and write nothing)"
        ) from e
    except duckdb.Error as e:
        raise QueryError(f"SQL error: {_first_line(e)}") from e


def query(path: str | os.PathLike[str], sql: str) -> pa.Table:
    """Run `sql` over the shards `path` names (views: traces, events, variables)."""
    con = connect(path)
    try:
        return run_query(con, sql)
    finally:
        con.close()
