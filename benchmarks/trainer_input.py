"""Trainer input pipeline against the model step, side by side in one run: tokens per second of
shards -> rows (Parquet read, CWM rendering, BPE, packing, collation) and of a training step
(forward, backward, AdamW) of the default model on the chosen device.

    .venv/bin/python benchmarks/trainer_input.py [SHARDS] [--device auto] [--workers 0|N|auto]
        [--seq-len 512] [--batch-size 16] [--rows 512] [--steps 10] [--corpus cruxeval.jsonl]

Without SHARDS, the CRUXEval programs are traced on the host (tracer.api) and written as one
shard in a temporary folder. Target: the pipeline at least 10x faster than the model step, so it
never starves the accelerator. `--workers N` measures N DataLoader processes together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from trainer.config import ModelConfig, TrainConfig  # noqa: E402
from trainer.data import TraceDataset  # noqa: E402
from trainer.model import TraceLM  # noqa: E402
from trainer.packing import IGNORE_INDEX, PackedDataset, batch_loader  # noqa: E402
from trainer.train import (  # noqa: E402
    autocast,
    default_workers,
    fit_tokenizer,
    make_optimizer,
    resolve_device,
)

TARGET_RATIO = 10.0


def corpus_path(given: str | None) -> Path:
    if given:
        return Path(given)
    root = Path(os.environ.get("WORLDTRACE_CORPORA", REPO.parent / "shared" / "corpora"))
    return root / "cruxeval.jsonl"


def harvest_corpus(corpus: Path, out: Path) -> Path:
    """Trace every program of a CRUXEval-style JSONL on the host and write one shard."""
    from schemas.convert import stream_to_batches
    from schemas.shards import write_shard
    from tracer.api import trace_call

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines, sources = [], {}
    (out / "programs").mkdir(parents=True)
    for row in rows:
        file = out / "programs" / f"{row['id']}.py"
        file.write_text(row["code"], encoding="utf-8")
        lines.append(json.dumps(trace_call(str(file), "f", row["input"], program_id=row["id"])))
        sources[row["id"]] = row["code"]

    def context(obj: dict) -> dict:
        return {"source": sources[obj["program_id"]], "image": "host"}

    shard = out / "shards" / "cruxeval.parquet"
    write_shard(shard, stream_to_batches(lines, context=context))
    return shard.parent


def loader(shards: list[str], cfg: TrainConfig, tokenizer, workers: int) -> DataLoader:
    traces = TraceDataset(shards, cfg.data, split="all", epochs=None)
    return batch_loader(PackedDataset(traces, tokenizer, cfg.model.seq_len), cfg.batch_size, workers)


def measure_pipeline(batches, n_rows: int, seq_len: int, workers: int) -> tuple[float, float]:
    """(tokens/s, share of positions with a loss) over n_rows rows, timed once every worker has
    delivered its first batches (the start-up of the worker processes is not the steady rate)."""
    for _ in range(2 * max(workers, 1)):  # DataLoader's prefetch: 2 batches per worker
        next(batches)
    started, rows, trained = time.perf_counter(), 0, 0
    while rows < n_rows:
        batch = next(batches)
        rows += batch["input_ids"].shape[0]
        trained += int((batch["targets"] != IGNORE_INDEX).sum())
    return rows * seq_len / (time.perf_counter() - started), trained / (rows * seq_len)


def measure_model(model: TraceLM, cfg: TrainConfig, batch: dict, device: torch.device, steps: int) -> float:
    """Tokens/s of full optimizer steps on one batch already on the device (2 warm-up steps)."""
    optimizer = make_optimizer(model, cfg)
    batch = {k: v.to(device) for k, v in batch.items()}

    def step() -> None:
        with autocast(device):
            _, loss = model(**batch)
        assert loss is not None
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch["input_ids"].numel() / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("shards", nargs="*")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", default="0",
                        help="DataLoader processes, or auto (as `worldtrace train`: 8 on CUDA)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rows", type=int, default=512, help="rows the pipeline produces, timed")
    parser.add_argument("--steps", type=int, default=10, help="model steps, timed")
    parser.add_argument("--corpus", default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    workers = default_workers(device) if args.workers == "auto" else int(args.workers)
    cfg = TrainConfig(model=ModelConfig(seq_len=args.seq_len), batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards
        if not shards:
            corpus = corpus_path(args.corpus)
            if not corpus.is_file():
                sys.exit(f"no shards given and no corpus at {corpus} (set WORLDTRACE_CORPORA)")
            started = time.perf_counter()
            shards = [str(harvest_corpus(corpus, Path(tmp)))]
            print(f"traced {corpus.name} on the host in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        tokenizer = fit_tokenizer(shards, cfg)
        print(f"BPE ({tokenizer.vocab_size} tokens) trained in {time.perf_counter() - started:.1f}s")

        batches = iter(loader(shards, cfg, tokenizer, workers))
        pipeline, trained_share = measure_pipeline(batches, args.rows, args.seq_len, workers)
        model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, seq_len=args.seq_len)
        model = TraceLM(model_cfg).to(device)
        model_speed = measure_model(model, cfg, next(batches), device, args.steps)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    ratio = pipeline / model_speed
    print(f"device: {name}; model {model.num_params() / 1e6:.2f}M parameters, "
          f"{args.batch_size} x {args.seq_len} tokens per step")
    print(f"input pipeline ({workers} workers): {pipeline:12,.0f} tokens/s "
          f"({trained_share:.0%} of positions carry loss)")
    print(f"model step:                  {model_speed:12,.0f} tokens/s")
    verdict = "OK" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio pipeline/model: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x): {verdict}")


if __name__ == "__main__":
    main()
