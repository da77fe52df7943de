"""Reading shards: traces from a file, a directory or a glob, local or any pyarrow.fs / fsspec URI."""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.arrow import plain_schema, plain_strings, same_fields, shard_schema, trace_schema
from schemas.errors import ShardError
from schemas.event_sources import restore_event_sources

SHARD_SUFFIX = ".parquet"
DEFAULT_BATCH_ROWS = 256
_GLOB_CHARS = "*?["
_Rows = TypeVar("_Rows", pa.RecordBatch, pa.Table)


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
            matches = _local_glob(inner, root)
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
    if isinstance(fs, pafs.LocalFileSystem):
        listed = _local_files(inner)
    else:
        try:
            listed = [i.path for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
                      if i.type == pafs.FileType.File]
        except OSError as e:
            raise ShardError(f"{text}: cannot list it ({e})") from e
    files = []
    for path in listed:
        relative = path[len(inner.rstrip("/")) + 1 :]
        if path.endswith(SHARD_SUFFIX) and not _hidden(relative):
            files.append(path)
    return fs, sorted(files)


def _local_files(root: str) -> list[str]:
    """Every file under the local folder `root`, following linked folders but entering each real
    folder once (pyarrow's listing follows a link back up, `ln -s .. up`, until the path is too
    long: every shard read ~40 times, and with two such links an exponential walk)."""

    def refuse(error: OSError) -> None:
        raise ShardError(f"{root}: cannot list {error.filename} ({error.strerror or error})")

    files: list[str] = []
    entered: set[str] = set()
    for folder, subfolders, names in os.walk(root, onerror=refuse, followlinks=True):
        real = os.path.realpath(folder)
        if real in entered:
            subfolders.clear()
            continue
        entered.add(real)
        # real folders before links, so that a folder also linked is listed under its own name
        subfolders.sort(key=lambda name: (os.path.islink(os.path.join(folder, name)), name))
        files += [path for path in (os.path.join(folder, n) for n in names) if os.path.isfile(path)]
    return _once(files)


def _once(paths: Iterable[str]) -> list[str]:
    """`paths` with each file once: a file with several names (a link to it) under the name that
    is not a link where it has one, else under its first."""
    chosen: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real not in chosen or (os.path.islink(chosen[real]) and not os.path.islink(path)):
            chosen[real] = path
    return list(chosen.values())


def _local_glob(pattern: str, root: str) -> list[str]:
    """The local paths that `pattern` matches, each file once. Python's glob follows a linked
    folder back up (`ln -s .. up`) and lists every shard under it again, ~40 times over one
    such link (`DIR/**/*.parquet`) and without end over two; a pattern with `**` is therefore
    matched against the loop-safe listing of `root`, and any other is deduplicated by real path."""
    if "**" in pattern:
        matcher = _glob_regex(pattern)
        return [path for path in _local_files(root or "/") if matcher.fullmatch(path)]
    return _once(globlib.glob(pattern))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regular expression for a glob pattern as glob.glob(recursive=True) reads it: `**` as a
    whole path segment matches any number of folders, `*` and `?` stay within a segment and do
    not match a leading dot."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        segment_start = i == 0 or pattern[i - 1] == "/"
        if segment_start and pattern.startswith("**/", i):
            parts.append(r"(?:[^/.][^/]*/)*")
            i += 3
        elif segment_start and pattern[i:] == "**":
            parts.append(r"(?:[^/.][^/]*(?:/[^/.][^/]*)*)?")
            i += 2
        elif pattern[i] in "*?":
            lead = r"(?!\.)" if segment_start else ""
            parts.append(lead + ("[^/]*" if pattern[i] == "*" else "[^/]"))
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            parts.append("[" + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


class TraceShardFile(pq.ParquetFile):
    """A ParquetFile whose reads give trace rows whole: events' source lines restored.

    A shard leaves out the `events.source` lines that its `source` column gives
    (schemas.event_sources); every read of `events` here reads `source` too and fills them in.
    `schema_arrow` stays the stored schema (shard_schema()).
    """

    def _plan(self, columns: Sequence[str] | None) -> tuple[list[str] | None, bool]:
        if columns is None:
            return None, False
        wanted = list(columns)
        extra = "events" in wanted and "source" not in wanted
        return wanted + ["source"] if extra else wanted, extra

    def _restored(self, rows: _Rows, drop_source: bool) -> _Rows:
        names = rows.schema.names
        if "events" in names and "source" in names:
            rows = restore_event_sources(rows)
        if drop_source:
            rows = rows.drop_columns(["source"])
        return rows

    def iter_batches(self, batch_size: int = 65536, row_groups: Any = None, columns: Any = None,
                     use_threads: bool = True, use_pandas_metadata: bool = False) -> Iterator[pa.RecordBatch]:
        read, extra = self._plan(columns)
        for batch in super().iter_batches(batch_size=batch_size, row_groups=row_groups, columns=read,
                                          use_threads=use_threads, use_pandas_metadata=use_pandas_metadata):
            yield self._restored(batch, extra)

    def read_row_groups(self, row_groups: Any, columns: Any = None, use_threads: bool = True,
                        use_pandas_metadata: bool = False) -> pa.Table:
        read, extra = self._plan(columns)
        table = super().read_row_groups(row_groups, columns=read, use_threads=use_threads,
                                        use_pandas_metadata=use_pandas_metadata)
        return self._restored(table, extra)

    def read_row_group(self, i: int, columns: Any = None, use_threads: bool = True,
                       use_pandas_metadata: bool = False) -> pa.Table:
        return self.read_row_groups([i], columns=columns, use_threads=use_threads,
                                    use_pandas_metadata=use_pandas_metadata)

    def read(self, columns: Any = None, use_threads: bool = True, use_pandas_metadata: bool = False) -> pa.Table:
        read, extra = self._plan(columns)
        table = super().read(columns=read, use_threads=use_threads, use_pandas_metadata=use_pandas_metadata)
        return self._restored(table, extra)


def open_shard(fs: pafs.FileSystem, path: str) -> TraceShardFile:
    """A ParquetFile for one shard (reads restore events' source lines), or ShardError saying why it is not one."""
    try:
        return TraceShardFile(fs.open_input_file(path), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: not a readable Parquet shard ({e})") from e


def schema_problems(schema: pa.Schema) -> list[str]:
    """How a shard's stored schema differs from shard_schema(); none for a schema that differs
    only in ways every reader handles: a shard written before events' source lines were left
    out (trace_schema()), or a published dataset's file (strings plain, not dictionary-encoded)."""
    problems = same_fields(schema, shard_schema())
    if not problems:
        return []
    plain = plain_schema(schema)
    if any(not same_fields(plain, plain_schema(expected)) for expected in (shard_schema(), trace_schema())):
        return []
    return problems


def trace_types(schema: pa.Schema) -> pa.Schema | None:
    """`schema` with every trace column stored plain (a published dataset's strings) given its
    dictionary type in trace_schema(); None when no column needs it."""
    expected = trace_schema()
    target = None
    for at, stored in enumerate(schema):
        if stored.name not in expected.names:
            continue
        want = expected.field(stored.name).type
        if not stored.type.equals(want) and plain_strings(stored.type).equals(plain_strings(want)):
            target = (schema if target is None else target).set(at, stored.with_type(want))
    return target


def with_trace_types(rows: _Rows) -> _Rows:
    """`rows` cast to the trace schema's types (see trace_types), so every file gives the same."""
    target = trace_types(rows.schema)
    return rows if target is None else rows.cast(target)


def iter_batches(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Record batches of trace rows from every shard `path` names, one row group at a time
    (a published dataset's plain strings cast to the trace schema's dictionary types)."""
    fs, files = resolve_shards(path)
    for file in files:
        shard = open_shard(fs, file)
        if columns is None:
            problems = schema_problems(shard.schema_arrow)
            if problems:
                raise ShardError(f"{file}: not the trace schema: {'; '.join(problems)}")
        try:
            # One row group at a time: each has its own dictionaries, and pyarrow cannot build a
            # nested batch whose dictionary columns span two of them.
            read_as: pa.Schema | None = None  # the batches' schema, and what to cast it to
            target: pa.Schema | None = None
            for group in range(shard.num_row_groups):
                for batch in shard.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group]):
                    if read_as is None or not batch.schema.equals(read_as):  # once, not per batch
                        read_as, target = batch.schema, trace_types(batch.schema)
                    yield batch if target is None else batch.cast(target)
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
    return read_files(fs, files, columns=columns, filters=filters, shown=os.fspath(path))


def read_files(
    fs: pafs.FileSystem,
    files: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    filters: Any = None,
    shown: str | None = None,
) -> pa.Table:
    """The trace rows of some shard `files` of `fs` (as `resolve_shards` lists them), as read_table."""
    if not files:
        return trace_schema().empty_table()
    path = shown or ", ".join(files)
    wanted = list(columns) if columns else None
    read = wanted + ["source"] if wanted and "events" in wanted and "source" not in wanted else wanted
    try:
        table = pq.read_table(list(files), filesystem=fs, columns=read, filters=filters)
        if "events" in table.schema.names and "source" in table.schema.names:
            table = restore_event_sources(table)
        table = with_trace_types(table)
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"{path}: unreadable ({e})") from e
    return table.select(wanted) if wanted else table


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
    "TraceShardFile",
    "full_locals",
    "iter_batches",
    "iter_full_locals",
    "iter_traces",
    "open_shard",
    "read_table",
    "resolve_shards",
    "schema_problems",
    "shard_paths",
    "trace_types",
    "with_trace_types",
]
