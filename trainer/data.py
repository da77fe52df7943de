"""Stream trace rows out of Parquet shards, sharded so one epoch visits every trace exactly once."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import torch
from torch.utils.data import IterableDataset, get_worker_info

from schemas.arrow import trace_schema
from schemas.errors import ShardError
from schemas.reader import open_shard, resolve_shards
from trainer.config import DataConfig

Split = Literal["train", "heldout", "all"]

# The columns a CWM rendering and the filters need; everything else (stdout, timings, ...) is never read.
REQUIRED_COLUMNS = ("program_id", "status", "n_events", "source", "events", "truncated")
OPTIONAL_COLUMNS = (
    "trace_id",
    "entrypoint",
    "input",
    "return_value",
    "exception_type",
    "exception_message",
)


def list_shards(paths: Iterable[str | Path]) -> list[tuple[pafs.FileSystem, str]]:
    """(filesystem, file) of every shard that `paths` name (files, directories, globs, URIs), each
    once: a shard that two paths name (a folder and a file or glob in it) would be read twice an
    epoch, its traces trained on twice as often and counted twice by `eval`."""
    files: list[tuple[pafs.FileSystem, str]] = []
    seen: dict[str, list[pafs.FileSystem]] = {}
    for path in paths:
        fs, names = resolve_shards(path)
        for name in names:
            same_name = seen.setdefault(name, [])
            if any(fs.equals(other) for other in same_name):
                continue
            same_name.append(fs)
            files.append((fs, name))
    if not files:
        raise ShardError(f"no Parquet shards in {', '.join(map(str, paths))}")
    return files


def plain_type(type_: pa.DataType, loose: bool = False) -> pa.DataType:
    """`type_` with every dictionary-encoded string decoded (nested lists and structs too); `loose`:
    also every field nullable and list items unnamed, as the readers' compute kernels see it."""
    if pa.types.is_dictionary(type_):
        return plain_type(type_.value_type, loose)
    if pa.types.is_list(type_):
        return pa.list_(_plain_field(type_.value_field, loose, "item"))
    if pa.types.is_struct(type_):
        return pa.struct([_plain_field(f, loose) for f in type_])
    return type_


def _plain_field(field: pa.Field, loose: bool, loose_name: str | None = None) -> pa.Field:
    name = loose_name if loose and loose_name else field.name
    return pa.field(name, plain_type(field.type, loose), True if loose else field.nullable)


def is_heldout(program_id: str, fraction: float) -> bool:
    """Deterministic split by program: the same program is always on the same side, on any machine."""
    digest = hashlib.sha256(program_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass(frozen=True)
class Piece:
    """One unit of work: a row group, or every `n_parts`-th row of it when row groups are scarce."""

    file: int  # index into TraceDataset.files
    row_group: int
    part: int = 0
    n_parts: int = 1


def list_pieces(row_groups: Sequence[int], n_consumers: int) -> list[Piece]:
    """All pieces of files with these row-group counts; row groups are split into row-strided
    parts when there are fewer of them than consumers."""
    groups = [(index, rg) for index, count in enumerate(row_groups) for rg in range(count)]
    n_parts = max(1, -(-n_consumers // max(1, len(groups))))
    return [Piece(index, rg, part, n_parts) for index, rg in groups for part in range(n_parts)]


def shuffled(items: Iterable[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Approximate shuffle of a stream with a bounded buffer (reservoir-style swap-out)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


T = TypeVar("T")

# A consumer's share of an epoch can be empty (the filters keep nothing in the pieces it drew this
# epoch) and the next epoch's not: it stops only after this many empty epochs in a row, when its
# share is empty for good (fewer matching traces than consumers, or none at all), rather than spin.
EMPTY_EPOCHS_TO_STOP = 10


def run_epochs(
    epochs: Iterable[int],
    one_epoch: Callable[[int], Iterable[T]],
    after_epoch: Callable[[int], None] | None = None,
) -> Iterator[T]:
    """The items of `one_epoch(e)` for each epoch e, until EMPTY_EPOCHS_TO_STOP empty epochs in a
    row; `after_epoch(e)` after each epoch (but the one it stops at)."""
    empty = 0
    for epoch in epochs:
        n_items = 0
        for item in one_epoch(epoch):
            n_items += 1
            yield item
        empty = empty + 1 if n_items == 0 else 0
        if empty == EMPTY_EPOCHS_TO_STOP:
            return
        if after_epoch is not None:
            after_epoch(epoch)


def consumer_slot(rank: int, world_size: int) -> tuple[int, int]:
    """(this consumer's index, number of consumers) over distributed ranks x DataLoader workers."""
    info = get_worker_info()
    worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * n_workers + worker, world_size * n_workers


class TraceDataset(IterableDataset):
    """Trace rows (dicts of the projected columns) streamed from shards, one row group at a time.

    The trick: every consumer (rank x worker) lists the same pieces, shuffles them with the same
    per-epoch seed, and keeps every n-th one, so the consumers partition the epoch without talking
    to each other. Only the shuffle buffer is private (seeded by epoch and consumer).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        config: DataConfig | None = None,
        *,
        split: Split = "train",
        seed: int = 0,
        epochs: int | None = 1,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.files = list_shards(paths)
        self.config = config or DataConfig()
        self.split = split
        self.seed = seed
        self.epochs = epochs
        if rank is None or world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        self.rank, self.world_size = rank, world_size
        # Read every footer once here, not again in each rank and DataLoader worker; a shard
        # without the columns a rendering needs is an error now, not in a worker later.
        shards = [(name, open_shard(fs, name)) for fs, name in self.files]
        self.row_groups = [shard.metadata.num_row_groups for _, shard in shards]
        in_all = set(OPTIONAL_COLUMNS)
        expected = trace_schema()
        for name, shard in shards:
            names = set(shard.schema_arrow.names)
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                raise ShardError(f"{name} lacks the trace columns {missing}")
            for column in (c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in names):
                stored = shard.schema_arrow.field(column).type
                if not plain_type(stored, loose=True).equals(plain_type(expected.field(column).type, loose=True)):
                    raise ShardError(
                        f"{name}: column {column!r} has type {plain_type(stored)}, "
                        f"expected {plain_type(expected.field(column).type)} (not a trace shard)"
                    )
            in_all &= names
        self.columns = [*REQUIRED_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in in_all)]

    def epoch_numbers(self) -> Iterable[int]:
        return itertools.count() if self.epochs is None else range(self.epochs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return run_epochs(self.epoch_numbers(), self.iter_epoch)

    def iter_epoch(self, epoch: int) -> Iterator[dict[str, Any]]:
        """This consumer's share of one epoch, shuffled."""
        me, n_consumers = consumer_slot(self.rank, self.world_size)
        order = list_pieces(self.row_groups, n_consumers)
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        rng = random.Random(f"{self.seed}:{epoch}:{me}")
        yield from shuffled(self._read(order[me::n_consumers]), self.config.shuffle_buffer, rng)

    def _read(self, pieces: Iterable[Piece]) -> Iterator[dict[str, Any]]:
        for piece in pieces:
            shard = open_shard(*self.files[piece.file])
            offset = 0
            for batch in shard.iter_batches(
                batch_size=self.config.read_batch_rows,
                row_groups=[piece.row_group],
                columns=self.columns,
            ):
                keep = self._keep(batch, offset, piece)
                offset += batch.num_rows
                kept = batch.filter(keep)
                # Decoding the dictionaries in Arrow first halves the cost of to_pylist.
                plain = pa.schema([f.with_type(plain_type(f.type)) for f in kept.schema])
                yield from kept.cast(plain).to_pylist()

    def _keep(self, batch: pa.RecordBatch, offset: int, piece: Piece) -> pa.Array:
        """Row mask: this piece's stride, the wanted statuses and lengths, the wanted split."""
        cfg = self.config
        keep = pc.is_in(batch["status"], value_set=pa.array(cfg.statuses, pa.string()))
        keep = pc.and_(keep, pc.greater_equal(batch["n_events"], cfg.min_events))
        if cfg.max_events is not None:
            keep = pc.and_(keep, pc.less_equal(batch["n_events"], cfg.max_events))
        if piece.n_parts > 1:
            index = range(offset, offset + batch.num_rows)
            keep = pc.and_(keep, pa.array([i % piece.n_parts == piece.part for i in index]))
        if self.split != "all":
            want = self.split == "heldout"
            program_ids = batch["program_id"].to_pylist()
            side = [is_heldout(p or "", cfg.heldout_fraction) == want for p in program_ids]
            keep = pc.and_(keep, pa.array(side, pa.bool_()))
        return pc.fill_null(keep, False)
