"""`publish`: shards in, a documented Hugging Face-style dataset folder out."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from harvest.errors import ConfigError, WorldtraceError
from harvest.publish.provenance import (
    DeterminismReport,
    RunManifest,
    find_determinism_reports,
    find_run_manifests,
    find_shard_manifests,
)
from harvest.publish.splits import SplitSpec
from harvest.publish.stats import DatasetStats
from harvest.publish.writer import (
    DEFAULT_ROW_GROUP_BYTES,
    DEFAULT_SHARD_BYTES,
    SplitWriter,
    WrittenFile,
)
from schemas.arrow import plain_schema, trace_schema
from schemas.reader import filesystem_for, iter_batches, resolve_shards

logger = logging.getLogger(__name__)

DATA_DIR = "data"
CARD = "README.md"
CROISSANT = "croissant.json"
CHECKSUMS = "checksums.sha256"
PROVENANCE_DIR = "provenance"
OUTPUTS = (DATA_DIR, CARD, CROISSANT, CHECKSUMS, PROVENANCE_DIR)
ALL_ASIDE = ".all-aside"  # marks a swap's folder of old outputs once all of them are in it
# Fields that make two traces the same trace (wall time and trace ids aside): the same code, call
# and interpreter that produced the same outcome. Traces equal on all of them are dropped as copies.
CONTENT_KEY = (
    "source", "entrypoint", "input", "image", "python_version", "backend", "tracer_version",
    "status", "return_value", "exception_type", "n_events", "stdout",
)


class PublishError(WorldtraceError):
    """The dataset could not be published (output folder in the way, nothing to publish, push failed)."""


@dataclass(frozen=True)
class PublishOptions:
    """What to publish and how (the `worldtrace publish` options)."""

    name: str
    license: str = "unknown"
    splits: SplitSpec = field(default_factory=lambda: SplitSpec(("train",), (1.0,)))
    statuses: tuple[str, ...] = ()
    max_events: int | None = None
    shard_bytes: int = DEFAULT_SHARD_BYTES
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES
    description: str | None = None
    overwrite: bool = False
    drop_nondeterministic: bool = False  # programs the harvest's determinism check flagged


@dataclass
class PublishResult:
    out: Path
    files: dict[str, list[WrittenFile]]
    stats: DatasetStats
    runs: list[RunManifest]
    input_files: list[str]
    checks: list[DeterminismReport] = field(default_factory=list)


def published_schema() -> pa.Schema:
    """The Arrow schema of the published Parquet files: the trace schema, strings plain."""
    return plain_schema(trace_schema())


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an `out` that publish may not replace (before any work is done)."""
    if out.exists() and not out.is_dir():
        raise PublishError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        unknown = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS and p.name != ".cache")
        if unknown:  # --overwrite would not help: say so before the user tries it
            raise PublishError(
                f"{out} is not empty: it holds files publish did not write ({', '.join(unknown[:3])});"
                " publish into a new or empty folder"
            )
        if not overwrite:
            raise PublishError(f"{out} is not empty (use --overwrite to replace the dataset published there)")


def _recover_killed_publish(out: Path) -> None:
    """Undo what a publish into `out` that was killed (SIGKILL, a lost machine) left next to it:
    its staging folder is removed; if it died while swapping the new dataset in, the old outputs
    it had moved aside go back into `out`, so `out` holds the dataset from before it began.
    Folders of a publish whose process is still running are left alone."""
    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(publishing|replaced)-(\d+)-.+")
    for path in sorted(out.parent.iterdir()):
        found = pattern.fullmatch(path.name)
        if found is None or not path.is_dir() or _pid_alive(int(found.group(2))):
            continue
        if found.group(1) == "replaced" and any(path.iterdir()):
            logger.warning("a publish into %s was killed while replacing the dataset there: restoring the old one", out)
            moving_in = (path / ALL_ASIDE).exists()  # else it died moving the old ones aside
            for name in OUTPUTS:
                if moving_in and os.path.lexists(out / name) and not os.path.lexists(path / name):
                    _remove(out / name)  # a new output, where the old dataset had none
                if os.path.lexists(path / name):
                    if os.path.lexists(out / name):
                        _remove(out / name)
                    os.replace(path / name, out / name)
        else:
            logger.info("removing %s, left by a publish that was killed", path)
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _check_not_nested(input_path: str, shard_files: list[str], out: Path) -> None:
    """Refuse an `out` inside the input folder, or input shards inside `out`."""
    target = out.resolve()
    if os.path.isdir(input_path) and target.is_relative_to(Path(input_path).resolve()):
        raise PublishError(f"--to {out} is inside {input_path}: its files would be read as input next time")
    inside = [f for f in shard_files if os.path.isfile(f) and Path(f).resolve().is_relative_to(target)]
    if inside:
        raise PublishError(
            f"the input {inside[0]} is inside --to {out}: publishing would replace the files it reads"
            " (publish to another folder)"
        )


def _digest(text: str) -> int:
    """A 64-bit key of a string (8 bytes of its sha256): small enough to keep one per trace."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _content_keys(batch: pa.RecordBatch) -> list[int]:
    columns = [batch.column(name).to_pylist() for name in CONTENT_KEY]
    return [
        _digest(json.dumps(values, ensure_ascii=False, separators=(",", ":")))
        for values in zip(*columns, strict=True)
    ]


class _Deduper:
    """Drops rows whose trace_id or content was seen before.

    Only 64-bit keys are kept (about 60 bytes of memory per trace with the set's overhead); two
    different traces sharing a key (odds about n^2 / 2^65) would lose the second one.
    """

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.contents: set[int] = set()

    def keep_mask(self, batch: pa.RecordBatch) -> list[bool]:
        mask = []
        ids = [_digest(t) for t in batch.column("trace_id").to_pylist()]
        for trace_key, content in zip(ids, _content_keys(batch), strict=True):
            new = trace_key not in self.ids and content not in self.contents
            if new:
                self.ids.add(trace_key)
                self.contents.add(content)
            mask.append(new)
        return mask


def _filtered(
    batch: pa.RecordBatch, options: PublishOptions, stats: DatasetStats, flagged: frozenset[str]
) -> pa.RecordBatch:
    if flagged:
        keep = pa.array([trace_id not in flagged for trace_id in batch.column("trace_id").to_pylist()], pa.bool_())
        before = batch.num_rows
        batch = batch.filter(keep)
        stats.dropped_nondeterministic += before - batch.num_rows
    if options.statuses:
        keep = pc.is_in(pc.cast(batch.column("status"), pa.string()), value_set=pa.array(options.statuses))
        before = batch.num_rows
        batch = batch.filter(keep)
        stats.dropped_by_status += before - batch.num_rows
    if options.max_events is not None:
        before = batch.num_rows
        batch = batch.filter(pc.less_equal(batch.column("n_events"), options.max_events))
        stats.dropped_by_max_events += before - batch.num_rows
    return batch


def _nondeterministic(checks: list[DeterminismReport], input_path: str) -> frozenset[str]:
    """The programs the determinism reports flag (`--drop-nondeterministic`); none found is an error."""
    if not checks:
        raise PublishError(
            f"--drop-nondeterministic: no determinism report (determinism.json) beside the shards of "
            f"{input_path}; harvest with --recheck FRACTION to write one"
        )
    return frozenset(trace_id for check in checks for trace_id in check.flagged())


def write_splits(
    batches: Iterable[pa.RecordBatch],
    data_dir: Path,
    options: PublishOptions,
    stats: DatasetStats,
    flagged: frozenset[str] = frozenset(),
) -> dict[str, list[WrittenFile]]:
    """Filter, de-duplicate and route rows to their program's split; the files written per split.
    `flagged`: trace ids of programs whose traces are dropped as nondeterministic."""
    schema = published_schema()
    writers: dict[str, SplitWriter] = {}
    deduper = _Deduper()
    split_of: dict[str, str] = {}
    try:
        for raw in batches:
            stats.read += raw.num_rows
            batch = _filtered(raw, options, stats, flagged)
            if batch.num_rows == 0:
                continue
            keep = deduper.keep_mask(batch)
            stats.dropped_duplicates += keep.count(False)
            batch = batch.filter(pa.array(keep)).cast(schema)
            programs = batch.column("program_id").to_pylist()
            targets = [split_of.setdefault(p, options.splits.assign(p)) for p in programs]
            for split in options.splits.names:
                rows = [i for i, target in enumerate(targets) if target == split]
                if not rows:
                    continue
                part = batch.take(pa.array(rows, pa.int64()))
                if split not in writers:
                    writers[split] = SplitWriter(
                        data_dir, split, schema,
                        shard_bytes=options.shard_bytes, row_group_bytes=options.row_group_bytes,
                    )
                writers[split].write(part)
                stats.add(split, part)
        files = {split: writers[split].finish() for split in options.splits.names if split in writers}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for split, written in files.items():
        stats.splits[split].files = len(written)
        stats.splits[split].bytes = sum(f.bytes for f in written)
        stats.splits[split].arrow_bytes = sum(f.arrow_bytes for f in written)
    return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(out: Path) -> Path:
    """`checksums.sha256` (the `sha256sum -c` format) over every other file of the dataset."""
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = path.relative_to(out).as_posix()
        if relative == CHECKSUMS or relative.startswith(".cache/"):
            continue
        lines.append(f"{sha256_file(path)}  {relative}\n")
    target = out / CHECKSUMS
    target.write_text("".join(lines), encoding="utf-8")
    return target


def _local_input(input_path: str) -> tuple[str, str] | None:
    """(the input's local path, the folder it names or lies in: the folder, a file's folder, a
    glob's fixed part), both absolute; None for a remote input."""
    fs, inner = filesystem_for(input_path)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    root = inner
    if any(c in root for c in "*?["):
        while any(c in root for c in "*?["):
            root = os.path.dirname(root)
    elif not os.path.isdir(root):
        root = os.path.dirname(root)
    return inner, os.path.realpath(root)


def _copy_provenance(
    out: Path, runs: list[RunManifest], checks: list[DeterminismReport], input_path: str, shard_files: list[str]
) -> None:
    """Copy the run manifests and determinism reports, and list the local input shards in
    provenance/inputs.json, by paths relative to the input's folder (the same input gives the same
    bytes wherever it lies)."""
    folder = out / PROVENANCE_DIR
    folder.mkdir(exist_ok=True)
    for run in runs:
        shutil.copyfile(run.path, folder / f"run-{run.run_id}.json")
    for check in checks:
        shutil.copyfile(check.path, folder / f"determinism-{check.sha256[:12]}.json")
    local = _local_input(input_path)
    if local is None:  # a URI: no local shard or manifest to list
        shown_input, root = input_path, ""
    else:
        path, root = local
        shown_input = Path(os.path.relpath(path, os.path.dirname(root))).as_posix()

    def relative(file: str | Path) -> str:
        return Path(os.path.relpath(os.path.realpath(file), root)).as_posix()

    inputs = {
        "input": shown_input,
        "shards": [
            {"file": relative(f), "sha256": sha256_file(Path(f)), "bytes": os.path.getsize(f)} for f in shard_files
        ],
        "shard_manifests": [relative(p) for p in find_shard_manifests(input_path, shard_files)],
    }
    (folder / "inputs.json").write_text(json.dumps(inputs, indent=1) + "\n", encoding="utf-8")


def _require_dependencies() -> None:
    """The `publish` extra's libraries, or a clear error naming the missing one."""
    import importlib.util

    for module in ("datasets", "huggingface_hub", "mlcroissant"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"publishing needs {module}: pip install 'worldtrace[publish]'")


def publish(input_path: str, out: str | os.PathLike[str], options: PublishOptions) -> PublishResult:
    """Write the dataset for the shards `input_path` names into `out` (see `worldtrace publish`)."""
    from harvest.publish.card import write_card
    from harvest.publish.croissant import write_croissant

    _require_dependencies()
    fs, shard_files = resolve_shards(input_path)
    if not shard_files:
        raise ConfigError(f"{input_path}: no .parquet shards found")
    out_dir = Path(out)
    _check_not_nested(input_path, shard_files, out_dir)
    target = out_dir.resolve()
    _recover_killed_publish(target)
    _check_out(out_dir, options.overwrite)
    # Everything is written into a hidden sibling folder and moved into `out` only once it is
    # complete, so a failed publish (an error, no traces left, Ctrl-C) leaves `out` as it was.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.publishing-{os.getpid()}-"))
    try:
        (staging / DATA_DIR).mkdir()
        stats = DatasetStats()
        checks = find_determinism_reports(input_path, shard_files)
        flagged = _nondeterministic(checks, input_path) if options.drop_nondeterministic else frozenset()
        files = write_splits(iter_batches(input_path), staging / DATA_DIR, options, stats, flagged)
        if not files:
            raise PublishError(f"no traces left to publish from {input_path} after the filters ({stats.read} read)")
        runs = find_run_manifests(input_path, shard_files)
        local_inputs = [f for f in shard_files if os.path.isfile(f)]
        _copy_provenance(staging, runs, checks, input_path, local_inputs)
        staged = PublishResult(staging, files, stats, runs, shard_files, checks)
        write_card(staged, options, published_schema())
        write_croissant(staged, options, published_schema())
        write_checksums(staging)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    moved = {
        split: [replace(f, path=out_dir / f.path.relative_to(staging)) for f in written]
        for split, written in files.items()
    }
    return PublishResult(out_dir, moved, stats, runs, shard_files, checks)


def _swap_in(staging: Path, out: Path) -> None:
    """Replace what publish wrote in `out` (nothing else) with the outputs in `staging`.

    The old outputs are first moved aside (renames within one folder), then the new ones moved in;
    if that fails, the old ones are moved back.
    """
    out.mkdir(exist_ok=True)  # `out` is resolved: its parent is `staging`'s
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.replaced-{os.getpid()}-"))
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for name in OUTPUTS:
            if os.path.lexists(out / name):
                os.replace(out / name, aside / name)
                moved_aside.append(name)
        (aside / ALL_ASIDE).touch()  # for _recover_killed_publish: new outputs move in from here
        for name in OUTPUTS:
            if os.path.lexists(staging / name):
                os.replace(staging / name, out / name)
                moved_in.append(name)
    except BaseException:
        for name in moved_in:
            os.replace(out / name, staging / name)
        for name in moved_aside:
            os.replace(aside / name, out / name)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
