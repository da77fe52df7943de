"""`worldtrace publish`: turn shards into a documented dataset folder (and optionally push it to the Hub)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from harvest.errors import WorldtraceError
from harvest.options import silent_option
from schemas.errors import SchemaError
from schemas.stream import STATUSES

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kKmMgGtT]?)[bB]?|([kKmMgGtT])i[bB])\s*$")
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_BINARY_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}  # KiB, MiB, GiB, TiB


class ByteSize(click.ParamType):
    """A size such as 500MB, 100M, 2GB (powers of 1000), 512MiB (powers of 1024) or 1048576 (bytes)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        if not match or float(match.group(1)) <= 0:
            self.fail(f"{value!r} is not a size like 500MB, 100M or 1048576", param, ctx)
        if match.group(3):
            return int(float(match.group(1)) * _BINARY_UNITS[match.group(3).lower()])
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@click.command("publish")
@click.argument("shards")
@click.option("--to", "out", required=True, type=click.Path(file_okay=False, path_type=Path), metavar="OUT",
              help="Folder to write the dataset into (created; must be empty unless --overwrite).")
@click.option("--name", default=None, help="Dataset name, e.g. org/python-traces (default: the OUT folder name, or --push's repo).")
@click.option("--license", "license_", default="unknown", show_default=True, help="License id for the card (e.g. mit, apache-2.0, cc-by-4.0).")
@click.option("--split", "split_spec", default="train=0.95,test=0.05", show_default=True,
              help="Split fractions by program: NAME=FRACTION,... (names: word characters).")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Keep only traces with this status (repeatable: --status ok --status exception).")
@click.option("--max-events", type=click.IntRange(min=0), default=None, help="Drop traces with more events than this.")
@click.option("--drop-nondeterministic", is_flag=True,
              help="Drop the traces of programs that traced differently when run again (needs the "
              "determinism.json of `harvest --recheck` beside the shards).")
@click.option("--shard-size", type=ByteSize(), default="500MB", show_default=True, help="Target Parquet file size: a file is closed once it reaches it (its last row group can take it past).")
@click.option("--row-group-size", type=ByteSize(), default="100MB", show_default=True, help="Target row group size, as Arrow data in memory: a row group is cut once its rows reach it.")
@click.option("--description", default=None, help="A paragraph for the dataset card.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset previously published in OUT.")
@click.option("--push", "repo_id", default=None, metavar="REPO_ID", help="Upload to this Hugging Face dataset repo (needs HF_TOKEN or a login).")
@click.option("--private", is_flag=True, help="With --push: create the repo as private.")
@silent_option
def command(
    shards: str, out: Path, name: str | None, license_: str, split_spec: str, statuses: tuple[str, ...],
    max_events: int | None, drop_nondeterministic: bool, shard_size: int, row_group_size: int, description: str | None,
    overwrite: bool, repo_id: str | None, private: bool, silent: bool,
) -> None:
    """Publish the shards SHARDS names (a folder, file or glob) as a dataset in OUT.

    Writes OUT/data/{split}-{i:05d}-of-{n:05d}.parquet (programs never straddle splits; exact
    duplicate traces dropped), OUT/README.md (dataset card), OUT/croissant.json (Croissant 1.0),
    OUT/provenance/ (the harvest run manifests) and OUT/checksums.sha256.

    \b
    Example:
        worldtrace publish harvest-out --to my-dataset --name me/python-traces --license mit
        worldtrace publish harvest-out --to ds --status ok --max-events 5000 --split train=0.9,validation=0.05,test=0.05
        HF_TOKEN=... worldtrace publish harvest-out --to ds --push me/python-traces
    """
    from harvest.publish import PublishOptions, SplitSpec, publish
    from harvest.publish.push import push_folder, require_token

    try:
        token = require_token() if repo_id else None  # before any work, so a missing token costs nothing
        options = PublishOptions(
            name=name or repo_id or out.resolve().name,
            license=license_,
            splits=SplitSpec.parse(split_spec),
            statuses=statuses,
            max_events=max_events,
            drop_nondeterministic=drop_nondeterministic,
            shard_bytes=shard_size,
            row_group_bytes=row_group_size,
            description=description,
            overwrite=overwrite,
        )
        result = publish(shards, out, options)

        def say(text: str) -> None:
            if not silent:
                click.echo(text, err=True)

        summary = result.stats.to_json()
        for split, part in summary["splits"].items():
            say(f"{split}: {part['rows']} traces, {part['programs']} programs, {part['files']} file(s), {part['bytes']:,} bytes")
        for split in options.splits.names:
            if split not in result.files:
                say(f"warning: no program was assigned to split {split!r}; it is left out")
        tracers = summary["tracer_versions"]
        if len(tracers) > 1:  # e.g. a glob over the folders of two harvests
            say(
                f"warning: the dataset mixes the traces of {len(tracers)} tracer versions "
                f"({', '.join(f'{v}: {n}' for v, n in tracers.items())}), which record the same program "
                "differently; publish one version's shards per dataset"
            )
        dropped = summary["dropped"]
        say(
            f"dropped: {dropped['duplicates']} duplicates, {dropped['status']} by status, {dropped['max_events']} "
            f"by --max-events, {dropped['nondeterministic']} nondeterministic"
        )
        say(f"wrote {out}")
        if repo_id and token:
            url = push_folder(out, repo_id, token, private=private)
            say(f"pushed to {url}")
    except (WorldtraceError, SchemaError) as e:
        raise click.ClickException(" ".join(str(e).split("\n"))) from e
