"""`worldtrace query`: SQL (DuckDB) over trace shards, printed as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import click
import pyarrow as pa

from harvest.errors import WorldtraceError
from schemas.errors import SchemaError

MAX_CELL = 60


def _plain(value: Any) -> str:
    """A scalar as its text (numbers, dates, decimals); lists and structs as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cell(value: Any) -> str:
    text = "NULL" if value is None else _plain(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(table: pa.Table) -> str:
    """An aligned text table, long cells cut to MAX_CELL characters."""
    names = table.column_names
    rows = [[_cell(row[n]) for n in names] for row in table.to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(lines)


def format_csv(table: pa.Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(
            ["" if v is None else _plain(v) for v in row.values()]
        )
    return out.getvalue().rstrip("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):  # DuckDB's sum() of integers is a HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def format_json(table: pa.Table) -> str:
    return json.dumps(table.to_pylist(), indent=1, ensure_ascii=False, default=_json_default)


FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}


@click.command("query")
@click.argument("path")
@click.argument("sql")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(sorted(FORMATTERS)), default="table", show_default=True,
    help="Output format.",
)
def command(path: str, sql: str, fmt: str) -> None:
    """Run SQL (DuckDB) over the shards PATH names (a shard, a folder or a glob).

    \b
    Views:
      traces     one row per trace (every column of the trace schema)
      events     one row per event: trace_id, program_id, status, step, kind, lineno,
                 line_source, function, file, depth, frame_id, thread_id, arg, locals,
                 locals_map (MAP name -> value: locals_map['x'])
      variables  one row per variable an event records: trace_id, program_id, step,
                 kind, function, frame_id, lineno, name, value

    \b
    Example:
        worldtrace query harvest-out "SELECT status, count(*) FROM traces GROUP BY status"
        worldtrace query harvest-out "SELECT function, count(*) n FROM events GROUP BY 1 ORDER BY n DESC" --format csv
    """
    from harvest.query import query

    if not sql.replace(";", " ").strip():  # DuckDB runs it as nothing: "(0 rows)" would be a lie
        raise click.BadParameter("no statement given", param_hint="SQL")
    try:
        table = query(path, sql)
    except (WorldtraceError, SchemaError) as e:
        raise click.ClickException(" ".join(str(e).split("\n"))) from e
    click.echo(FORMATTERS[fmt](table))
