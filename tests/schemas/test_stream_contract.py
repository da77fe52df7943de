"""The tracer's stream, trace_stream.md, schemas/stream.py and the Arrow schema agree field by field."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from stream_samples import IMAGE

from schemas.arrow import CONTEXT_COLUMNS, EVENT_TYPE, LIMITS_TYPE, trace_schema
from schemas.convert import check_stream_object, row_to_stream_object, stream_to_batches
from schemas.reader import iter_full_locals
from schemas.stream import EVENT_KEYS, LIMIT_KEYS, NOT_STORED, STREAM_FORMAT, TRACE_KEYS
from tests.conftest import pyenv_pythons

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "schemas" / "trace_stream.md"

PROGRAM = '''\
import threading


def gen(n):
    for i in range(n):
        yield i


def helper(items):
    out = [x * 2 for x in items]
    return out


def f(n, text):
    total = sum(gen(n))
    doubled = helper([total, n])
    try:
        int(text)
    except ValueError as e:
        err = str(e)
    del err
    box = []
    t = threading.Thread(target=box.append, args=(total,))
    t.start()
    t.join()
    print("total", total)
    return doubled, box
'''
INPUT = "3, 'x'"


def table_keys(section: str) -> list[str]:
    """The `key` column of the table under '## <section>' in trace_stream.md."""
    text = CONTRACT.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.M)


def test_markdown_contract_matches_schemas_stream() -> None:
    assert table_keys("Trace object") == list(TRACE_KEYS)
    assert table_keys("Event object") == list(EVENT_KEYS)
    limits_row = next(line for line in CONTRACT.read_text().splitlines() if line.startswith("| `limits` |"))
    assert re.findall(r"`([a-z_]+)`", limits_row)[1:] == list(LIMIT_KEYS)
    assert f'`"{STREAM_FORMAT}"`' in CONTRACT.read_text()


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))


def _agrees(spec: str, field: pa.Field) -> bool:
    base = spec.rstrip("?")
    if field.nullable != spec.endswith("?"):
        return False
    checks = {
        "str": _is_string,
        "int": pa.types.is_integer,
        "float": pa.types.is_floating,
        "bool": pa.types.is_boolean,
        "object": lambda t: pa.types.is_struct(t) or pa.types.is_list(t),
        "array": pa.types.is_list,
    }
    return checks[base](field.type)


def test_arrow_schema_matches_stream_fields() -> None:
    schema = trace_schema()
    stored = [k for k in TRACE_KEYS if k not in NOT_STORED]
    assert set(schema.names) == set(stored) | set(CONTEXT_COLUMNS)
    for key in stored:
        assert _agrees(TRACE_KEYS[key], schema.field(key)), key
    assert [EVENT_TYPE.field(i).name for i in range(EVENT_TYPE.num_fields)] == list(EVENT_KEYS)
    for key, spec in EVENT_KEYS.items():
        assert _agrees(spec, EVENT_TYPE.field(key)), key
    assert [LIMITS_TYPE.field(i).name for i in range(LIMITS_TYPE.num_fields)] == list(LIMIT_KEYS)
    for key, spec in LIMIT_KEYS.items():
        # limits are always present in the stream; nullable in Arrow only for forward compatibility
        assert _agrees(spec + "?", LIMITS_TYPE.field(key)), key


def check_real_trace(trace: dict[str, Any]) -> None:
    """A real tracer object has exactly the contract's keys, with the contract's types."""
    assert list(trace) == list(TRACE_KEYS) or set(trace) == set(TRACE_KEYS)
    assert set(trace["limits"]) == set(LIMIT_KEYS)
    check_stream_object(trace)
    assert trace["events"], "the program produced no events"
    for event in trace["events"]:
        assert set(event) == set(EVENT_KEYS), sorted(set(event) ^ set(EVENT_KEYS))
    kinds = {e["kind"] for e in trace["events"]}
    assert kinds == {"call", "line", "return", "exception"}
    assert {e["thread_id"] for e in trace["events"]} >= {0}


def roundtrip_lines(lines: list[str], tmp_path: Path) -> None:
    """The stream lines convert to the Arrow schema without loss."""
    batches = list(stream_to_batches(lines, context={"source": PROGRAM, "image": IMAGE}))
    assert batches[0].schema.equals(trace_schema(), check_metadata=False)
    rows = [r for b in batches for r in b.to_pylist()]
    assert [row_to_stream_object(r) for r in rows] == [json.loads(line) for line in lines]


def test_real_tracer_stream_in_process(tmp_path: Path) -> None:
    api = pytest.importorskip("tracer.api", reason="the tracer (tracer/api.py) is not available")
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    trace = api.trace_call(str(path), "f", INPUT, program_id="contract")
    check_real_trace(trace)
    assert trace["stdout"] == "total 3\n"
    # the tracer's own fold of locals and ours agree
    assert api.full_locals(trace["events"]) == list(iter_full_locals(trace["events"]))
    roundtrip_lines([json.dumps(trace)], tmp_path)
    error = api.trace_call(str(path), "nope", INPUT, program_id="contract-error")
    check_stream_object(error)
    assert error["status"] == "error" and error["tracer_error"]
    roundtrip_lines([json.dumps(error)], tmp_path)


def run_tracer_cli(python: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    out = tmp_path / f"stream-{Path(python).name}.jsonl"
    subprocess.run(
        [python, "-m", "tracer", "call", str(path), "f", "--input", INPUT, "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, timeout=300,
    )
    return out.read_text(encoding="utf-8").splitlines()


def test_real_tracer_cli_stream(tmp_path: Path) -> None:
    if not (REPO / "tracer" / "__main__.py").exists():
        pytest.skip("the tracer CLI (python -m tracer) is not available")
    lines = run_tracer_cli(sys.executable, tmp_path)
    assert len(lines) == 1
    check_real_trace(json.loads(lines[0]))
    roundtrip_lines(lines, tmp_path)


@pytest.mark.multipython
def test_monitoring_backend_stream_agrees(tmp_path: Path) -> None:
    """The sys.monitoring backend (Python 3.12+) writes the same fields."""
    pythons = {v: p for v, p in pyenv_pythons().items() if v in ("3.12", "3.13")}
    if not pythons or not (REPO / "tracer" / "__main__.py").exists():
        pytest.skip("no Python 3.12+ in pyenv, or no tracer CLI")
    version, python = sorted(pythons.items())[-1]
    lines = run_tracer_cli(python, tmp_path)
    trace = json.loads(lines[0])
    assert trace["backend"] == "monitoring" and trace["python_version"].startswith(version)
    check_real_trace(trace)
    roundtrip_lines(lines, tmp_path)
