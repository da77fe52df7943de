"""`worldtrace train`: train a small code world model on trace shards (CWM format)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from harvest.options import out_option, silent_option

DEVICES = click.Choice(["auto", "cpu", "cuda"])


def _workers(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """`auto` (None: the trainer picks for the device) or a count >= 0."""
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a count >= 0")
    return count


def _statuses(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """Comma-separated trace statuses, each one that shards can hold (a typo is an error, not an
    empty training set)."""
    from schemas.stream import STATUSES

    statuses = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown or not statuses:
        raise click.BadParameter(
            f"{', '.join(map(repr, unknown)) or 'no status'} given; statuses are {', '.join(STATUSES)}"
        )
    return statuses


@click.command("train")
@click.argument("shards", nargs=-1, required=True)
@out_option(help="Run directory: checkpoint.pt, tokenizer.json, config.json, metrics.jsonl.")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True,
              help="Optimizer steps (with --resume: the new total).")
@click.option("--device", type=DEVICES, default="auto", show_default=True,
              help="auto = CUDA when available (bf16 autocast), else CPU.")
@click.option("--seq-len", type=click.IntRange(16), default=512, show_default=True,
              help="Tokens per packed row.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="Rows per micro-batch.")
@click.option("--grad-accum", type=click.IntRange(1), default=1, show_default=True,
              help="Micro-batches per optimizer step.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="Peak learning rate (cosine decay to lr/10).")
@click.option("--warmup", type=click.IntRange(0), default=100, show_default=True,
              help="Linear warm-up steps.")
@click.option("--decay-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Step at which the cosine decay reaches lr/10, then stays there (0: --steps). "
                   "A resume keeps its run's own unless this is given.")
@click.option("--layers", type=click.IntRange(1), default=4, show_default=True)
@click.option("--heads", type=click.IntRange(1), default=4, show_default=True)
@click.option("--d-model", type=click.IntRange(8), default=256, show_default=True,
              help="Model width (a multiple of 2 x heads).")
@click.option("--vocab-size", type=click.IntRange(300), default=4096, show_default=True,
              help="BPE vocabulary size when the tokenizer is trained on the shards.")
@click.option("--tokenizer", "tokenizer_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Use this tokenizers JSON file instead of training a BPE.")
@click.option("--status", "statuses", default="ok,exception", show_default=True, callback=_statuses,
              help="Comma-separated trace statuses to train on (ok, exception, timeout, memory, crashed, error).")
@click.option("--max-events", type=click.IntRange(1), default=None,
              help="Skip traces with more events than this.")
@click.option("--heldout-fraction", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of programs (by hash of program_id) kept out for `worldtrace eval`.")
@click.option("--workers", default="auto", show_default=True, callback=_workers,
              help="DataLoader worker processes per rank; auto: up to 8 on CUDA, 2 on CPU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True)
@click.option("--ckpt-every", type=click.IntRange(1), default=500, show_default=True)
@click.option("--eval-every", type=click.IntRange(0), default=0, show_default=True,
              help="Log the loss on held-out programs every N steps (0: never).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from DIR/checkpoint.pt when it exists (model, data and optimiser "
                   "settings from the checkpoint; steps, workers and the log/ckpt/eval cadence "
                   "from this command; a larger --steps goes on at the decayed learning rate). "
                   "--no-resume removes that run's files and starts over.")
@silent_option
def command(shards: tuple[str, ...], out: Path, silent: bool, **options: Any) -> None:
    """Train a small decoder-only transformer on the CWM text of the traces in SHARDS
    (shard files, folders or globs), with the loss on trace frames only.

    \b
    Examples:
        worldtrace train harvest-out --out runs/tiny --steps 2000
        worldtrace train 'data/*.parquet' --out runs/gpu --device cuda --seq-len 1024 --batch-size 32
        worldtrace train harvest-out --out runs/tiny --steps 4000     # resumes runs/tiny
        torchrun --standalone --nproc-per-node 8 $(which worldtrace) train data --out runs/ddp
    """
    from schemas.errors import SchemaError
    from trainer.errors import TrainerError
    from trainer.train import CHECKPOINT_NAME, train

    cfg = _config(options)

    def show(record: dict[str, Any]) -> None:
        if not silent:
            heldout = f"  held-out {record['heldout_loss']:.4f}" if "heldout_loss" in record else ""
            click.echo(
                f"step {record['step']:>6}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"{record['tokens_per_s']:>9.0f} tok/s{heldout}"
            )

    def resumed(step: int) -> None:
        if not silent:
            click.echo(f"resuming from step {step} ({out / CHECKPOINT_NAME})")

    try:
        result = train(
            shards, out, cfg, device=options["device"], tokenizer_file=options["tokenizer_file"],
            resume=options["resume"], on_metrics=show, on_resume=resumed,
        )
    except (TrainerError, SchemaError) as e:
        raise click.ClickException(" ".join(str(e).split())) from e
    if not silent and result.rank == 0:
        loss = None if math.isnan(result.last_loss) else result.last_loss  # nan: no step was run
        click.echo(json.dumps({"step": result.step, "loss": loss, "checkpoint": str(result.checkpoint)}))


def _config(options: dict[str, Any]) -> Any:
    from trainer.config import DataConfig, ModelConfig, TrainConfig

    if options["d_model"] % (2 * options["heads"]):
        raise click.BadParameter("must be a multiple of 2 x --heads", param_hint="--d-model")
    statuses = options["statuses"]
    return TrainConfig(
        model=ModelConfig(
            seq_len=options["seq_len"], n_layer=options["layers"], n_head=options["heads"],
            d_model=options["d_model"],
        ),
        data=DataConfig(statuses=statuses, max_events=options["max_events"],
                        heldout_fraction=options["heldout_fraction"]),
        steps=options["steps"], batch_size=options["batch_size"], grad_accum=options["grad_accum"],
        lr=options["lr"], min_lr=options["lr"] / 10, warmup_steps=options["warmup"],
        decay_steps=options["decay_steps"],
        seed=options["seed"], num_workers=options["workers"], log_every=options["log_every"],
        ckpt_every=options["ckpt_every"], eval_every=options["eval_every"],
        vocab_size=options["vocab_size"],
    )
