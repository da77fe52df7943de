"""`worldtrace validate`: check shards against the trace schema and their directory's manifest."""

from __future__ import annotations

import json
import os

import click

from schemas.errors import ShardError
from schemas.reader import SHARD_SUFFIX
from schemas.validate import NOT_A_SHARD, ValidationReport, validate


@click.command("validate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-s", "--silent", is_flag=True, help="Print only problems and the verdict.")
def command(paths: tuple[str, ...], as_json: bool, silent: bool) -> None:
    """Check shards: schema, schema version, row invariants, sizes and sha256 against the manifest.

    PATHS are shard files, directories of shards or globs, local or URIs (s3://, gs://, hf://, ...).
    Exits with status 1 when any problem is found.

    \b
    Example:
        worldtrace validate harvest-out
        worldtrace validate 'harvest-out/*.parquet' --json
    """
    reports = []
    seen_ids: dict[str, str] = {}  # across PATHS: a trace stored in two of them is a duplicate
    for path in dict.fromkeys(paths):  # a path given twice is checked once
        try:
            report = validate(path, seen_ids)
        except ShardError as e:
            raise click.ClickException(str(e)) from e
        _refuse_non_shard(path, report)
        reports.append(report)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=1))
    else:
        for report in reports:
            for line in report.lines():
                if silent and line.startswith(("OK  ", "     warning", "warning")):
                    continue
                click.echo(line)
    if not all(r.ok for r in reports):
        raise SystemExit(1)


def _refuse_non_shard(path: str, report: ValidationReport) -> None:
    """A single named file that is not Parquet at all (and not named .parquet): one error line."""
    if len(report.shards) != 1 or path.endswith(SHARD_SUFFIX) or os.path.isdir(path):
        return
    for problem in report.shards[0].problems:
        if problem.startswith(NOT_A_SHARD):
            raise click.ClickException(f"{path}: {problem}")
