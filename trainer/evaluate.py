"""Held-out next-frame prediction: greedy-decode the frame after a trace prefix and score it.

For each held-out trace (split by a hash of program_id, see trainer.data.is_heldout) a few target
frames are picked at seeded random. The prompt is what training chunks look like: the context
(source) followed by as many of the frames just before the target as fit. The model decodes
greedily up to the next `<|frame_sep|>`; the decoded frame is compared with the real one on the
event kind, the source line, and each variable's value (return/exception frames: the value).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.cwm import (
    ACTION_SEP,
    ARG_SEP,
    CALL_SEP,
    EXCEPTION_SEP,
    FRAME_SEP,
    LINE_SEP,
    RETURN_SEP,
    UNCHANGED,
)
from trainer.config import TrainConfig
from trainer.data import Split, TraceDataset
from trainer.errors import TrainerError
from trainer.packing import Skipped, cwm_texts, split_frames
from trainer.train import autocast, load_checkpoint, model_from_checkpoint, resolve_device

KIND_MARKERS = {CALL_SEP: "call", LINE_SEP: "line", RETURN_SEP: "return", EXCEPTION_SEP: "exception"}
RETURN_VALUE = "<value>"  # the name under which a return/exception frame's VALUE is scored


@dataclass(frozen=True)
class Frame:
    """One CWM frame as data; fields are None where the text did not parse."""

    kind: str | None
    line: str | None
    values: dict[str, Any] = field(default_factory=dict)


def parse_frame(text: str) -> Frame:
    """Lenient parse of one decoded frame (schemas.cwm.parse_cwm parses whole, valid traces).

    Values are compared as written, so a predicted ".." (unchanged) is right exactly when the
    real frame also says "..".
    """
    text = text.split(FRAME_SEP, 1)[0]
    kind = next((k for marker, k in KIND_MARKERS.items() if text.startswith(marker)), None)
    if kind is None:
        return Frame(None, None)
    body = text[text.index("|>") + 2 :]
    head, sep, tail = body.partition(ACTION_SEP)
    if not sep:
        return Frame(kind, None)
    if kind in ("call", "line"):
        return Frame(kind, tail.removesuffix("\n"), _json_object(head))
    line, sep, value = tail.partition(ARG_SEP)
    values = {RETURN_VALUE: _json_value(value)} if sep else {}
    return Frame(kind, line.removesuffix("\n"), values)


class Unparsed:
    """The value of text that is not JSON: equal to nothing, so it never scores (json.loads gives
    None for a real `null`, the value of every return frame of a function that returns None)."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "Unparsed()"


def _json_object(text: str) -> dict[str, Any]:
    value = _json_value(text)
    return value if isinstance(value, dict) else {}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return Unparsed()


@dataclass
class KindScore:
    """Counts for the target frames of one event kind."""

    frames: int = 0
    kind_ok: int = 0
    line_ok: int = 0
    values: int = 0
    values_ok: int = 0
    changed: int = 0  # values the real frame writes out (not "..")
    changed_ok: int = 0
    exact: int = 0

    def add(self, truth: Frame, predicted: Frame, exact: bool) -> None:
        self.frames += 1
        self.kind_ok += predicted.kind == truth.kind
        self.line_ok += predicted.line == truth.line
        self.exact += exact
        for name, value in truth.values.items():
            ok = name in predicted.values and predicted.values[name] == value
            self.values += 1
            self.values_ok += ok
            if value != UNCHANGED:
                self.changed += 1
                self.changed_ok += ok

    def report(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "kind_accuracy": self.kind_ok / self.frames if self.frames else None,
            "line_accuracy": self.line_ok / self.frames if self.frames else None,
            "value_accuracy": self.values_ok / self.values if self.values else None,
            "values": self.values,
            "changed_value_accuracy": self.changed_ok / self.changed if self.changed else None,
            "changed_values": self.changed,
            "frame_exact": self.exact / self.frames if self.frames else None,
        }


def max_context_tokens(cfg: TrainConfig) -> int:
    """The longest context training keeps (a longer one drops the trace; see PackedDataset)."""
    return int(cfg.data.max_context_share * (cfg.model.seq_len + 1))


def prompts(
    ids: list[int], frame_sep_id: int, seq_len: int, n_targets: int, max_new: int,
    rng: random.Random,
) -> list[tuple[list[int], list[int]]]:
    """(prompt, true next frame) pairs for up to `n_targets` seeded-random frames of one trace."""
    context, frames = split_frames(ids, frame_sep_id)
    pairs = []
    for index in sorted(rng.sample(range(len(frames)), min(n_targets, len(frames)))):
        target = frames[index]
        target = target[: target.index(frame_sep_id) + 1] if frame_sep_id in target else target
        room = seq_len - len(context) - min(len(target), max_new)
        history: list[int] = []
        for frame in reversed(frames[:index]):
            if len(history) + len(frame) > room:
                break
            history = frame + history
        if room > 0:
            pairs.append((context + history, target))
    return pairs


def evaluate(
    checkpoint: str | Path,
    shards: Sequence[str | Path],
    *,
    device: str = "auto",
    split: Split = "heldout",
    max_traces: int = 200,
    frames_per_trace: int = 4,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Next-frame accuracy of a checkpoint on the held-out traces, overall and per event kind."""
    dev = resolve_device(device)
    model, tokenizer, cfg = model_from_checkpoint(load_checkpoint(checkpoint, dev), dev)
    model.eval()
    traces = TraceDataset(shards, cfg.data, split=split, seed=seed, rank=0, world_size=1)
    rng = random.Random(seed)
    pairs: list[tuple[list[int], list[int]]] = []
    n_traces = long_context = 0
    not_cwm = Skipped()
    sep, seq_len, max_context = tokenizer.frame_sep_id, cfg.model.seq_len, max_context_tokens(cfg)
    for text in cwm_texts(traces, not_cwm):
        if n_traces == max_traces:
            break
        ids = tokenizer.encode(text)
        context = ids.index(sep) + 1 if sep in ids else len(ids)
        if context > max_context:  # as in training: dropped (not counted against max_traces)
            long_context += 1
            continue
        n_traces += 1
        pairs += prompts(ids, sep, seq_len, frames_per_trace, max_new_tokens, rng)
    per_kind: dict[str, KindScore] = {}
    total = KindScore()
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        # A continuation twice as long as the longest true frame can match no frame exactly (its
        # kind and line are scored from its start): stop there rather than at max_new_tokens (an
        # undertrained model rarely emits the separator).
        budget = min(max_new_tokens, 2 * max(len(target) for _, target in batch) + 8)
        with autocast(dev):
            decoded = model.greedy([p for p, _ in batch], tokenizer.frame_sep_id, budget)
        for (_, target), predicted_ids in zip(batch, decoded):
            truth = parse_frame(tokenizer.decode(target))
            predicted = parse_frame(tokenizer.decode(predicted_ids))
            if truth.kind is None:
                continue
            exact = predicted_ids == target
            per_kind.setdefault(truth.kind, KindScore()).add(truth, predicted, exact)
            total.add(truth, predicted, exact)
    if total.frames == 0:
        fraction = "" if split == "all" else f", held-out fraction {cfg.data.heldout_fraction}"
        raise TrainerError(
            f"no frames to evaluate in {', '.join(map(str, shards))} (split {split}{fraction}: "
            f"{n_traces} traces matched, {long_context} dropped for a context over {max_context} tokens, "
            f"{not_cwm.count} not expressible as CWM text)"
        )
    return {
        "checkpoint": str(checkpoint),
        "split": split,
        "traces": n_traces,
        "traces_long_context": long_context,
        "traces_not_cwm": not_cwm.count,  # skipped, as in training: CWM text cannot express them
        "overall": total.report(),
        "per_kind": {kind: score.report() for kind, score in sorted(per_kind.items())},
    }
