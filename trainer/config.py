"""Configuration of the model and of a training run, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """A small decoder-only transformer: RMSNorm, RoPE, SDPA attention, SwiGLU MLP."""

    vocab_size: int = 4096
    seq_len: int = 512
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    dropout: float = 0.0
    rope_base: float = 10000.0


@dataclass(frozen=True)
class DataConfig:
    """Which traces are read and how they become fixed-length token rows."""

    statuses: tuple[str, ...] = ("ok", "exception")
    min_events: int = 1
    max_events: int | None = None
    heldout_fraction: float = 0.05
    shuffle_buffer: int = 256
    read_batch_rows: int = 64
    # A context (the program source) longer than this share of seq_len drops the trace: every
    # chunk of a split trace repeats the context, so it must leave room for frames.
    max_context_share: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """One training run; saved in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    # The step at which the cosine decay reaches min_lr (0: `steps`). A run saves it resolved, so
    # a resume with a larger --steps goes on at min_lr instead of stretching the schedule again.
    decay_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int | None = None  # DataLoader workers; None: chosen for the device at run time
    log_every: int = 10
    ckpt_every: int = 500
    eval_every: int = 0  # steps between held-out loss measurements; 0 = never
    eval_rows: int = 64  # packed rows of held-out programs the held-out loss is measured on
    vocab_size: int = 4096
    tokenizer_sample: int = 2000


def train_config_from_dict(raw: dict) -> TrainConfig:
    """Rebuild a TrainConfig saved with `dataclasses.asdict` (tuples come back as lists)."""
    model = ModelConfig(**raw["model"])
    data_raw = dict(raw["data"])
    data_raw["statuses"] = tuple(data_raw["statuses"])
    data = DataConfig(**data_raw)
    rest = {k: v for k, v in raw.items() if k not in ("model", "data")}
    rest["betas"] = tuple(rest["betas"])
    return TrainConfig(model=model, data=data, **rest)
