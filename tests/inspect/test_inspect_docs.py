"""The trace id that docs/inspecting.md and `inspect --help` show is the one a user's harvest makes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tracer
from schemas.ids import trace_id

ROOT = Path(__file__).resolve().parents[2]


def _fibonacci_id() -> str:
    """`fibonacci` of examples/programs traced in base-py311 (Python 3.11: the settrace backend)."""
    rows = [json.loads(line) for line in (ROOT / "examples/programs/functions.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["id"] == "fibonacci")
    return trace_id(row["id"], row["source"], row["entrypoint"], row["input"], "base-py311", "settrace", tracer.__version__)


def test_documented_trace_ids_are_fibonaccis() -> None:
    expected = _fibonacci_id()
    texts = {
        "docs/inspecting.md": (ROOT / "docs/inspecting.md").read_text(),
        "harvest/commands/inspect.py": (ROOT / "harvest/commands/inspect.py").read_text(),
    }
    for name, text in texts.items():
        shown = re.findall(r"--trace ([0-9a-f]+)|traces\[\"([0-9a-f]+)\"\]|`([0-9a-f]{8})` is `fibonacci`", text)
        ids = {part for match in shown for part in match if part}
        assert ids, f"{name} shows no trace id"
        for shown_id in ids:
            assert expected.startswith(shown_id), f"{name} shows {shown_id}; fibonacci's id is now {expected[:8]}"
