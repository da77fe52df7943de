"""`worldtrace inspect`: look at one trace as a terminal stepper, CWM text, JSON or an HTML page."""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path
from typing import TextIO

import click

from harvest.errors import WorldtraceError
from harvest.inspect.text import TextStyle
from schemas.errors import SchemaError

FORMATS = ("text", "cwm", "json", "html")


def _parse_steps(text: str | None) -> tuple[int, int | None]:
    """'A:B' (1-based, inclusive), 'A:' or 'A' as a 0-based slice start and stop."""
    if text is None:
        return 0, None
    head, sep, tail = text.partition(":")
    try:
        start = int(head) - 1 if head else 0
        stop = (int(tail) if tail else None) if sep else start + 1
    except ValueError as e:
        raise click.ClickException(f"--steps {text!r} is not A:B, A: or A (step numbers)") from e
    if start < 0 or (stop is not None and stop <= start):
        raise click.ClickException(f"--steps {text!r}: steps count from 1 and B must be >= A")
    return start, stop


@click.command("inspect")
@click.argument("path")
@click.option("-t", "--trace", "trace_id", metavar="ID", help="Trace id (or a unique prefix of one).")
@click.option("-p", "--program", "program_id", metavar="ID", help="A trace of this program.")
@click.option("-w", "--where", metavar="SQL", help="SQL condition over the `traces` view (DuckDB).")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
    help="text: step-through view; cwm: CWM trace text; json: the trace row; html: a stepper page.",
)
@click.option(
    "-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE instead of the terminal (html default: trace-<first 12 digits of the id>.html).",
)
@click.option(
    "--steps", metavar="A:B",
    help="text: only steps A to B (1-based, inclusive; 'A:' to the end); no interactive pager.",
)
@click.option("--color/--no-color", default=None, help="Colour the text view (default: on a terminal).")
def command(
    path: str,
    trace_id: str | None,
    program_id: str | None,
    where: str | None,
    fmt: str,
    out: Path | None,
    steps: str | None,
    color: bool | None,
) -> None:
    """Show one trace from the shards PATH names (a shard, a folder or a glob).

    Without --trace/--program/--where, the first trace is shown; when several traces match, the
    first is shown and the others are counted on stderr. On a terminal, `text` is an interactive
    stepper (arrows or n/p, g to jump, q to quit); otherwise it prints every step (or --steps).

    \b
    Example:
        worldtrace inspect harvest-out --program fibonacci
        worldtrace inspect harvest-out --where "status = 'exception'" --steps 1:20
        worldtrace inspect harvest-out --trace fdc0f14d --format html --out fib.html
        worldtrace inspect harvest-out --program fibonacci --format cwm
    """
    from harvest.inspect.load import select

    start, stop = _parse_steps(steps)
    try:
        found = select(path, trace_id=trace_id, program_id=program_id, where=where, limit=1)
        trace = found.table.to_pylist()[0]
        if found.matches > 1:
            click.echo(
                f"{found.matches} traces match; showing {trace['trace_id']} (pick another with --trace ID)",
                err=True,
            )
        _show(trace, fmt, out, start, stop, color)
    except (WorldtraceError, SchemaError) as e:
        raise click.ClickException(" ".join(str(e).split("\n"))) from e


def _show(
    trace: dict, fmt: str, out: Path | None, start: int, stop: int | None, color: bool | None
) -> None:
    if fmt == "html":
        from harvest.inspect.html import render_html

        target = out or Path(f"trace-{trace['trace_id'][:12]}.html")
        with _open_out(target) as f:
            f.write(render_html(trace))
        click.echo(f"wrote {target}", err=True)
        return
    if fmt == "cwm":
        from schemas.cwm import render_cwm

        _emit(render_cwm(trace), out)
        return
    if fmt == "json":
        _emit(json.dumps(trace, indent=1, ensure_ascii=False), out)
        return
    interactive = out is None and stop is None and start == 0 and sys.stdin.isatty() and sys.stdout.isatty()
    style = TextStyle(color=sys.stdout.isatty() and out is None if color is None else color)
    if interactive:
        from harvest.inspect.pager import page_trace

        page_trace(trace, style)
        return
    _emit_text(trace, out, start, stop, style)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text)
    else:
        with _open_out(out) as f:
            f.write(text + "\n")


def _open_out(path: Path) -> TextIO:
    """`path` open for writing, or a ClickException naming it (a missing folder, no permission)."""
    try:
        return path.open("w", encoding="utf-8")
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from e


def _emit_text(trace: dict, out: Path | None, start: int, stop: int | None, style: TextStyle) -> None:
    from harvest.inspect.steps import iter_steps
    from harvest.inspect.text import header, render_outcome, render_steps

    total = len(trace["events"])
    if start >= max(total, 1):
        raise click.ClickException(f"--steps starts at {start + 1} but the trace has {total} steps")
    blocks = render_steps(trace, islice(iter_steps(trace["events"]), start, stop), style)
    stream = _open_out(out) if out is not None else None
    try:
        click.echo(header(trace), file=stream, color=style.color)
        for block in blocks:
            click.echo(block, file=stream, color=style.color)
        if stop is None or stop >= total:
            outcome = render_outcome(trace)
            if outcome:
                click.echo(outcome, file=stream, color=style.color)
    finally:
        if stream is not None:
            stream.close()
