"""Validation of shards: schema, schema version, row invariants, and the manifest's checksums."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from schemas.arrow import SCHEMA_VERSION
from schemas.errors import ShardError
from schemas.reader import SHARD_SUFFIX, filesystem_for, open_shard, resolve_shards, schema_problems
from schemas.shards import TEMP_MARK, ShardInfo, read_manifest, schema_version_of
from schemas.stream import EVENT_KINDS, STATUSES

_HASH_CHUNK = 1 << 20
_GLOB_CHARS = "*?["
NOT_A_SHARD = "not a Parquet shard"


@dataclass
class ShardReport:
    """What validation found about one shard file."""

    path: str
    rows: int = 0
    events: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class ValidationReport:
    """What validation found under one path: per-shard reports and directory-level findings."""

    path: str
    shards: list[ShardReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)

    @property
    def n_problems(self) -> int:
        return len(self.problems) + sum(len(s.problems) for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "problems": self.problems,
            "warnings": self.warnings,
            "shards": [s.__dict__ for s in self.shards],
        }

    def lines(self) -> list[str]:
        """The report as text lines: one per shard, then each problem and warning."""
        out = []
        for shard in self.shards:
            state = "OK  " if shard.ok else "FAIL"
            out.append(f"{state} {shard.path}: {shard.rows} traces, {shard.events} events, {shard.bytes} bytes")
            out.extend(f"     problem: {p}" for p in shard.problems)
            out.extend(f"     warning: {w}" for w in shard.warnings)
        out.extend(f"problem: {p}" for p in self.problems)
        out.extend(f"warning: {w}" for w in self.warnings)
        rows = sum(s.rows for s in self.shards)
        events = sum(s.events for s in self.shards)
        n = self.n_problems
        verdict = "valid" if self.ok else f"INVALID ({n} problem{'' if n == 1 else 's'})"
        shards = f"{len(self.shards)} shard" + ("" if len(self.shards) == 1 else "s")
        out.append(f"{self.path}: {shards}, {rows} traces, {events} events: {verdict}")
        return out


def _sha256(fs: pafs.FileSystem, path: str) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with fs.open_input_stream(path) as f:
        while chunk := f.read(_HASH_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _check_rows(batch: pa.RecordBatch, version: int | None, report: ShardReport) -> None:
    """Row invariants a reader relies on, checked column-wise."""
    names = batch.schema.names
    if "schema_version" in names:
        bad = pc.sum(pc.not_equal(batch.column("schema_version"), SCHEMA_VERSION)).as_py()
        if bad:
            report.problems.append(f"{bad} rows have schema_version != {SCHEMA_VERSION}")
    if version is not None and version != SCHEMA_VERSION:
        return
    if "status" in names:
        statuses = set(pc.unique(batch.column("status").cast(pa.string())).to_pylist())
        unknown = statuses - set(STATUSES)
        if unknown:
            report.problems.append(f"unknown status values {sorted(map(str, unknown))}")
    if "events" in names and "n_events" in names:
        lengths = pc.list_value_length(batch.column("events"))
        mismatched = pc.sum(pc.not_equal(lengths, batch.column("n_events"))).as_py()
        if mismatched:
            report.problems.append(f"{mismatched} rows have n_events != len(events)")
        report.events += int(pc.sum(lengths).as_py() or 0)
        flat = batch.column("events").flatten()
        kinds = flat.field("kind").cast(pa.string())
        if flat.field("source").null_count:
            report.problems.append(
                f"{flat.field('source').null_count} events have no source line (left out, but line "
                "`lineno` of `source` does not exist)"
            )
        unknown = set(pc.unique(kinds).to_pylist()) - set(EVENT_KINDS)
        if unknown:
            report.problems.append(f"unknown event kinds {sorted(map(str, unknown))}")
    for name in ("trace_id", "program_id", "source", "status"):
        if name in names and batch.column(name).null_count:
            report.problems.append(f"{batch.column(name).null_count} rows have a null {name}")


def _check_duplicates(ids: pa.Array, path: str, seen: dict[str, str], report: ShardReport) -> None:
    duplicates = []
    for trace_id in ids.to_pylist():
        if trace_id is None:
            continue
        if trace_id in seen:
            duplicates.append((trace_id, seen[trace_id]))
        else:
            seen[trace_id] = path
    if duplicates:
        trace_id, first = duplicates[0]
        where = "this shard" if first == path else first
        report.problems.append(
            f"{len(duplicates)} duplicate trace_ids (e.g. {trace_id}, also in {where})"
        )


def validate_shard(
    fs: pafs.FileSystem,
    path: str,
    entry: ShardInfo | None,
    has_manifest: bool,
    seen_ids: dict[str, str] | None = None,
) -> ShardReport:
    """Check one shard file; every finding goes into the returned report, nothing is raised.

    `seen_ids` (trace_id -> shard path), shared across calls, catches a trace stored twice.
    """
    report = ShardReport(path=path)
    try:
        sha256, report.bytes = _sha256(fs, path)
    except OSError as e:
        report.problems.append(f"cannot read the file: {e}")
        return report
    if entry is not None:
        if entry.bytes != report.bytes:
            report.problems.append(
                f"size {report.bytes} bytes differs from the manifest's {entry.bytes} (truncated or rewritten)"
            )
        if entry.sha256 != sha256:
            report.problems.append("sha256 differs from the manifest's (corrupted or rewritten)")
    elif has_manifest:
        report.problems.append("not listed in the directory's manifest")
    else:
        report.warnings.append("no manifest in this directory: checksum not verified")
    try:
        shard = open_shard(fs, path)
    except ShardError as e:
        report.problems.append(f"{NOT_A_SHARD} (truncated or corrupted?): {e.__cause__ or e}")
        return report
    schema = shard.schema_arrow
    problems = schema_problems(schema)
    report.problems.extend(f"schema: {p}" for p in problems)
    version = schema_version_of(shard.metadata.metadata)
    if version is None:
        report.problems.append("file metadata has no worldtrace.schema_version")
    elif version != SCHEMA_VERSION:
        report.problems.append(f"schema version {version}, this worldtrace reads {SCHEMA_VERSION}")
    try:
        for i in range(shard.num_row_groups):
            table = shard.read_row_group(i)
            for batch in table.to_batches():
                report.rows += batch.num_rows
                _check_rows(batch, version, report)
                if seen_ids is not None and "trace_id" in batch.schema.names:
                    _check_duplicates(batch.column("trace_id"), path, seen_ids, report)
    except (OSError, pa.ArrowException) as e:
        report.problems.append(f"data unreadable (corrupted?): {e}")
        return report
    if report.rows != shard.metadata.num_rows:
        report.problems.append(f"{report.rows} rows read, footer says {shard.metadata.num_rows}")
    if entry is not None and entry.rows != report.rows:
        report.problems.append(f"{report.rows} rows, the manifest says {entry.rows}")
    return report


def validate(path: str | os.PathLike[str], seen_ids: dict[str, str] | None = None) -> ValidationReport:
    """Validate every shard `path` (file, directory or glob) names, and the manifests beside them.

    `seen_ids` (trace_id -> shard path), shared across calls, also finds a trace stored under
    two paths (validating several folders together). Raises ShardError only when `path` names
    nothing (missing file, empty glob).
    """
    fs, files = resolve_shards(path)
    report = ValidationReport(path=os.fspath(path))
    directories = sorted({posixpath.dirname(f) for f in files})
    inner = filesystem_for(os.fspath(path))[1].rstrip("/")
    target = fs.get_file_info(inner)
    if target.type == pafs.FileType.Directory:
        directories = sorted(set(directories) | {inner})
        if not files:
            report.problems.append(f"no shards (*{SHARD_SUFFIX}) under {os.fspath(path)}")
    manifests: dict[str, dict[str, ShardInfo] | None] = {}
    if seen_ids is None:
        seen_ids = {}
    for directory in directories:
        try:
            manifests[directory] = read_manifest(directory, fs)
        except ShardError as e:
            report.problems.append(str(e))
            manifests[directory] = None
    for file in files:
        directory, name = posixpath.split(file)
        manifest = manifests.get(directory)
        entry = manifest.get(name) if manifest else None
        report.shards.append(validate_shard(fs, file, entry, manifest is not None, seen_ids))
    # Directory-level: manifest entries whose file is gone (for a glob, those it would match),
    # leftovers of interrupted writers.
    is_directory = target.type == pafs.FileType.Directory
    is_glob = not is_directory and any(c in inner for c in _GLOB_CHARS)
    if is_directory or is_glob:
        present = set(files)
        for directory, manifest in manifests.items():
            for name in sorted(manifest or {}):
                entry_path = f"{directory}/{name}"
                if entry_path not in present and (is_directory or fnmatch.fnmatchcase(entry_path, inner)):
                    report.problems.append(f"{entry_path}: listed in the manifest but missing")
            if not is_directory:
                continue
            selector = pafs.FileSelector(directory, allow_not_found=True)
            for item in fs.get_file_info(selector):
                base = posixpath.basename(item.path)
                if TEMP_MARK in base and base.startswith("."):
                    report.warnings.append(f"{item.path}: leftover temporary file of an interrupted writer")
    return report

