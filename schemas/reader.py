"""Reading shards: traces from a file, a directory or a glob, local or any pyarrow.fs / fsspec URI."""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.arrow import same_fields, trace_schema
from schemas.errors import ShardError

SHARD_SUFFIX = ".parquet"
DEFAULT_BATCH_ROWS = 256
_GLOB_CHARS = "*?["


def _hidden(relative: str) -> bool:
    """Temporary files, the manifest and other bookkeeping start with '.' or '_'."""
    return any(part.startswith((".", "_")) for part in PurePosixPath(relative).parts)


def filesystem_for(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a local path or URI, and the path inside it."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    try:
        return pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec comes with datasets
        raise ShardError(f"{path}: pyarrow cannot open this URI and fsspec is not installed") from e
    try:
        fs, inner = fsspec.core.url_to_fs(path)
    except (ValueError, ImportError) as e:
        raise ShardError(f"{path}: unsupported URI ({e})") from e
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def resolve_shards(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and sorted shard paths that `path` (file, directory or glob) names."""
    text = os.fspath(path)
    fs, inner = filesystem_for(text)
    if any(c in inner for c in _GLOB_CHARS):
        root = inner
        while any(c in root for c in _GLOB_CHARS):
            root = root.rsplit("/", 1)[0]
        if isinstance(fs, pafs.LocalFileSystem):
            matches = globlib.glob(inner, recursive=True)
        else:
            selector = pafs.FileSelector(root or "/", recursive=True, allow_not_found=True)
            matches = [i.path for i in fs.get_file_info(selector) if fnmatch.fnmatch(i.path, inner)]
        files = [
            m
            for m in matches
            if fs.get_file_info(m).type == pafs.FileType.File and not _hidden(m[len(root) :])
        ]
        if not files:
            raise ShardError(f"{text}: no file matches")
        return fs, sorted(files)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise ShardError(f"{text}: no such file or directory")
    if info.type == pafs.FileType.File:
        return fs, [inner]
    selector = pafs.FileSelector(inner, recursive=True)
    files = []
    for item in fs.get_file_info(selector):
        relative = item.path[len(inner.rstrip("/")) + 1 :]
        if item.type == pafs.FileType.File and item.path.endswith(SHARD_SUFFIX) and not _hidden(relative):
            files.append(item.path)
    return fs, sorted(files)


def open_shard(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    """A ParquetFile for one shard, or ShardError saying why it is not one."""
    try:
        return pq.ParquetFile(fs.open_input_file(path), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: not a readable Parquet shard ({e})") from e


def iter_batches(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Record batches of trace rows from every shard `path` names, one row group at a time."""
    fs, files = resolve_shards(path)
    expected = trace_schema()
    for file in files:
        shard = open_shard(fs, file)
        if columns is None:
            problems = same_fields(shard.schema_arrow, expected)
            if problems:
                raise ShardError(f"{file}: not the trace schema: {'; '.join(problems)}")
        try:
            # One row group at a time: each has its own dictionaries, and pyarrow cannot build a
            # nested batch whose dictionary columns span two of them.
            for group in range(shard.num_row_groups):
                yield from shard.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group])
        except (OSError, pa.ArrowException) as e:
            raise ShardError(f"{file}: unreadable ({e})") from e


def iter_traces(
    path: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Trace rows as dicts (Arrow schema shape: events[i]['locals'] is a list of name/value)."""
    for batch in iter_batches(path, columns=columns):
        yield from batch.to_pylist()


def read_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Any = None,
) -> pa.Table:
    """All trace rows `path` names as one table (`filters` as in pyarrow.parquet.read_table)."""
    fs, files = resolve_shards(path)
    if not files:
        return trace_schema().empty_table()
    try:
        return pq.read_table(
            files, filesystem=fs, columns=list(columns) if columns else None, filters=filters
        )
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: unreadable ({e})") from e


# --- the full-state view of locals ---------------------------------------------------------------


def _pairs(locals_: Mapping[str, str | None] | Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, Any]]:
    if isinstance(locals_, Mapping):
        return locals_.items()
    return ((item["name"], item["value"]) for item in locals_)


def iter_full_locals(events: Sequence[Mapping[str, Any]]) -> Iterator[dict[str, str]]:
    """For each event, every variable of its frame with its value at that event (deltas folded).

    Works on stream events (locals as a dict) and on rows read back (a list of name/value).
    """
    states: dict[int, dict[str, str]] = {}
    for event in events:
        state = states.setdefault(event["frame_id"], {})
        for name, value in _pairs(event["locals"]):
            if value is None:
                state.pop(name, None)
            else:
                state[name] = value
        yield dict(state)


def full_locals(events: Sequence[Mapping[str, Any]], index: int) -> dict[str, str]:
    """Every variable of event `index`'s frame, with its value at that event."""
    if not -len(events) <= index < len(events):
        raise IndexError(f"event {index} of {len(events)}")
    index %= len(events)
    frame_id = events[index]["frame_id"]
    state: dict[str, str] = {}
    for event in events[: index + 1]:
        if event["frame_id"] != frame_id:
            continue
        for name, value in _pairs(event["locals"]):
            if value is None:
                state.pop(name, None)
            else:
                state[name] = value
    return state


def shard_paths(path: str | os.PathLike[str]) -> list[str]:
    """The shard files `path` names (local paths or URIs' inner paths)."""
    return resolve_shards(path)[1]


__all__ = [
    "full_locals",
    "iter_batches",
    "iter_full_locals",
    "iter_traces",
    "open_shard",
    "read_table",
    "resolve_shards",
    "shard_paths",
]
