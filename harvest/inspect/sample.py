"""A small local sample of shards: trace programs in this process (no Docker) and write shards."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from schemas.convert import rows_to_batch, stream_object_to_row
from schemas.shards import ShardInfo, ShardWriter
from tracer.api import trace_call

LOCAL_IMAGE = "local"

# Bundled sample programs, each showing something a viewer must get right: a loop with changing locals, nested calls,
# an exception that escapes, recursion, deletion of a variable and output.
SAMPLE_PROGRAMS: list[dict[str, str]] = [
    {
        "id": "fib",
        "source": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "entrypoint": "fib",
        "input": "7",
    },
    {
        "id": "nested",
        "source": (
            "def square(x):\n    y = x * x\n    return y\n\n"
            "def total(xs):\n    s = 0\n    for x in xs:\n        s += square(x)\n    return s\n"
        ),
        "entrypoint": "total",
        "input": "[1, 2, 3]",
    },
    {
        "id": "divide",
        "source": "def inv(x):\n    return 1 / x\n\ndef f(x):\n    y = x - 1\n    return inv(y)\n",
        "entrypoint": "f",
        "input": "1",
    },
    {
        "id": "fact",
        "source": "def fact(n):\n    if n <= 1:\n        return 1\n    return n * fact(n - 1)\n",
        "entrypoint": "fact",
        "input": "4",
    },
    {
        "id": "shout",
        "source": (
            "def shout(words):\n    out = []\n    for w in words:\n        tmp = w.upper()\n"
            "        out.append(tmp)\n        del tmp\n    print(' '.join(out))\n    return out\n"
        ),
        "entrypoint": "shout",
        "input": "['a', 'b']",
    },
]
# The same program with another input: another trace of the same program_id.
SAMPLE_PROGRAMS.append({**SAMPLE_PROGRAMS[0], "input": "12"})


def read_programs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Programs from a JSON Lines file ({"id", "source", "entrypoint", "input"} per line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def trace_programs(
    programs: Iterable[Mapping[str, Any]], *, image: str = LOCAL_IMAGE
) -> list[dict[str, Any]]:
    """Trace each program's entry point in this process; trace rows in the Arrow schema's shape."""
    rows = []
    for program in programs:
        program_id = str(program["id"])
        stream = trace_call(
            f"{program_id}.py",
            program["entrypoint"],
            program["input"],
            source=program["source"],
            program_id=program_id,
        )
        rows.append(stream_object_to_row(stream, {"source": program["source"], "image": image}))
    return rows


def write_sample_shards(
    programs: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    rows_per_shard: int = 0,
    image: str = LOCAL_IMAGE,
) -> list[ShardInfo]:
    """Trace `programs` locally and write them as shards (with the manifest) into `out_dir`."""
    rows = trace_programs(programs, image=image)
    size = rows_per_shard or max(len(rows), 1)
    infos = []
    for number, start in enumerate(range(0, len(rows), size)):
        with ShardWriter(Path(out_dir) / f"sample-{number:05d}.parquet") as writer:
            writer.write_batch(rows_to_batch(rows[start : start + size]))
        assert writer.info is not None
        infos.append(writer.info)
    return infos
