"""Croissant 1.0 metadata (croissant.json) generated with mlcroissant from the Arrow schema."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from harvest import __version__ as worldtrace_version

if TYPE_CHECKING:
    import mlcroissant as mlc

    from harvest.publish.dataset import PublishOptions, PublishResult

CROISSANT_1_0 = "http://mlcommons.org/croissant/1.0"
PARQUET = "application/x-parquet"
FILE_SET = "parquet-files"
RECORD_SET = "traces"


def _data_type(type_: pa.DataType) -> Any:
    import mlcroissant as mlc

    if pa.types.is_boolean(type_):
        return mlc.DataType.BOOL
    if pa.types.is_integer(type_):
        return mlc.DataType.INTEGER
    if pa.types.is_floating(type_):
        return mlc.DataType.FLOAT
    return mlc.DataType.TEXT


def _doc(f: pa.Field) -> str:
    return (f.metadata or {}).get(b"description", b"").decode()


def _field(f: pa.Field, parent_id: str, column: str, path: list[str]) -> mlc.Field:
    """A Croissant field for an Arrow field; lists of structs become repeated fields with sub-fields."""
    import mlcroissant as mlc

    field_id = f"{parent_id}/{f.name}"
    repeated = pa.types.is_list(f.type)
    inner = f.type.value_type if repeated else f.type
    transforms = [mlc.Transform(json_path=".".join(path))] if path else []
    source = mlc.Source(file_set=FILE_SET, extract=mlc.Extract(column=column), transforms=transforms)
    if pa.types.is_struct(inner):
        sub_fields = [_field(inner.field(i), field_id, column, [*path, inner.field(i).name]) for i in range(inner.num_fields)]
        return mlc.Field(
            id=field_id, name=f.name, description=_doc(f), repeated=repeated or None,
            sub_fields=sub_fields, source=source if not path else mlc.Source(),
            data_types=[],
        )
    return mlc.Field(
        id=field_id, name=f.name, description=_doc(f), data_types=[_data_type(inner)],
        repeated=repeated or None, source=source,
    )


def _date_published(result: PublishResult) -> datetime:
    """When the data was made, so that publishing the same input twice gives the same bytes:
    $SOURCE_DATE_EPOCH (the reproducible-builds convention) if set, else the end of the latest
    harvest run that made the input, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    finished = []
    for run in result.runs:
        try:
            finished.append(datetime.fromisoformat(str(run.data.get("finished_at")).replace("Z", "+00:00")))
        except ValueError:
            continue
    stamps = [f if f.tzinfo else f.replace(tzinfo=UTC) for f in finished]
    return max(stamps).astimezone(UTC).replace(microsecond=0) if stamps else datetime.now(UTC).replace(microsecond=0)


def croissant_metadata(result: PublishResult, options: PublishOptions, schema: pa.Schema) -> mlc.Metadata:
    import mlcroissant as mlc

    from harvest.publish.dataset import sha256_file

    distribution: list[mlc.FileObject | mlc.FileSet] = []
    for written in (f for files in result.files.values() for f in files):
        relative = written.path.relative_to(result.out).as_posix()
        distribution.append(
            mlc.FileObject(
                id=relative, name=written.path.name, content_url=relative,
                encoding_formats=[PARQUET], sha256=sha256_file(written.path),
                content_size=f"{written.bytes} B",
            )
        )
    distribution.append(
        mlc.FileSet(
            id=FILE_SET, name=FILE_SET, description="Every Parquet file of every split.",
            encoding_formats=[PARQUET],
            includes=["data/*.parquet"],
        )
    )
    fields = [_field(f, RECORD_SET, f.name, []) for f in schema]
    record_set = mlc.RecordSet(
        id=RECORD_SET, name=RECORD_SET, description="One row per trace (one traced run of a program).",
        fields=fields,
    )
    return mlc.Metadata(
        name=options.name,
        description=options.description or "Line-level execution traces of Python programs (worldtrace).",
        license=[options.license],
        url=f"https://huggingface.co/datasets/{options.name}",
        version="1.0.0",
        date_published=_date_published(result),
        keywords=["code", "python", "execution traces", "code world model"],
        cite_as=f"{options.name}, published with worldtrace {worldtrace_version}",
        conforms_to=[CROISSANT_1_0],
        distribution=distribution,
        record_sets=[record_set],
        data_collection=f"Traced with worldtrace {worldtrace_version}: programs run in sandboxes under a line tracer.",
    )


def write_croissant(result: PublishResult, options: PublishOptions, schema: pa.Schema) -> None:
    metadata = croissant_metadata(result, options, schema)
    document = metadata.to_json()
    (result.out / "croissant.json").write_text(
        json.dumps(document, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
