"""Streaming conversion of the tracer's JSON Lines into Arrow record batches (bounded memory)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from schemas.arrow import SCHEMA_VERSION, trace_schema
from schemas.errors import StreamFormatError
from schemas.ids import trace_id
from schemas.stream import EVENT_KINDS, LIMIT_KEYS, NOT_STORED, STATUSES, STREAM_FORMAT, TRACE_KEYS

logger = logging.getLogger(__name__)

# The row fields a stream object lacks: `source` and `image` are required, `trace_id` is derived.
Context = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]]

DEFAULT_BATCH_BYTES = 8 << 20
DEFAULT_BATCH_ROWS = 4096

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (float, int),
    "object": (dict,),
    "array": (list,),
}


# (key, spec, accepted types, nullable, bool refused) for each key: worked out once, not per row
_KeyCheck = tuple[str, str, tuple[type, ...], bool, bool]


def _key_checks(keys: Mapping[str, str]) -> tuple[_KeyCheck, ...]:
    return tuple(
        (key, spec, _JSON_TYPES[spec.rstrip("?")], spec.endswith("?"), spec != "bool") for key, spec in keys.items()
    )


_TRACE_CHECKS = _key_checks(TRACE_KEYS)
_LIMIT_CHECKS = _key_checks(LIMIT_KEYS)


def _check_types(obj: Mapping[str, Any], checks: tuple[_KeyCheck, ...], what: str) -> None:
    for key, spec, types, nullable, no_bool in checks:
        try:
            value = obj[key]
        except KeyError:
            raise StreamFormatError(f"{what} lacks key {key!r}") from None
        if value is None:
            if not nullable:
                raise StreamFormatError(f"{what} key {key!r} is null")
        elif not isinstance(value, types) or (no_bool and isinstance(value, bool)):
            raise StreamFormatError(f"{what} key {key!r} is {type(value).__name__}, expected {spec}")


def check_stream_object(obj: Any) -> None:
    """Raise StreamFormatError unless `obj` is a trace object of stream version 1 (top level)."""
    if not isinstance(obj, dict):
        raise StreamFormatError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != STREAM_FORMAT:
        raise StreamFormatError(f"format is {obj.get('format')!r}, expected {STREAM_FORMAT!r}")
    missing = [k for k in TRACE_KEYS if k not in obj]
    if missing:
        raise StreamFormatError(f"trace lacks keys {missing}")
    _check_types(obj, _TRACE_CHECKS, "trace")
    _check_types(obj["limits"], _LIMIT_CHECKS, "limits")
    if obj["status"] not in STATUSES:
        raise StreamFormatError(f"unknown status {obj['status']!r}")
    if obj["n_events"] != len(obj["events"]):
        raise StreamFormatError(f"n_events is {obj['n_events']} but there are {len(obj['events'])} events")


def stream_object_to_row(obj: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """One trace row (Arrow schema shape) from a checked stream object and its context fields."""
    row = {k: v for k, v in obj.items() if k in TRACE_KEYS and k not in NOT_STORED}
    for key in ("source", "image"):
        if not isinstance(extra.get(key), str):
            raise StreamFormatError(f"context gives no string {key!r} for program {obj['program_id']!r}")
    row["source"] = extra["source"]
    row["image"] = extra["image"]
    row["schema_version"] = SCHEMA_VERSION
    row["trace_id"] = extra.get("trace_id") or trace_id(
        obj["program_id"],
        extra["source"],
        obj["entrypoint"],
        obj["input"],
        extra["image"],
        obj["backend"],
        obj["tracer_version"],
        extra.get("modules"),
        extra.get("files"),
    )
    row["limits"] = {k: obj["limits"][k] for k in LIMIT_KEYS}
    events = []
    for number, ev in enumerate(obj["events"]):
        try:
            ev = dict(ev)
            ev["locals"] = [{"name": n, "value": v} for n, v in ev["locals"].items()]
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise StreamFormatError(f"event {number} is not an object with a 'locals' object ({e})") from e
        events.append(ev)
    row["events"] = events
    return row


def row_to_stream_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """The stream object a trace row came from (the inverse of stream_object_to_row)."""
    obj: dict[str, Any] = {"format": STREAM_FORMAT}
    for key in TRACE_KEYS:
        if key in NOT_STORED:
            continue
        obj[key] = row[key]
    obj["limits"] = dict(row["limits"])
    obj["events"] = [
        {**ev, "locals": {loc["name"]: loc["value"] for loc in ev["locals"]}} for ev in row["events"]
    ]
    return obj


def _check_batch(batch: pa.RecordBatch, first_line: int) -> None:
    """Vectorised checks pyarrow does not do: nulls in required nested fields, unknown kinds."""
    events = batch.column("events").values
    for name in ("kind", "lineno", "source", "function", "file", "depth", "frame_id", "thread_id", "locals"):
        if events.field(name).null_count:
            raise StreamFormatError(f"an event in lines {first_line}.. lacks {name!r} or has it null")
    kinds = events.field("kind")
    unknown = set(kinds.dictionary.to_pylist()) - set(EVENT_KINDS)
    if unknown:
        raise StreamFormatError(f"unknown event kind(s) {sorted(unknown)} in lines {first_line}..")
    if events.field("locals").values.field("name").null_count:
        raise StreamFormatError(f"a local without a name in lines {first_line}..")


def rows_to_batch(rows: list[dict[str, Any]], first_line: int = 1) -> pa.RecordBatch:
    """A record batch of the trace schema from trace rows."""
    try:
        batch = pa.RecordBatch.from_pylist(rows, schema=trace_schema())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StreamFormatError(f"a value has the wrong type in lines {first_line}..: {e}") from e
    except UnicodeEncodeError as e:
        raise StreamFormatError(f"a string is not valid Unicode in lines {first_line}..: {e}") from e
    _check_batch(batch, first_line)
    return batch


def _flush(
    rows: list[dict[str, Any]],
    numbers: list[int],
    on_error: Callable[[StreamFormatError], None] | None,
) -> Iterator[pa.RecordBatch]:
    try:
        yield rows_to_batch(rows, numbers[0])
        return
    except StreamFormatError:
        pass
    # Find the bad rows one by one, report them with their line, and keep the others.
    good = []
    for row, number in zip(rows, numbers):
        try:
            rows_to_batch([row], number)
        except StreamFormatError as e:
            located = StreamFormatError(str(e).replace(f" in lines {number}..", ""), number)
            if on_error is None:
                raise located from e.__cause__
            on_error(located)
            continue
        good.append(row)
    if good:
        yield rows_to_batch(good, numbers[0])


def stream_to_batches(
    lines: Iterable[str | bytes],
    *,
    context: Context,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_error: Callable[[StreamFormatError], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of trace rows from tracer stream lines, holding at most ~batch_bytes of input.

    `context` gives the row fields the stream lacks (`source`, `image`, optionally `trace_id`):
    a mapping shared by every trace, or a function of the stream object (e.g. a lookup of the
    program's source by `program_id`). A bad line raises StreamFormatError, or is passed to
    `on_error` and skipped when that is given. Blank lines are ignored.
    """
    row_context = context if callable(context) else (lambda _obj: context)
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    pending = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise StreamFormatError(f"not JSON ({e})") from e
            check_stream_object(obj)
            row = stream_object_to_row(obj, row_context(obj))
        except StreamFormatError as e:
            located = StreamFormatError(str(e), number)
            if on_error is None:
                raise located from e
            on_error(located)
            continue
        rows.append(row)
        numbers.append(number)
        pending += len(line)
        if pending >= batch_bytes or len(rows) >= batch_rows:
            yield from _flush(rows, numbers, on_error)
            rows, numbers, pending = [], [], 0
    if rows:
        yield from _flush(rows, numbers, on_error)
