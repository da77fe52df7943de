"""The harvest's view of an output folder: write a unit's shard, find finished units, read counts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harvest.errors import ConfigError
from harvest.plan import WorkUnit
from schemas.convert import check_stream_object, rows_to_batch, stream_object_to_row
from schemas.errors import StreamFormatError
from schemas.shards import (
    MANIFEST_ENTRIES_DIR,
    TEMP_MARK,
    TEMP_PREFIX,
    ShardWriter,
    read_manifest,
    rebuild_manifest,
)
from tracer import __version__ as tracer_version

log = logging.getLogger(__name__)

BATCH_ROWS = 512
BATCH_EVENTS = 50_000  # a record batch also ends here (~1 KB of Python objects an event while converted)
UNIT_ID_KEY = "worldtrace.unit_id"
MISMATCHES_KEY = "worldtrace.expected_output_mismatches"


def write_unit_shard(
    out_dir: Path,
    unit: WorkUnit,
    rows: Iterable[dict[str, Any]],
    mismatches: int = 0,
    retried: bool = True,
    checked: bool = False,
    commit_check: Callable[[], None] | None = None,
) -> int:
    """Write `rows` (stream objects, in the unit's order) as the unit's shard; return its bytes.

    `rows` may be a generator: they are converted BATCH_ROWS rows or BATCH_EVENTS events at a time.
    `mismatches` (rows whose return value differs from the expected output) goes into the
    shard's metadata, so that a resumed harvest can count them over the whole folder.
    `retried`: an earlier attempt of the unit may have died writing this shard, so its temporary
    files are looked for (a listing of the whole folder: for every unit of a big harvest, that
    alone grew quadratic; a first attempt has none to find, its unit's work folder being new).
    `checked`: `rows` have been through `checked_row` already.
    `commit_check`: called just before the shard is renamed into place (it raises to stop that).
    """
    if retried:
        _remove_stale_temporaries(out_dir, unit.shard_name)
    sources = {p.program_id: p.source or "" for p in unit.programs}
    modules = {p.program_id: dict(p.modules) for p in unit.programs if p.modules}  # part of the trace id
    files = {p.program_id: p.files_json() for p in unit.programs if p.files}  # so are its data files
    batch: list[dict[str, Any]] = []
    events = 0
    number = 0
    metadata = {UNIT_ID_KEY: unit.unit_id, MISMATCHES_KEY: str(mismatches)}
    # Only the shard's own manifest entry: the driver merges `_manifest.json` once per run
    # (rebuilding it at every shard reads every entry, quadratic in the units of a harvest).
    with ShardWriter(out_dir / unit.shard_name, overwrite=True, metadata=metadata, merge_manifest=False,
                     commit_check=commit_check) as writer:  # fmt: skip
        for number, obj in enumerate(rows, start=1):
            if not checked:
                obj = checked_row(obj)
            context: dict[str, Any] = {"source": sources.get(obj["program_id"], ""), "image": unit.image}
            if obj["program_id"] in modules:
                context["modules"] = modules[obj["program_id"]]
            if obj["program_id"] in files:
                context["files"] = files[obj["program_id"]]
            batch.append(stream_object_to_row(obj, context))
            events += len(obj["events"])
            if len(batch) >= BATCH_ROWS or events >= BATCH_EVENTS:
                writer.write_batch(rows_to_batch(batch, number - len(batch) + 1))
                batch = []
                events = 0
        if batch:
            writer.write_batch(rows_to_batch(batch, number - len(batch) + 1))
    assert writer.info is not None
    return writer.info.bytes


def merge_manifest(out_dir: Path) -> None:
    """Bring the folder's `_manifest.json` up to date with the entries its units wrote (once per
    run: see write_unit_shard); nothing when no shard was ever committed there."""
    if (out_dir / MANIFEST_ENTRIES_DIR).is_dir():
        rebuild_manifest(out_dir)


def _remove_stale_temporaries(out_dir: Path, shard_name: str) -> None:
    """Drop the hidden temporary files of this shard that a killed writer left behind."""
    for stale in out_dir.glob(f"{TEMP_PREFIX}{shard_name}{TEMP_MARK}*"):
        log.info("removing %s, left by a writer that died", stale.name)
        stale.unlink(missing_ok=True)


def checked_row(obj: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """The stream object, or an `error` row saying why the tracer's output for it is malformed
    (logged as a warning, unless not `warn`)."""
    try:
        check_stream_object(obj)
        return obj
    except StreamFormatError as exc:
        from harvest.rows import malformed_row

        if warn:
            log.warning("program %s: malformed tracer output: %s", obj.get("program_id"), exc)
        return malformed_row(obj, str(exc))


def committed_shards(out_dir: Path) -> set[str]:
    """Names of the shards the folder's manifest records and that exist on disk with the size it
    records (a shard truncated or replaced since is redone: its unit runs again)."""
    manifest = read_manifest(out_dir) or {}
    found = set()
    for name, info in manifest.items():
        try:
            size = (out_dir / name).stat().st_size
        except OSError:
            continue
        if size != info.bytes:
            log.warning("%s is %d bytes, its manifest entry says %d: its unit runs again", name, size, info.bytes)
            continue
        found.add(name)
    return found


def expected_output_mismatches(paths: Iterable[Path]) -> int:
    """Rows whose return value differs from the expected output, from the shards' metadata."""
    total = 0
    for path in paths:
        metadata = pq.read_schema(path).metadata or {}
        total += int(metadata.get(MISMATCHES_KEY.encode(), b"0"))
    return total


def status_counts(paths: Iterable[Path]) -> dict[str, int]:
    """Traces per status over some shards (reads only the status column)."""
    counts: dict[str, int] = {}
    for path in paths:
        statuses = pq.read_table(path, columns=["status"]).column("status").to_pylist()
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
    return counts


def check_no_overlap(out_dir: Path, units: Sequence[WorkUnit], committed: set[str]) -> None:
    """Refuse to add traces that shards from a differently planned harvest already hold, or to
    add traces of this tracer version to a folder of another's.

    A changed --programs-per-unit, --timeout, --backend, ... plans different units; writing them
    next to the old shards would duplicate programs, so the folder must be a new one. Another
    tracer version records other traces of the same programs (its version is in every trace id):
    a folder holds one version's traces, whatever the programs.
    """
    planned = {unit.shard_name for unit in units}
    # Also shards on disk that no manifest entry records (a writer killed between renaming its
    # shard into place and recording it): their traces are in the folder all the same.
    on_disk = {p.name for p in out_dir.glob("unit-*.parquet")}  # WorkUnit.shard_name
    foreign = sorted(name for name in committed | on_disk if name not in planned)
    if not foreign:
        return
    wanted = {(unit.image, p.program_id) for unit in units for p in unit.programs}
    for name in foreign:
        try:
            table = pq.read_table(out_dir / name, columns=["image", "program_id", "tracer_version"])
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise ConfigError(f"{out_dir / name} cannot be read ({exc}); harvest into a new --out folder") from None
        recorded = sorted(set(table.column("tracer_version").to_pylist()) - {tracer_version})
        if recorded:
            raise ConfigError(
                f"{out_dir} holds traces recorded by tracer {', '.join(recorded)} (shard {name}); this "
                f"worldtrace records with tracer {tracer_version}, whose traces differ: harvest into a new "
                "--out folder, or finish this one with the worldtrace that started it"
            )
        images = table.column("image").to_pylist()
        ids = table.column("program_id").to_pylist()
        clash = next(((i, p) for i, p in zip(images, ids, strict=True) if (i, p) in wanted), None)
        if clash is not None:
            raise ConfigError(
                f"{out_dir} already holds a trace of program {clash[1]!r} in image {clash[0]!r} "
                f"(shard {name}) from a harvest planned otherwise: other programs (one added, removed or "
                "edited in the inputs since), other settings or other unit sizes; harvest into a new --out "
                "folder (or re-run the original command, with the original inputs, to finish it)"
            )
