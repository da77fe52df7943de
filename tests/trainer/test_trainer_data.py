"""The streaming dataset: exactly-once sharding over ranks x workers, shuffling, filters, split."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from schemas.errors import ShardError
from schemas.reader import iter_traces
from trainer.config import DataConfig
from trainer.data import TraceDataset, is_heldout


def all_rows(shards: Path) -> list[dict]:
    return list(iter_traces(shards, columns=["trace_id", "program_id", "status", "n_events"]))


def ids_of(dataset: TraceDataset, workers: int = 0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [row["trace_id"] for row in loader]


def test_one_epoch_visits_every_trace_exactly_once_across_2_ranks_x_2_workers(harvested: Path) -> None:
    config = DataConfig(shuffle_buffer=8)
    per_rank = [
        ids_of(TraceDataset([harvested], config, split="all", rank=r, world_size=2), workers=2)
        for r in range(2)
    ]
    seen = Counter(per_rank[0] + per_rank[1])
    expected = {row["trace_id"] for row in all_rows(harvested)}
    assert len(expected) == 96
    assert set(seen) == expected
    assert max(seen.values()) == 1
    assert all(len(ids) > 20 for ids in per_rank)  # both ranks really got work


def test_row_groups_fewer_than_consumers_are_split_by_row(tmp_path: Path, harvested: Path) -> None:
    import pyarrow.parquet as pq

    from schemas.reader import read_table
    from schemas.shards import write_shard

    one = tmp_path / "one.parquet"
    write_shard(one, read_table(harvested).to_batches(), update_manifest=False)
    assert pq.ParquetFile(one).metadata.num_row_groups == 1
    config = DataConfig(shuffle_buffer=4)
    parts = [ids_of(TraceDataset([one], config, split="all", rank=r, world_size=3)) for r in range(3)]
    assert all(parts)
    flat = [i for part in parts for i in part]
    assert len(flat) == len(set(flat)) == 96


def test_shuffle_is_seeded(harvested: Path) -> None:
    def order(seed: int) -> list[str]:
        return ids_of(TraceDataset([harvested], DataConfig(shuffle_buffer=16), split="all", seed=seed))

    file_order = [row["trace_id"] for row in all_rows(harvested)]
    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != file_order
    assert sorted(order(1)) == sorted(file_order)


def test_filters_by_status_and_length(harvested: Path) -> None:
    rows = all_rows(harvested)
    statuses = Counter(row["status"] for row in rows)
    assert statuses["ok"] and statuses["exception"]  # the set has both, so the filter is tested
    only_ok = list(TraceDataset([harvested], DataConfig(statuses=("ok",)), split="all"))
    assert len(only_ok) == statuses["ok"]
    assert {row["status"] for row in only_ok} == {"ok"}
    limit = sorted(row["n_events"] for row in rows)[len(rows) // 2]
    short = list(TraceDataset([harvested], DataConfig(max_events=limit), split="all"))
    assert short and all(row["n_events"] <= limit for row in short)
    assert len(short) == sum(row["n_events"] <= limit for row in rows)


def test_a_shard_named_twice_is_read_once(harvested: Path) -> None:
    first = sorted(harvested.glob("*.parquet"))[0]
    paths = [harvested, first, harvested / "*.parquet", harvested]
    ids = ids_of(TraceDataset(paths, DataConfig(), split="all"))
    assert len(ids) == len(set(ids)) == 96


def test_heldout_split_is_by_program(harvested: Path) -> None:
    config = DataConfig(heldout_fraction=0.25)
    train = list(TraceDataset([harvested], config, split="train"))
    heldout = list(TraceDataset([harvested], config, split="heldout"))
    assert train and heldout
    assert len(train) + len(heldout) == 96
    train_programs = {row["program_id"] for row in train}
    heldout_programs = {row["program_id"] for row in heldout}
    assert not train_programs & heldout_programs
    assert all(is_heldout(p, 0.25) for p in heldout_programs)
    assert is_heldout("abc", 0.25) == is_heldout("abc", 0.25)


# program_id -> 8 bytes of its sha256 as a fraction of 2**64. Pinned: a change to the assignment
# would move programs across the line for every checkpoint already trained (eval would score a
# model on programs it trained on).
SPLIT_POINTS = {"sample_0": 0.8979, "mbpp_11": 0.2459, "accumulate-1": 0.0199, "\u00e9t\u00e9/42": 0.2494}


def test_heldout_assignment_is_pinned_and_shares_publishs_hash() -> None:
    from harvest.publish.splits import SplitSpec

    for program, point in SPLIT_POINTS.items():
        assert is_heldout(program, point + 0.001) and not is_heldout(program, point - 0.001)
    # The same hash as `publish --split`, from the other end: train holds out the bottom
    # fraction, publish's last split is the top, so with the defaults they are disjoint.
    published = SplitSpec.parse("train=0.95,test=0.05")
    ids = [f"program-{i}" for i in range(2000)]
    assert all(is_heldout(p, 0.95) == (published.assign(p) == "train") for p in ids)
    heldout = {p for p in ids if is_heldout(p, 0.05)}
    test = {p for p in ids if published.assign(p) == "test"}
    assert heldout and test and not heldout & test


def test_endless_epochs_reshuffle(harvested: Path) -> None:
    dataset = TraceDataset([harvested], DataConfig(shuffle_buffer=16), split="all", epochs=None)
    ids = [row["trace_id"] for row in itertools.islice(dataset, 192)]
    first, second = ids[:96], ids[96:]
    assert sorted(first) == sorted(second)
    assert first != second


def test_projection_reads_only_the_needed_columns(harvested: Path) -> None:
    row = next(iter(TraceDataset([harvested], split="all")))
    assert "events" in row and "source" in row
    assert "stdout" not in row and "limits" not in row
    lines = row["source"].split("\n")
    assert all(e["source"] == lines[e["lineno"] - 1] for e in row["events"])  # restored by schemas


def test_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no such file or directory"):
        TraceDataset([tmp_path / "missing"])
    with pytest.raises(ShardError, match="no Parquet shards"):
        TraceDataset([tmp_path])


def test_a_consumer_with_an_empty_share_in_one_epoch_goes_on_to_the_next(harvested: Path) -> None:
    """Pieces are dealt anew every epoch: a consumer whose pieces hold no matching trace this
    epoch must not stop for good (it ended the stream, and training said 'no training rows')."""
    from trainer.packing import PackedDataset, cwm_texts
    from trainer.tokenizer import train_tokenizer

    only_raising = DataConfig(statuses=("exception",))
    per_epoch = sum(1 for _ in TraceDataset([harvested], only_raising, split="all"))
    assert 0 < per_epoch < 20  # few matching traces: some consumers draw none in some epochs
    texts = list(cwm_texts(TraceDataset([harvested], only_raising, split="all")))
    tokenizer = train_tokenizer(texts, vocab_size=300)
    for rank in range(4):
        endless = TraceDataset([harvested], only_raising, split="all", epochs=None, rank=rank, world_size=4)
        assert sum(1 for _ in itertools.islice(endless, 5 * per_epoch)) == 5 * per_epoch
        chunks = PackedDataset(
            TraceDataset([harvested], only_raising, split="all", epochs=None, rank=rank, world_size=4),
            tokenizer, seq_len=256,
        ).chunks()
        assert sum(1 for _ in itertools.islice(chunks, 5 * per_epoch)) == 5 * per_epoch


def test_a_consumer_whose_share_stays_empty_stops(harvested: Path) -> None:
    nothing = DataConfig(statuses=("timeout",))
    assert list(TraceDataset([harvested], nothing, split="all", epochs=None)) == []


def test_every_shard_is_checked_for_the_columns_a_rendering_needs(harvested: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    first, second = sorted(harvested.glob("*.parquet"))[:2]
    (tmp_path / "a.parquet").write_bytes(first.read_bytes())
    table = pq.read_table(second)
    pq.write_table(table.drop_columns(["events"]), tmp_path / "b.parquet")
    with pytest.raises(ShardError, match=r"b\.parquet lacks the trace columns \['events'\]"):
        TraceDataset([tmp_path], split="all")


def test_a_shard_with_a_column_of_another_type_is_named(harvested: Path, tmp_path: Path) -> None:
    """Found when the dataset is made, not as an Arrow kernel error in a DataLoader worker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(harvested.glob("*.parquet"))[0])
    at = table.column_names.index("n_events")
    as_text = pa.array([str(n) for n in table.column("n_events").to_pylist()])
    pq.write_table(table.set_column(at, "n_events", as_text), tmp_path / "b.parquet")
    with pytest.raises(ShardError, match=r"b\.parquet: column 'n_events' has type string, expected int64"):
        TraceDataset([tmp_path], split="all")
    assert len(list(TraceDataset([harvested], split="all"))) > 0  # dictionary strings, nested lists: the same
