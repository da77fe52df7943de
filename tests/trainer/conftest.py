"""A small harvested set for the trainer tests: small programs traced on the host, written as shards.

The programs run under the real tracer (`tracer.api.trace_call`) in this process, not in Docker:
the trainer only needs genuine shards, and this keeps the tests fast and engine-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

# Torch's intra-op threads spin on cores the rest of the suite (and CI's 2 cores) also use:
# one thread is several times faster for these tiny models on a busy machine.
torch.set_num_threads(1)

# (template name, source with {k}, inputs) -> programs differ by the constant k.
TEMPLATES = {
    "accumulate": (
        "def f(n):\n    total = 0\n    for i in range(n):\n        total += i * {k}\n    return total\n",
        ["3", "5"],
    ),
    "swapcase": (
        "def f(s):\n    out = ''\n    for ch in s:\n        if ch.isupper():\n"
        "            out += ch.lower()\n        else:\n            out += ch.upper()\n"
        "    return out * {k}\n",
        ["'aBc'", "'Hi'"],
    ),
    "evens": (
        "def f(xs):\n    kept = []\n    for x in xs:\n        if x % 2 == 0:\n"
        "            kept.append(x + {k})\n    return kept\n",
        ["[1, 2, 3, 4]", "[6, 7, 8]"],
    ),
    "guard": (
        "def f(x):\n    y = x * {k}\n    if y > 20:\n        raise ValueError('too big')\n"
        "    return y - 1\n",
        ["2", "9"],
    ),
}
N_CONSTANTS = 12  # 4 templates x 12 constants = 48 programs, 96 traces


def programs() -> list[dict[str, Any]]:
    """Program rows: program_id, source, entrypoint, inputs."""
    rows = []
    for name, (template, inputs) in TEMPLATES.items():
        for k in range(1, N_CONSTANTS + 1):
            rows.append(
                {
                    "program_id": f"{name}-{k}",
                    "source": template.format(k=k),
                    "entrypoint": "f",
                    "inputs": inputs,
                }
            )
    return rows


def trace_programs(workdir: Path) -> list[tuple[dict[str, Any], str]]:
    """(stream object, source) for every program and input, from the real tracer."""
    from tracer.api import trace_call

    workdir.mkdir(parents=True, exist_ok=True)
    traced = []
    for program in programs():
        path = workdir / f"{program['program_id']}.py"
        path.write_text(program["source"], encoding="utf-8")
        for text in program["inputs"]:
            obj = trace_call(
                str(path), "f", text, source=program["source"], program_id=program["program_id"]
            )
            traced.append((obj, program["source"]))
    return traced


def write_shards(traced: list[tuple[dict[str, Any], str]], out: Path, n_shards: int) -> list[Path]:
    """Convert stream objects to Arrow and write `n_shards` shards with schemas/ (small row groups)."""
    from schemas.convert import stream_to_batches
    from schemas.shards import write_shard

    sources = {obj["program_id"]: source for obj, source in traced}

    def context(obj: dict[str, Any]) -> dict[str, str]:
        return {"source": sources[obj["program_id"]], "image": "host"}

    paths = []
    per_shard = -(-len(traced) // n_shards)
    for i in range(n_shards):
        lines = [json.dumps(obj) for obj, _ in traced[i * per_shard : (i + 1) * per_shard]]
        # ~8 traces per batch and a tiny row-group budget: several row groups per shard.
        batches = stream_to_batches(lines, context=context, batch_rows=8)
        path = out / f"part-{i:05d}.parquet"
        write_shard(path, batches, row_group_bytes=1)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def harvested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of shards holding 96 traces of 48 small programs (several row groups each)."""
    root = tmp_path_factory.mktemp("harvested")
    traced = trace_programs(root / "programs")
    write_shards(traced, root / "shards", n_shards=3)
    return root / "shards"


TINY = {
    "model": {"seq_len": 128, "n_layer": 2, "n_head": 2, "d_model": 64},
    "steps": 30,
    "batch_size": 8,
    "lr": 3e-3,
    "min_lr": 3e-4,
    "warmup_steps": 5,
    "log_every": 1,
    "num_workers": 0,
    "ckpt_every": 10,
    "eval_every": 10,
    "eval_rows": 16,
    "vocab_size": 384,
    "tokenizer_sample": 200,
}


def tiny_config(**changes: Any) -> Any:
    """A TrainConfig small enough for a CPU test run; a quarter of the programs held out."""
    from trainer.config import DataConfig, ModelConfig, TrainConfig

    options = {**TINY, **changes}
    model = ModelConfig(**options.pop("model"))
    data = DataConfig(heldout_fraction=0.25, shuffle_buffer=16)
    return TrainConfig(model=model, data=data, **options)


@pytest.fixture(scope="session")
def trained_run(harvested: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory after 30 CPU steps of the tiny model on the harvested set."""
    from trainer.train import train

    out = tmp_path_factory.mktemp("run")
    train([harvested], out, tiny_config(), device="cpu")
    return out
