"""Parquet shard writer (zstd, byte-bounded row groups, atomic rename) and the per-directory manifest."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.arrow import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    same_fields,
    shard_schema,
    trace_schema,
)
from schemas.errors import ShardError
from schemas.event_sources import elide_event_sources

logger = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
MANIFEST_ENTRIES_DIR = "_manifest.d"
MANIFEST_LOCK = "_manifest.lock"
TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"
DEFAULT_COMPRESSION_LEVEL = 9
DEFAULT_ROW_GROUP_BYTES = 32 << 20


_EVENT = "events.list.element."
_LOCAL = _EVENT + "locals.list.element."
# Parquet encodings per leaf column, chosen on the CRUXEval traces (benchmarks/storage.py):
# dictionary pages where values repeat (kinds, names, source lines, whole programs traced with
# several inputs), length-prefixed plain pages + zstd where nearly every value is distinct.
PLAIN_COLUMNS = {
    "trace_id": "DELTA_LENGTH_BYTE_ARRAY",
    "program_id": "PLAIN",
    "input": "DELTA_LENGTH_BYTE_ARRAY",
    "return_value": "DELTA_LENGTH_BYTE_ARRAY",
    "exception_message": "DELTA_LENGTH_BYTE_ARRAY",
    "tracer_error": "DELTA_LENGTH_BYTE_ARRAY",
    "stdout": "DELTA_LENGTH_BYTE_ARRAY",
    "stderr": "DELTA_LENGTH_BYTE_ARRAY",
    _EVENT + "file": "PLAIN",
    _EVENT + "arg": "DELTA_LENGTH_BYTE_ARRAY",
    _LOCAL + "value": "PLAIN",
}
DICTIONARY_COLUMNS = [
    "source", "entrypoint", "image", "python_version", "backend", "backend_reason",
    "tracer_version", "status", "exception_type", "truncated_reason",
    _EVENT + "kind", _EVENT + "lineno", _EVENT + "source", _EVENT + "function", _EVENT + "depth",
    _EVENT + "frame_id", _EVENT + "thread_id", _LOCAL + "name",
]  # fmt: skip
# Min/max statistics where a reader can prune row groups with them (not on long texts).
STATISTICS_COLUMNS = [
    "trace_id", "schema_version", "program_id", "image", "python_version", "backend",
    "tracer_version", "status", "exception_type", "truncated", "output_truncated", "wall_time_s",
    "n_events",
]  # fmt: skip


@dataclass(frozen=True)
class ShardInfo:
    """A committed shard, as its manifest entry records it."""

    file: str  # name inside the directory
    rows: int
    events: int
    bytes: int
    sha256: str
    schema_version: int
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardInfo:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


class _HashingFile:
    """A write-only binary file that hashes what passes through it (Parquet writes append-only)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # closed by close()
        self._sha = hashlib.sha256()
        self._pos = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._sha.update(view)
        self._pos += len(view)
        return self._f.write(view)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def sync_and_close(self) -> str:
        self._f.flush()
        os.fsync(self._f.fileno())
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self.closed = True


def _without_descriptions(field: pa.Field) -> pa.Field:
    """`field` with no metadata on it or on any field nested in it."""
    type_ = field.type
    if pa.types.is_struct(type_):
        type_ = pa.struct([_without_descriptions(f) for f in type_])
    elif pa.types.is_list(type_):
        type_ = pa.list_(_without_descriptions(type_.value_field))
    return pa.field(field.name, type_, nullable=field.nullable)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory, fsync and rename."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class ShardWriter:
    """Writes one Parquet shard of trace rows; the file appears under its name only once complete.

    Use as a context manager: an exception inside the block (or a killed process) leaves only a
    hidden temporary file (``.NAME.tmp-*``), which readers ignore. On success the shard is fsynced,
    renamed into place and recorded in the directory's manifest. With `merge_manifest=False` only
    the shard's own entry is written: a job that commits many shards into one directory rebuilds
    the merged `_manifest.json` once at its end (`rebuild_manifest`) instead of at every shard,
    which reads every entry each time (quadratic in the number of shards).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        metadata: Mapping[str, str] | None = None,
        overwrite: bool = False,
        update_manifest: bool = True,
        merge_manifest: bool = True,
        commit_check: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.commit_check = commit_check
        if self.path.name.startswith((TEMP_PREFIX, "_")):
            raise ShardError(f"shard name {self.path.name!r} must not start with '.' or '_'")
        if self.path.exists() and not overwrite:
            raise ShardError(f"{self.path} already exists")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.row_group_bytes = row_group_bytes
        self.update_manifest = update_manifest
        self.merge_manifest = merge_manifest
        schema = shard_schema()
        extra = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
        # Field descriptions live in schemas/arrow.py and docs; the file keeps types and version
        # (nested descriptions alone were a third of the footer of a 175 KB shard).
        self.schema = pa.schema(
            [_without_descriptions(f) for f in schema], metadata={**schema.metadata, **extra}
        )
        self._trace_schema = trace_schema()
        self._tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}{TEMP_MARK}{uuid.uuid4().hex}")
        self._file = _HashingFile(self._tmp)
        try:
            self._writer = pq.ParquetWriter(
                self._file,
                self.schema,
                compression="zstd",
                compression_level=compression_level,
                use_dictionary=DICTIONARY_COLUMNS,
                column_encoding=PLAIN_COLUMNS,
                write_statistics=STATISTICS_COLUMNS,
                write_page_checksum=True,
            )
        except BaseException:
            self._file.close()
            self._tmp.unlink()
            raise
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self.rows = 0
        self.events = 0
        self.info: ShardInfo | None = None

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Add trace rows; a row group is written each time ~row_group_bytes (in memory) gather."""
        if self.info is not None:
            raise ShardError(f"{self.path} is already closed")
        problems = same_fields(batch.schema, self._trace_schema)
        if problems:
            # Plain strings where the schema has dictionaries (e.g. rows that went through
            # pandas or `datasets`) are converted; anything else is a real mismatch.
            try:
                batch = batch.select(self._trace_schema.names).cast(self._trace_schema)
            except (KeyError, ValueError, pa.ArrowException) as e:
                raise ShardError(f"batch does not match the trace schema: {'; '.join(problems)}") from e
        if batch.num_rows == 0:
            return
        batch = elide_event_sources(batch).cast(self.schema)
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        self.events += int(pc.sum(batch.column("n_events")).as_py() or 0)
        if self._pending_bytes >= self.row_group_bytes:
            self._flush_row_group()

    def write_batches(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.write_batch(batch)

    def _flush_row_group(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending, self._pending_bytes = [], 0

    def close(self) -> ShardInfo:
        """Finish the file, fsync it, rename it into place and record it in the manifest."""
        if self.info is not None:
            return self.info
        try:
            self._flush_row_group()
            self._writer.close()
            sha256 = self._file.sync_and_close()
            written = self._tmp.stat()
            if self.commit_check is not None:
                self.commit_check()  # e.g. raises when another writer took over this shard
            os.replace(self._tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self.info = ShardInfo(
            file=self.path.name,
            rows=self.rows,
            events=self.events,
            bytes=written.st_size,
            sha256=sha256,
            schema_version=SCHEMA_VERSION,
            created_at=time.time(),
        )
        if self.update_manifest:
            record_shard(self.path.parent, self.info, merge=self.merge_manifest)
            self.info = _settle_entry(self.path, self.info, (written.st_dev, written.st_ino), self.merge_manifest)
        return self.info

    def abort(self) -> None:
        """Drop the temporary file; nothing appears under the final name."""
        with contextlib.suppress(Exception):
            self._writer.close()
        try:
            self._file.close()  # flushes: on a full disk that fails again (the error being handled says why)
        except OSError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# How often a writer re-describes a shard that other writers of the same name keep replacing.
SETTLE_TRIES = 10


def _settle_entry(path: Path, info: ShardInfo, ours: tuple[int, int], merge: bool) -> ShardInfo:
    """Make the manifest entry just written describe the file now under `path`.

    Two writers of one shard (a worker that was frozen, declared dead and woke up, and the retry of
    its unit) can interleave: A renames its file into place, B renames its own over it and records
    it, then A records its entry, which no longer describes the file on disk (another size and
    sha256: the shard reads as corrupt). The writer that recorded last finds out here (the file is
    not the one it renamed) and records the file that is there instead; a writer that renames after
    that records its own entry later, and checks in turn. `ours`: (device, inode) of our file."""
    for _ in range(SETTLE_TRIES):
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                if (stat.st_dev, stat.st_ino) == ours:
                    return info
                logger.warning("%s was replaced by another writer meanwhile: recording that one", path)
                ours = (stat.st_dev, stat.st_ino)
                info = _describe(f, path.name, stat.st_size)
        except FileNotFoundError:
            return info  # removed meanwhile: the entry names a missing file, as for any removed shard
        record_shard(path.parent, info, merge=merge)
    raise ShardError(f"{path} keeps being replaced by other writers: its manifest entry may not describe it")


def _describe(f: Any, name: str, size: int) -> ShardInfo:
    """The manifest entry of the shard open as `f` (read from its start)."""
    sha = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        sha.update(chunk)
    f.seek(0)
    table = pq.read_table(f, columns=["n_events"])
    version = schema_version_of(table.schema.metadata)
    return ShardInfo(
        file=name,
        rows=table.num_rows,
        events=int(pc.sum(table.column("n_events")).as_py() or 0),
        bytes=size,
        sha256=sha.hexdigest(),
        schema_version=SCHEMA_VERSION if version is None else version,
        created_at=time.time(),
    )


def write_shard(
    path: str | os.PathLike[str], batches: Iterable[pa.RecordBatch], **options: Any
) -> ShardInfo:
    """Write `batches` as one shard at `path` (see ShardWriter for the options)."""
    with ShardWriter(path, **options) as writer:
        writer.write_batches(batches)
    assert writer.info is not None
    return writer.info


def remove_stale_temporaries(directory: str | os.PathLike[str], older_than_s: float = 3600.0) -> list[Path]:
    """Delete temporary files that killed writers left in `directory` (and its manifest entries).

    Only files older than `older_than_s` go, so that writers still running are left alone.
    """
    directory = Path(directory)
    removed = []
    cutoff = time.time() - older_than_s
    for folder in (directory, directory / MANIFEST_ENTRIES_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(TEMP_PREFIX) and TEMP_MARK in path.name and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path)
    return removed


# --- the manifest: one entry file per shard (no write conflicts) plus a merged view -------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / MANIFEST_LOCK, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def record_shard(directory: str | os.PathLike[str], info: ShardInfo, merge: bool = True) -> None:
    """Add a shard's entry to the directory's manifest (safe with concurrent writers); `merge`:
    also rebuild the merged `_manifest.json` (it reads every entry: see ShardWriter)."""
    directory = Path(directory)
    entries = directory / MANIFEST_ENTRIES_DIR
    entries.mkdir(exist_ok=True)
    payload = json.dumps(info.to_json(), sort_keys=True).encode()
    atomic_write_bytes(entries / f"{info.file}.json", payload)
    if merge:
        rebuild_manifest(directory)


def rebuild_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Rewrite _manifest.json from the per-shard entries, under a lock; return it."""
    directory = Path(directory)
    with _locked(directory):
        shards = sorted(read_manifest_entries(directory).values(), key=lambda s: s.file)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "shards": [s.to_json() for s in shards],
            "rows": sum(s.rows for s in shards),
            "events": sum(s.events for s in shards),
            "bytes": sum(s.bytes for s in shards),
        }
        atomic_write_bytes(directory / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    return manifest


def _fs_and_dir(
    directory: str | os.PathLike[str], filesystem: pafs.FileSystem | None
) -> tuple[pafs.FileSystem, str]:
    if filesystem is None:
        return pafs.LocalFileSystem(), os.path.abspath(directory)
    return filesystem, os.fspath(directory).rstrip("/")


def _listing(fs: pafs.FileSystem, directory: str) -> list[str]:
    selector = pafs.FileSelector(directory, allow_not_found=True)
    return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def read_manifest_entries(
    directory: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
) -> dict[str, ShardInfo]:
    """file name -> ShardInfo from the per-shard entries (the authoritative part of the manifest)."""
    fs, directory = _fs_and_dir(directory, filesystem)
    entries_dir = f"{directory}/{MANIFEST_ENTRIES_DIR}"
    found: dict[str, ShardInfo] = {}
    for entry in _listing(fs, entries_dir):
        name = entry.rsplit("/", 1)[-1]
        if name.startswith(TEMP_PREFIX) or not name.endswith(".json"):
            continue
        try:
            info = ShardInfo.from_json(json.loads(_read_bytes(fs, entry)))
        except (ValueError, KeyError, TypeError) as e:
            raise ShardError(f"manifest entry {entry} is unreadable: {e}") from e
        found[info.file] = info
    return found


def read_manifest(
    directory: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
) -> dict[str, ShardInfo] | None:
    """The directory's manifest (entries merged over _manifest.json), or None if it has none."""
    fs, directory = _fs_and_dir(directory, filesystem)
    merged = f"{directory}/{MANIFEST_NAME}"
    shards: dict[str, ShardInfo] = {}
    has_merged = fs.get_file_info(merged).type == pafs.FileType.File
    if has_merged:
        try:
            data = json.loads(_read_bytes(fs, merged))
            for item in data["shards"]:
                info = ShardInfo.from_json(item)
                shards[info.file] = info
        except (ValueError, KeyError, TypeError) as e:
            raise ShardError(f"{merged} is unreadable: {e}") from e
    entries = read_manifest_entries(directory, fs)
    if not has_merged and not entries:
        return None
    shards.update(entries)
    return shards


def schema_version_of(metadata: Mapping[bytes, bytes] | None) -> int | None:
    """The schema version a Parquet file's key-value metadata records, or None."""
    if not metadata or SCHEMA_VERSION_KEY not in metadata:
        return None
    try:
        return int(metadata[SCHEMA_VERSION_KEY])
    except ValueError:
        return None
