"""The Arrow schemas of a trace row (version 1) and of a program (the harvest input)."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"worldtrace.schema_version"
SCHEMA_NAME_KEY = b"worldtrace.schema"

# Repetitive strings are dictionary-encoded in memory (Parquet dictionary-encodes every column on disk).
DICT_STRING = pa.dictionary(pa.int32(), pa.string())


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


def _list(item: pa.DataType) -> pa.DataType:
    # "element" is the name Parquet readers give list items, so a schema read back compares equal.
    return pa.list_(pa.field("element", item, nullable=False))


LOCAL_TYPE = pa.struct(
    [
        _field("name", DICT_STRING, "variable name", nullable=False),
        _field("value", pa.string(), "rendered value; null when the variable was deleted"),
    ]
)

EVENT_TYPE = pa.struct(
    [
        _field("kind", DICT_STRING, "call, line, return or exception", nullable=False),
        _field("lineno", pa.int32(), "1-based line number in `file`", nullable=False),
        _field("source", DICT_STRING, "text of that source line, no trailing newline", nullable=False),
        _field("function", DICT_STRING, "qualname of the code object", nullable=False),
        _field("file", DICT_STRING, "file name as the code object has it", nullable=False),
        _field("depth", pa.int32(), "call depth in this thread, 0 for the entry frame", nullable=False),
        _field("frame_id", pa.int32(), "frame activation id, 0 for the entry frame", nullable=False),
        _field("thread_id", pa.int32(), "per-trace thread number, 0 for the first", nullable=False),
        _field(
            "locals",
            _list(LOCAL_TYPE),
            "call: every argument; line: variables new or changed since the previous event "
            "of the same frame_id; return/exception: empty",
            nullable=False,
        ),
        _field("arg", pa.string(), "return: rendered value; exception: 'Type: message'"),
    ]
)

SHARD_EVENT_TYPE = pa.struct(
    [
        f.with_nullable(True).with_metadata(
            {"description": "text of that source line, no trailing newline; null in a shard where it "
             "is line `lineno` of the row's `source` split at \\n"}
        )
        if f.name == "source"
        else f
        for f in EVENT_TYPE
    ]
)

LIMITS_TYPE = pa.struct(
    [
        _field("max_events", pa.int64(), "0 = unlimited"),
        _field("max_value_chars", pa.int64(), "0 = unlimited"),
        _field("max_items", pa.int64(), "0 = unlimited"),
        _field("max_depth", pa.int64(), "0 = unlimited"),
        _field("max_output_bytes", pa.int64(), "0 = unlimited"),
        _field("timeout_s", pa.float64(), "0 = not set"),
        _field("memory_mb", pa.int64(), "0 = not set"),
    ]
)

# Columns that come from the harvest job, not from the tracer stream.
CONTEXT_COLUMNS = ("trace_id", "schema_version", "source", "image")


def trace_schema() -> pa.Schema:
    """Arrow schema of one trace row, version SCHEMA_VERSION."""
    fields = [
        _field("trace_id", pa.string(), "stable id (schemas.ids.trace_id)", nullable=False),
        _field("schema_version", pa.int16(), "version of this schema", nullable=False),
        _field("program_id", pa.string(), "the program's id", nullable=False),
        _field("source", pa.string(), "the program text", nullable=False),
        _field("entrypoint", pa.string(), "function called; null for scripts"),
        _field("input", pa.string(), "argument text of the call; a script's stdin text (null: none)"),
        _field("image", DICT_STRING, "sandbox image the program ran in", nullable=False),
        _field("python_version", DICT_STRING, "platform.python_version() in the sandbox", nullable=False),
        _field("backend", DICT_STRING, "monitoring or settrace", nullable=False),
        _field("backend_reason", DICT_STRING, "why auto did not choose monitoring"),
        _field("tracer_version", DICT_STRING, "tracer.__version__", nullable=False),
        _field("status", DICT_STRING, "ok, exception, timeout, memory, crashed, error", nullable=False),
        _field("return_value", pa.string(), "rendered return value"),
        _field("exception_type", DICT_STRING, "qualified name of the escaping exception"),
        _field("exception_message", pa.string(), "str() of that exception"),
        _field("tracer_error", pa.string(), "what went wrong when the tracer failed"),
        _field("truncated", pa.bool_(), "a recording limit was hit", nullable=False),
        _field("truncated_reason", DICT_STRING, "max_events, max_trace_bytes, memory, interrupted or events_lost"),
        _field("stdout", pa.string(), "program stdout (capped)", nullable=False),
        _field("stderr", pa.string(), "program stderr (capped)", nullable=False),
        _field("output_truncated", pa.bool_(), "stdout or stderr hit the cap", nullable=False),
        _field("wall_time_s", pa.float64(), "wall time of the traced run", nullable=False),
        _field("n_events", pa.int64(), "len(events)", nullable=False),
        _field("limits", LIMITS_TYPE, "recording and sandbox budgets in force", nullable=False),
        _field("events", _list(EVENT_TYPE), "events in execution order", nullable=False),
    ]
    return pa.schema(
        fields,
        metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), SCHEMA_NAME_KEY: b"trace"},
    )


def shard_schema() -> pa.Schema:
    """Arrow schema of a trace row as a shard stores it: `events.source` may be null.

    A shard leaves out each event's source line that line `lineno` of the row's `source` gives
    (schemas.event_sources); readers restore it, so they hand out trace_schema() rows.
    """
    schema = trace_schema()
    at = schema.get_field_index("events")
    events = schema.field(at)
    return schema.set(at, events.with_type(_list(SHARD_EVENT_TYPE)))


def program_schema() -> pa.Schema:
    """Arrow schema of one program to trace (a harvest input row)."""
    fields = [
        _field("program_id", pa.string(), "unique id of the program", nullable=False),
        _field("source", pa.string(), "the program text", nullable=False),
        _field("entrypoint", pa.string(), "function to call; null to run as a script"),
        _field("input", pa.string(), "argument text of the call (CRUXEval style)"),
        _field("image", DICT_STRING, "sandbox image to run in; null for the job default"),
        _field("origin", DICT_STRING, "corpus or repository the program comes from"),
        _field("expected_output", pa.string(), "known result, if the corpus has one"),
    ]
    return pa.schema(
        fields,
        metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), SCHEMA_NAME_KEY: b"program"},
    )


def plain_strings(type_: pa.DataType) -> pa.DataType:
    """The type with dictionary-encoded strings replaced by plain ones, at any depth (how a published
    dataset stores them: Parquet dictionary-encodes them on disk anyway, and plain types load in every tool)."""
    if pa.types.is_dictionary(type_):
        return plain_strings(type_.value_type)
    if pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(plain_strings(type_.value_type)))
    if pa.types.is_struct(type_):
        return pa.struct([type_.field(i).with_type(plain_strings(type_.field(i).type)) for i in range(type_.num_fields)])
    return type_


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with every dictionary-encoded string stored plain (plain_strings), metadata kept."""
    return pa.schema([f.with_type(plain_strings(f.type)) for f in schema], metadata=schema.metadata)


def same_fields(actual: pa.Schema, expected: pa.Schema) -> list[str]:
    """Differences between two schemas' fields (names, types, nullability), as messages."""
    problems: list[str] = []
    expected_by_name = {f.name: f for f in expected}
    actual_by_name = {f.name: f for f in actual}
    for name in expected_by_name.keys() - actual_by_name.keys():
        problems.append(f"missing column {name!r}")
    for name in actual_by_name.keys() - expected_by_name.keys():
        problems.append(f"unexpected column {name!r}")
    for name, want in expected_by_name.items():
        got = actual_by_name.get(name)
        if got is None:
            continue
        if not got.type.equals(want.type):
            problems.append(f"column {name!r} has type {got.type}, expected {want.type}")
        elif got.nullable != want.nullable:
            problems.append(f"column {name!r} nullable={got.nullable}, expected {want.nullable}")
    return sorted(problems)
