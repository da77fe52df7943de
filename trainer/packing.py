"""CWM text -> token chunks split at frame boundaries -> fixed-length rows with a loss mask.

A trace renders (schemas/cwm.py) as CONTEXT FRAME FRAME ... where CONTEXT is
`<|begin_of_text|><|trace_context_start|>` + source + `<|frame_sep|>` and every frame ends with
`<|frame_sep|>` (the last one is followed by `<|end_of_text|>`). The loss is on frame tokens only.

A trace longer than a row is cut between frames into chunks, each chunk being CONTEXT (repeated,
no loss) followed by as many whole frames as fit. A single frame longer than the room left is
truncated. A trace whose context alone exceeds `max_context_share` of a row is dropped.
Chunks are packed greedily into rows of `seq_len + 1` tokens without being cut again; the rest
of a row is padding. `doc_ids` tells the model where one chunk ends so attention stays inside it.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from schemas.cwm import render_cwm
from schemas.errors import CwmFormatError
from trainer.data import TraceDataset, run_epochs
from trainer.tokenizer import TraceTokenizer, single_threaded_worker

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class Skipped:
    """How many traces CWM text cannot express were skipped, and why the first one was."""

    count: int = 0
    first: str | None = None


def cwm_texts(traces: Iterable[dict[str, Any]], skipped: Skipped | None = None) -> Iterator[str]:
    """CWM text of each trace row (schemas/cwm.py renders); rows CWM cannot express are skipped
    (counted in `skipped`)."""
    for trace in traces:
        try:
            yield render_cwm(trace)
        except CwmFormatError as exc:
            log.debug("trace %s skipped: %s", trace.get("trace_id"), exc)
            if skipped is not None:
                skipped.count += 1
                skipped.first = skipped.first or f"trace {trace.get('trace_id')}: {exc}"


@dataclass
class Chunk:
    """Token ids of one training example and, per token, whether predicting it is trained."""

    ids: list[int] = field(default_factory=list)
    loss: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def split_frames(ids: list[int], frame_sep_id: int) -> tuple[list[int], list[list[int]]]:
    """(context, frames): each ends with a frame separator; trailing tokens join the last frame."""
    cuts, at = [], -1
    try:
        while True:  # list.index scans in C: several times faster than enumerating the tokens
            at = ids.index(frame_sep_id, at + 1)
            cuts.append(at + 1)
    except ValueError:
        pass
    if not cuts:
        return ids, []
    context = ids[: cuts[0]]
    frames = [ids[a:b] for a, b in zip(cuts, cuts[1:])]
    tail = ids[cuts[-1] :]
    if tail:
        if frames:
            frames[-1] = frames[-1] + tail
        else:
            frames.append(tail)
    return context, frames


def trace_chunks(
    ids: list[int], frame_sep_id: int, row_len: int, max_context: int
) -> list[Chunk]:
    """Cut one tokenised trace into chunks of at most `row_len` tokens (see the module docstring)."""
    context, frames = split_frames(ids, frame_sep_id)
    if not frames or len(context) > max_context:
        return []
    room = row_len - len(context)
    chunks: list[Chunk] = []
    current: list[int] = []
    for frame in frames:
        if current and len(current) + len(frame) > room:
            chunks.append(Chunk(context + current, [False] * len(context) + [True] * len(current)))
            current = []
        current += frame[: room - len(current)]
    if current:
        chunks.append(Chunk(context + current, [False] * len(context) + [True] * len(current)))
    return chunks


def pack(chunks: Iterable[Chunk], seq_len: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Greedy packing of whole chunks into rows: input_ids, targets (-100 = no loss), doc_ids."""
    row_len = seq_len + 1
    row = Chunk()
    docs: list[int] = []
    for chunk in chunks:
        if len(row) + len(chunk) > row_len:
            yield _finish(row, docs, row_len, pad_id)
            row, docs = Chunk(), []
        doc = docs[-1] + 1 if docs else 0
        row.ids += chunk.ids
        row.loss += chunk.loss
        docs += [doc] * len(chunk)
    if row.ids:
        yield _finish(row, docs, row_len, pad_id)


def _finish(row: Chunk, docs: list[int], row_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    n_pad = row_len - len(row)
    pad_doc = docs[-1] + 1 if docs else 0
    # array -> frombuffer is several times faster than torch.tensor on a list of ints.
    ids = torch.frombuffer(array("q", row.ids + [pad_id] * n_pad), dtype=torch.long)
    loss = torch.frombuffer(array("b", row.loss + [False] * n_pad), dtype=torch.bool)
    doc_ids = torch.frombuffer(array("q", docs + [pad_doc] * n_pad), dtype=torch.long)
    targets = ids[1:].masked_fill(~loss[1:], IGNORE_INDEX)
    return {"input_ids": ids[:-1], "targets": targets, "doc_ids": doc_ids[:-1]}


class PackedDataset(IterableDataset):
    """Rows of `seq_len` tokens packed from the traces of a TraceDataset."""

    def __init__(
        self,
        traces: TraceDataset,
        tokenizer: TraceTokenizer,
        seq_len: int,
        *,
        encode_batch: int = 64,
    ) -> None:
        self.traces = traces
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.encode_batch = encode_batch
        self.max_context = int(traces.config.max_context_share * (seq_len + 1))
        self.dropped = 0  # traces of the current epoch that gave no chunk

    def chunks(self) -> Iterator[Chunk]:
        """Chunks of every epoch the trace dataset runs (see `run_epochs` for when it stops)."""
        return run_epochs(self.traces.epoch_numbers(), self._epoch_chunks, self._report_dropped)

    def _report_dropped(self, epoch: int) -> None:
        if self.dropped:
            log.warning(
                "epoch %d: %d traces dropped: no frames, or a context over %d tokens",
                epoch, self.dropped, self.max_context,
            )
            self.dropped = 0

    def _epoch_chunks(self, epoch: int) -> Iterator[Chunk]:
        """Tokenise traces a batch at a time (the Rust tokenizer is much faster on batches)."""
        batch: list[str] = []
        for text in cwm_texts(self.traces.iter_epoch(epoch)):
            batch.append(text)
            if len(batch) == self.encode_batch:
                yield from self._chunk_batch(batch)
                batch = []
        if batch:
            yield from self._chunk_batch(batch)

    def _chunk_batch(self, texts: list[str]) -> Iterator[Chunk]:
        sep = self.tokenizer.frame_sep_id
        for ids in self.tokenizer.encode_batch(texts):
            chunks = trace_chunks(ids, sep, self.seq_len + 1, self.max_context)
            self.dropped += not chunks
            yield from chunks

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return pack(self.chunks(), self.seq_len, self.tokenizer.pad_id)


FIELDS = ("input_ids", "targets", "doc_ids")


class PackedBatches(IterableDataset):
    """Batches of `batch_size` packed rows whose three tensors are views of one tensor.

    A DataLoader worker hands each batch to the training process through shared memory, one
    segment per tensor storage, and the segments' system calls, not the packing, capped the
    workers (about twice the batches per second with one storage instead of three).
    """

    def __init__(self, rows: PackedDataset, batch_size: int) -> None:
        self.rows = rows
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batch: list[dict[str, torch.Tensor]] = []
        for row in self.rows:
            batch.append(row)
            if len(batch) == self.batch_size:
                yield stack_rows(batch)
                batch = []
        if batch:
            yield stack_rows(batch)


def stack_rows(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The rows stacked field by field into one (3, rows, seq_len) tensor; a dict of its views."""
    out = torch.empty((len(FIELDS), len(rows), rows[0]["input_ids"].shape[0]), dtype=torch.long)
    for i, name in enumerate(FIELDS):
        torch.stack([row[name] for row in rows], out=out[i])
    return {name: out[i] for i, name in enumerate(FIELDS)}


def batch_loader(
    rows: PackedDataset, batch_size: int, workers: int, *, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader of packed batches: `workers` processes, each packing whole batches of its share
    of the traces, BPE on one thread in each (see `single_threaded_worker`)."""
    return DataLoader(
        PackedBatches(rows, batch_size), batch_size=None, num_workers=workers,
        pin_memory=pin_memory, worker_init_fn=single_threaded_worker,
    )
