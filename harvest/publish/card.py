"""The dataset card (README.md): YAML front matter for the Hub, then schema, usage, statistics, provenance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from harvest import __version__ as worldtrace_version
from harvest.publish.stats import size_category
from schemas.arrow import SCHEMA_VERSION

if TYPE_CHECKING:
    from harvest.publish.dataset import PublishOptions, PublishResult

TAGS = ["code", "python", "execution-traces", "code-world-model", "worldtrace"]
TASK_CATEGORIES = ["text-generation"]


def front_matter(result: PublishResult, options: PublishOptions, schema: pa.Schema) -> str:
    """The YAML header; `dataset_info.features` comes from the Arrow schema via `datasets`."""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    stats = result.stats
    splits = SplitDict()
    for name, part in stats.splits.items():
        splits.add(SplitInfo(name=name, num_bytes=part.arrow_bytes, num_examples=part.rows))
    info = DatasetInfo(
        features=Features.from_arrow_schema(schema),
        splits=splits,
        download_size=sum(p.bytes for p in stats.splits.values()),
        dataset_size=sum(p.arrow_bytes for p in stats.splits.values()),
    )
    card = DatasetCardData(
        license=options.license,
        language=["code"],
        pretty_name=options.name,
        task_categories=TASK_CATEGORIES,
        tags=TAGS,
        size_categories=[size_category(stats.rows)],
        configs=[
            {
                "config_name": "default",
                "data_files": [
                    {"split": name, "path": f"data/{name}-*.parquet"} for name in result.files
                ],
            }
        ],
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card)
    return f"---\n{card.to_yaml()}\n---\n"


def _type_name(type_: pa.DataType) -> str:
    if pa.types.is_list(type_):
        return f"list<{_type_name(type_.value_type)}>"
    if pa.types.is_struct(type_):
        return "struct"
    return str(type_)


def schema_rows(fields: list[pa.Field] | pa.Schema, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(column path, type, description) for every column and nested field, from the schema's metadata."""
    for f in fields:
        doc = (f.metadata or {}).get(b"description", b"").decode()
        yield prefix + f.name, _type_name(f.type) + ("" if f.nullable else ", not null"), doc
        inner = f.type.value_type if pa.types.is_list(f.type) else f.type
        if pa.types.is_struct(inner):
            marker = "[]." if pa.types.is_list(f.type) else "."
            yield from schema_rows(list(inner), prefix + f.name + marker)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _counter_table(title: str, counts: dict[str, int]) -> list[str]:
    lines = [f"| {title} | traces |", "|---|---:|"]
    lines += [f"| `{_md(k)}` | {v:,} |" for k, v in counts.items()]
    return lines


def _first_split(splits: list[str]) -> str:
    return "train" if "train" in splits else splits[0]


def _data_files_snippet(splits: list[str]) -> list[str]:
    """A commented load_dataset("parquet", data_files=...) call naming every split's files."""
    files = [f'#     "{name}": "path/to/this/folder/data/{name}-*.parquet",' for name in splits]
    return ['# ds = load_dataset("parquet", data_files={', *files, "# })"]


def body(result: PublishResult, options: PublishOptions, schema: pa.Schema) -> str:
    stats = result.stats.to_json()
    ev = stats["events_per_trace"]
    repo = options.name
    lines = [
        f"# {options.name}",
        "",
        options.description
        or (
            "Line-level execution traces of Python programs recorded by worldtrace: for every executed "
            "line, the local "
            "variables of the running frame, plus calls, returns and exceptions, in the spirit of the "
            "execution traces used to train Meta FAIR's Code World Model (CWM)."
        ),
        "",
        "## Splits",
        "",
        "Traces are assigned to splits by a hash of their `program_id`, so all traces of a program are "
        f"in the same split (`{options.splits}`). Exact duplicate traces (same id or same content) were "
        "dropped.",
        "",
        "| split | traces | programs | events | files | bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, part in stats["splits"].items():
        lines.append(
            f"| {name} | {part['rows']:,} | {part['programs']:,} | {part['events']:,} | {part['files']} | {part['bytes']:,} |"
        )
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo}")  # the Hub repo id, or the path of this folder',
        "# or from the files, split by split (a bare data_dir finds only splits named train, test or validation):",
        *_data_files_snippet(list(result.files)),
        f'trace = ds["{_first_split(list(result.files))}"][0]',
        'print(trace["source"])',
        'for event in trace["events"][:5]:',
        '    print(event["kind"], event["lineno"], event["source"], event["locals"])',
        "```",
        "",
        "With DuckDB: `SELECT status, count(*) FROM 'data/*.parquet' GROUP BY status`; with polars: "
        "`pl.scan_parquet('data/*.parquet')`. With worldtrace installed, "
        "`worldtrace inspect data --program ID` steps through a trace in the terminal and "
        "`--format html` writes a self-contained stepper page.",
        "",
        "## How to read a trace",
        "",
        "A row is one run of a program: `source` is the program text, `entrypoint(input)` the call "
        "that was traced (`entrypoint` null for scripts, whose `input` is the text given on their "
        "standard input, if any), `status` how it ended (`ok`, `exception`, `timeout`, "
        "`memory`, `crashed`, `error`), with `return_value` or `exception_type`/`exception_message`.",
        "`events` lists what happened in execution order: `call` (the frame's arguments in `locals`), "
        "`line` (about to run line `lineno` of `file`, whose text is `source`), `return` (`arg` is the "
        "returned value) and `exception` (`arg` is `Type: message`). Values are rendered strings "
        "(`repr`-like, size-limited).",
        "",
        "`locals` holds only the variables that are new or changed since the previous event of the "
        "same `frame_id` (a null value: the variable was deleted). The full state of a frame at an "
        "event is the fold of those deltas:",
        "",
        "```python",
        "def full_locals(events):",
        "    states = {}",
        "    for event in events:",
        '        state = states.setdefault(event["frame_id"], {})',
        '        for item in event["locals"]:',
        '            if item["value"] is None:',
        '                state.pop(item["name"], None)',
        "            else:",
        '                state[item["name"]] = item["value"]',
        "        yield dict(state)",
        "```",
        "",
        "`depth` is the call depth (0 for the entry frame) and `thread_id` numbers threads from 0, "
        "so the call stack at any event can be rebuilt from the events before it. `truncated` marks "
        "traces where a recording limit (`limits`) was hit.",
        "",
        "## Schema",
        "",
        f"Trace schema version {SCHEMA_VERSION} (the `schema_version` column and the Parquet metadata "
        "key `worldtrace.schema_version`).",
        "",
        "| column | type | description |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {type_} | {_md(doc)} |" for name, type_, doc in schema_rows(schema)]
    lines += [
        "",
        "## Statistics",
        "",
        f"{stats['rows']:,} traces ({stats['read']:,} read; dropped: {stats['dropped']['duplicates']:,} "
        f"duplicates, {stats['dropped']['status']:,} by status, {stats['dropped']['max_events']:,} by "
        f"event count, {stats['dropped']['nondeterministic']:,} traced differently when run again); "
        f"{stats['truncated']:,} truncated.",
        "",
        f"Events per trace: min {ev['min']:,}, median {ev['median']:,}, mean {ev['mean']:,}, "
        f"p90 {ev['p90']:,}, max {ev['max']:,}; {ev['total']:,} events in all.",
        "",
        *_counter_table("status", stats["statuses"]),
        "",
        *_counter_table("Python version", stats["python_versions"]),
        "",
        *_counter_table("tracer version", stats["tracer_versions"]),
        "",
        *_counter_table("image", stats["images"]),
        "",
        *_counter_table("tracer backend", stats["backends"]),
        "",
        "## Provenance",
        "",
        f"Published by worldtrace {worldtrace_version} (`worldtrace publish`), trace schema "
        f"version {SCHEMA_VERSION}. Filters: status {', '.join(options.statuses) or 'any'}; "
        f"max events {options.max_events if options.max_events is not None else 'none'}; "
        f"programs that traced differently when run again "
        f"{'dropped' if options.drop_nondeterministic else 'kept' if result.checks else 'not checked'}.",
        "",
    ]
    for check in result.checks:
        data = check.data
        lines += [
            f"Determinism check (`worldtrace harvest --recheck`, `provenance/determinism-{check.sha256[:12]}.json`): "
            f"{data.get('rechecked', 0):,} programs run a second time in a new sandbox, "
            f"{data.get('identical', 0):,} traced identically, {data.get('nondeterministic', 0):,} differently, "
            f"{len(data.get('not_compared', [])):,} not compared.",
            "",
        ]
    if result.runs:
        lines += [
            "Harvest runs the input shards came from (copied to `provenance/`):",
            "",
            "| run | started | finished | complete | tracer | worldtrace | manifest sha256 |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in result.runs:
            versions = run.data.get("versions") or {}
            lines.append(
                f"| `{_md(run.run_id)}` | {run.data.get('started_at', '')} | {run.data.get('finished_at', '')} "
                f"| {run.data.get('complete', '')} | {versions.get('tracer', '')} | "
                f"{versions.get('worldtrace', '')} | `{run.sha256[:16]}` |"
            )
    else:
        lines.append("No harvest run manifest was found next to the input shards.")
    lines += [
        "",
        "The input shards (with their sha256) are listed in `provenance/inputs.json`; "
        "`checksums.sha256` holds the sha256 of every file of this dataset (`sha256sum -c checksums.sha256`); "
        "`croissant.json` is the Croissant 1.0 metadata.",
        "",
    ]
    return "\n".join(lines)


def write_card(result: PublishResult, options: PublishOptions, schema: pa.Schema) -> None:
    text = front_matter(result, options, schema) + "\n" + body(result, options, schema)
    (result.out / "README.md").write_text(text, encoding="utf-8")
