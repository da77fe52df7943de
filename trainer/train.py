"""The training loop: AdamW, warm-up + cosine decay, gradient accumulation, bf16 on CUDA, resumable."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate

from trainer.config import TrainConfig, train_config_from_dict
from trainer.data import TraceDataset
from trainer.errors import CheckpointError, TrainerError
from trainer.model import TraceLM
from trainer.packing import IGNORE_INDEX, PackedDataset, Skipped, batch_loader, cwm_texts
from trainer.tokenizer import TraceTokenizer, train_tokenizer

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "worldtrace.trainer/1"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for `cuda` without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainerError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `decay_steps` (or `steps`), then
    `min_lr`. The warm-up takes at most half the horizon, so a run shorter than `warmup_steps`
    still decays (and a resumed one goes on at `min_lr`)."""
    horizon = cfg.decay_steps or cfg.steps
    warmup = min(cfg.warmup_steps, horizon // 2)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def fit_tokenizer(shards: Sequence[str | Path], cfg: TrainConfig) -> TraceTokenizer:
    """Train the BPE on the CWM text of the first `tokenizer_sample` training traces."""
    traces = TraceDataset(shards, cfg.data, split="train", seed=cfg.seed, rank=0, world_size=1)
    skipped = Skipped()
    texts = itertools.islice(cwm_texts(traces, skipped), cfg.tokenizer_sample)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    if skipped.count:
        log.warning(
            "%d trace(s) of the tokenizer's sample cannot be written as CWM text; training skips "
            "such traces too (the first: %s)", skipped.count, skipped.first,
        )
    return tokenizer


def make_optimizer(model: TraceLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices get weight decay, norms' gains do not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def save_checkpoint(
    path: Path, model: TraceLM, optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig,
    tokenizer: TraceTokenizer,
) -> None:
    """Write the checkpoint under a temporary name and rename it into place."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "config": dataclasses.asdict(cfg),
        "tokenizer": tokenizer.to_str(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's dict (format checked); `path` may be the file or the run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's own text says to retry unsafely, or to file an issue
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a checkpoint `worldtrace train` wrote (corrupted, or "
            "holding objects other than tensors and plain values, which are never unpickled)"
        ) from exc
    except Exception as exc:  # torch raises a zoo of types for a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a worldtrace trainer checkpoint")
    try:
        train_config_from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its configuration is not one this trainer reads ({exc})") from exc
    return state


def model_from_checkpoint(
    state: dict[str, Any], device: torch.device
) -> tuple[TraceLM, TraceTokenizer, TrainConfig]:
    cfg = train_config_from_dict(state["config"])
    model = TraceLM(cfg.model).to(device)
    _load_weights(model, state)
    return model, TraceTokenizer.from_str(state["tokenizer"]), cfg


def _load_weights(model: TraceLM, state: dict[str, Any]) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # shapes or names that do not match the saved configuration
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint's weights do not fit its model configuration: {first}") from exc


@dataclass(frozen=True)
class TrainResult:
    rank: int  # 0 in a single-process run; only rank 0 writes the files
    step: int
    checkpoint: Path
    metrics: Path
    last_loss: float


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop records past `last_step` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    steps = [_metrics_step(line) for line in lines]
    kept = [line for line, step in zip(lines, steps) if step is not None and step <= last_step]
    if any(line.strip() and step is None for line, step in zip(lines, steps)):
        log.warning("%s: dropped lines that are not metrics records (a run killed while writing?)", path)
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def _metrics_step(line: str) -> int | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


def heldout_rows(
    shards: Sequence[str | Path], cfg: TrainConfig, tokenizer: TraceTokenizer
) -> list[dict[str, torch.Tensor]]:
    """The first `eval_rows` packed rows of the held-out programs (a fixed validation set)."""
    traces = TraceDataset(shards, cfg.data, split="heldout", seed=cfg.seed, rank=0, world_size=1)
    return list(itertools.islice(PackedDataset(traces, tokenizer, cfg.model.seq_len), cfg.eval_rows))


@torch.no_grad()
def heldout_loss(
    model: TraceLM, rows: list[dict[str, torch.Tensor]], batch_size: int, device: torch.device
) -> float:
    """Mean loss per trained token over `rows`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in default_collate(rows[start : start + batch_size]).items()}
        with autocast(device):
            _, loss = model(**batch)
        assert loss is not None
        n = int((batch["targets"] != IGNORE_INDEX).sum())
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / max(count, 1)


# What a resumed run takes from its command line rather than from the checkpoint.
RUN_TIME_SETTINGS = ("steps", "num_workers", "log_every", "ckpt_every", "eval_every")

NO_TRAINING_ROWS = (
    "no training rows: no trace passed the filters (status, length, split), or every "
    "program's source is longer than max_context_share x seq_len tokens"
)


def _batches(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's rows; the dataset cycles epochs, so running dry means nothing matched."""
    yield from loader
    raise TrainerError(NO_TRAINING_ROWS)


def _require_training_rows(shards: Sequence[str | Path], cfg: TrainConfig, tokenizer: TraceTokenizer) -> None:
    """Fail at once, not after every consumer has read its share several times, when the
    training split gives no chunk at all (reads up to the first chunk: usually one row group)."""
    traces = TraceDataset(shards, cfg.data, split="train", epochs=1, rank=0, world_size=1)
    if next(PackedDataset(traces, tokenizer, cfg.model.seq_len).chunks(), None) is None:
        raise TrainerError(NO_TRAINING_ROWS)


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a (possibly one-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this process created the process group and destroys it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank (each passes its own; only rank 0's is kept)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def default_workers(device: torch.device, world_size: int = 1) -> int:
    """DataLoader workers when none are given. On CUDA enough to keep a GPU fed (BPE runs on one
    thread per worker): up to 8 per rank, leaving each rank a core of its own. On CPU 2: there the
    model step is the bottleneck and wants the cores."""
    if device.type != "cuda":
        return 2
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    return max(1, min(8, cpus // world_size - 1))


def init_distributed(device: str) -> Distributed:
    """Join the process group that torchrun describes (WORLD_SIZE > 1), else a single process."""
    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not dist.is_initialized():
        return Distributed(0, 1, dev, owns_group=False)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), dev, owns_group=owns)


def train(
    shards: Sequence[str | Path],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    device: str = "auto",
    tokenizer_file: str | Path | None = None,
    resume: bool = True,
    on_metrics: Callable[[dict[str, Any]], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on `shards`, writing checkpoint.pt, tokenizer.json and metrics.jsonl into `out_dir`.

    With `resume` and a checkpoint in `out_dir`, the run continues from its step with its saved
    configuration, except the run-time settings (RUN_TIME_SETTINGS: steps, workers, how often to
    log, checkpoint and validate), taken from `cfg`; the data stream is reseeded by the step.
    Without `resume`, a checkpoint already in `out_dir` is removed first.
    Under torchrun every rank trains on its share of the shards (DistributedDataParallel) and
    rank 0 writes the files. `on_metrics` sees every record written to metrics.jsonl;
    `on_resume` (rank 0) the step of the checkpoint a run resumes from.
    """
    out = Path(out_dir)
    ckpt_path, metrics_path = out / CHECKPOINT_NAME, out / "metrics.jsonl"
    run = init_distributed(device)  # first: an unusable --device leaves no empty run folder
    out.mkdir(parents=True, exist_ok=True)
    dev = run.device
    start_step, state = 0, None
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, dev)
        start_step = int(state["step"])
        if cfg.steps < start_step:
            raise TrainerError(
                f"{ckpt_path} is at step {start_step}, past --steps {cfg.steps}: give a larger "
                "--steps to go on, or --no-resume to start over"
            )
        cfg = _resumed_config(train_config_from_dict(state["config"]), cfg)
        tokenizer = TraceTokenizer.from_str(state["tokenizer"])
        log.info("resuming %s at step %d", ckpt_path, start_step)
        if on_resume is not None and run.is_main:
            on_resume(start_step)
    else:
        cfg = dataclasses.replace(cfg, decay_steps=cfg.decay_steps or cfg.steps)
        if run.is_main and ckpt_path.exists():  # --no-resume: the old run's files must not outlive it
            for name in (CHECKPOINT_NAME, "tokenizer.json", "config.json", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
            log.info("not resuming: removed %s and the other files of the previous run", ckpt_path)
        # One rank fits the BPE and sends it to the others over the process group. (They once read
        # it back from tokenizer.json, which rank 0 was by then rewriting: a rank could read it empty.)
        fitted = None
        if run.is_main:
            if tokenizer_file is not None:
                fitted = TraceTokenizer.load(tokenizer_file).to_str()
            else:
                fitted = fit_tokenizer(shards, cfg).to_str()
        tokenizer = TraceTokenizer.from_str(run.from_main(fitted))
    if cfg.model.vocab_size != tokenizer.vocab_size:
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
        )

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = TraceLM(cfg.model).to(dev)
    optimizer = make_optimizer(model, cfg)
    if state is not None:
        _load_weights(model, state)
        optimizer.load_state_dict(state["optimizer"])
    log.info("model: %.2fM parameters on %s", model.num_params() / 1e6, dev)
    ddp: torch.nn.Module = model
    if run.world_size > 1:
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    traces = TraceDataset(
        shards, cfg.data, split="train", seed=cfg.seed + start_step, epochs=None,
        rank=run.rank, world_size=run.world_size,
    )
    _require_training_rows(shards, cfg, tokenizer)
    rows = PackedDataset(traces, tokenizer, cfg.model.seq_len)
    workers = cfg.num_workers
    if workers is None:
        workers = default_workers(dev, run.world_size)
        log.info("%d DataLoader workers per rank", workers)
    loader = batch_loader(rows, cfg.batch_size, workers, pin_memory=dev.type == "cuda")
    batches = _batches(loader)

    validation = heldout_rows(shards, cfg, tokenizer) if cfg.eval_every and run.is_main else []
    if cfg.eval_every and run.is_main and not validation:
        log.warning("no held-out rows (heldout_fraction %s): no held-out loss", cfg.data.heldout_fraction)

    if run.is_main:  # the run's files, once it is set up: a run that cannot start leaves none
        trim_metrics(metrics_path, start_step)
        tmp = out / ".tokenizer.json.tmp"
        tokenizer.save(tmp)
        os.replace(tmp, out / "tokenizer.json")
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    model.train()
    step, last_loss = start_step, float("nan")
    # The loss is summed on the device and read once per log line: reading it every step (.item())
    # would make the CPU wait for the GPU at each step instead of queueing the next one.
    window_loss = torch.zeros((), device=dev)
    window_steps, window_tokens = 0, 0
    window_start = time.perf_counter()
    metrics = metrics_path.open("a", encoding="utf-8") if run.is_main else None
    try:
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(cfg.grad_accum):
                batch = {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}
                # DDP all-reduces gradients on the last micro-batch of a step only.
                last = micro == cfg.grad_accum - 1
                sync = nullcontext() if last or run.world_size == 1 else ddp.no_sync()  # type: ignore[operator]
                with sync:
                    with autocast(dev):
                        _, loss = ddp(**batch)
                    (loss / cfg.grad_accum).backward()
                window_loss += loss.detach().float() / cfg.grad_accum
                window_tokens += batch["input_ids"].numel() * run.world_size
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1
            validate = cfg.eval_every > 0 and step % cfg.eval_every == 0
            if step % cfg.log_every == 0 or step == cfg.steps or validate:
                last_loss = _mean_over_ranks(window_loss.item() / window_steps, run)
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": step,
                    "loss": round(last_loss, 5),
                    "lr": lr,
                    "tokens_per_s": round(window_tokens / elapsed, 1),
                    "tokens": window_tokens,
                    "device": dev.type,
                    "world_size": run.world_size,
                }
                if validate and validation:
                    record["heldout_loss"] = round(
                        heldout_loss(model, validation, cfg.batch_size, dev), 5
                    )
                if metrics is not None:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    if on_metrics is not None:
                        on_metrics(record)
                window_loss = torch.zeros((), device=dev)
                window_steps, window_tokens = 0, 0
                window_start = time.perf_counter()
            if run.is_main and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                save_checkpoint(ckpt_path, model, optimizer, step, cfg, tokenizer)
        if run.is_main and not ckpt_path.exists():
            save_checkpoint(ckpt_path, model, optimizer, step, cfg, tokenizer)
        run.barrier()
    finally:
        if metrics is not None:
            metrics.close()
        if run.owns_group:
            dist.destroy_process_group()
    return TrainResult(run.rank, step, ckpt_path, metrics_path, last_loss)


def _resumed_config(saved: TrainConfig, command: TrainConfig) -> TrainConfig:
    """The saved model, data and optimisation settings with the command's run-time settings.

    The learning-rate schedule keeps its saved horizon (checkpoints from before `decay_steps`
    decayed at their `steps`), unless the command sets `decay_steps` itself.
    """
    now = {name: getattr(command, name) for name in RUN_TIME_SETTINGS}
    horizon = command.decay_steps or saved.decay_steps or saved.steps
    return dataclasses.replace(saved, decay_steps=horizon, **now)


def _mean_over_ranks(value: float, run: Distributed) -> float:
    if run.world_size == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=run.device)
    dist.all_reduce(total)
    return float(total.item()) / run.world_size
