"""CWM text -> tokens -> chunks split at frame boundaries -> packed rows with a loss mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from schemas.cwm import CWM_SPECIAL_TOKENS, FRAME_SEP
from trainer.config import DataConfig
from trainer.data import TraceDataset
from trainer.packing import (
    IGNORE_INDEX,
    Chunk,
    PackedDataset,
    cwm_texts,
    pack,
    split_frames,
    trace_chunks,
)
from trainer.tokenizer import TraceTokenizer, train_tokenizer

SEP = 99  # a stand-in frame separator id for the unit tests


@pytest.fixture(scope="module")
def texts(harvested: Path) -> list[str]:
    return list(cwm_texts(TraceDataset([harvested], split="all")))


@pytest.fixture(scope="module")
def tokenizer(texts: list[str]) -> TraceTokenizer:
    return train_tokenizer(texts, vocab_size=384)


def test_split_frames_keeps_separators_and_the_tail() -> None:
    context, frames = split_frames([1, 2, SEP, 3, SEP, 4, 5, SEP, 7], SEP)
    assert context == [1, 2, SEP]
    assert frames == [[3, SEP], [4, 5, SEP, 7]]


def test_long_trace_is_cut_between_frames_with_the_context_repeated() -> None:
    ids = [1, 2, SEP] + [3, 3, SEP] * 5 + [8]
    chunks = trace_chunks(ids, SEP, row_len=10, max_context=5)
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk.ids[:3] == [1, 2, SEP] and chunk.loss[:3] == [False] * 3
        assert all(chunk.loss[3:]) and len(chunk) <= 10
        assert chunk.ids[-1] in (SEP, 8)
    assert sum(len(c) - 3 for c in chunks) == len(ids) - 3  # every frame token appears once


def test_oversized_frame_is_truncated_and_oversized_context_dropped() -> None:
    chunks = trace_chunks([1, SEP] + [4] * 20 + [SEP], SEP, row_len=8, max_context=4)
    assert [len(c) for c in chunks] == [8]
    assert trace_chunks([1] * 6 + [SEP, 4, SEP], SEP, row_len=16, max_context=4) == []


def test_pack_masks_context_and_padding_and_separates_documents() -> None:
    a = Chunk([1, SEP, 5, 6], [False, False, True, True])
    b = Chunk([1, SEP, 7], [False, False, True])
    rows = list(pack([a, b, a], seq_len=8, pad_id=0))
    assert len(rows) == 2
    first = rows[0]
    assert first["input_ids"].tolist() == [1, SEP, 5, 6, 1, SEP, 7, 0]
    # targets are the next token where that token carries loss, else ignored
    assert first["targets"].tolist() == [IGNORE_INDEX, 5, 6, IGNORE_INDEX, IGNORE_INDEX, 7,
                                         IGNORE_INDEX, IGNORE_INDEX]
    assert first["doc_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 2]


def test_a_packed_chunk_computes_what_it_computes_alone() -> None:
    from trainer.config import ModelConfig
    from trainer.model import TraceLM

    torch.manual_seed(0)
    model = TraceLM(ModelConfig(vocab_size=120, seq_len=24, n_layer=2, n_head=2, d_model=32)).eval()
    a = Chunk([1, SEP, 5, 6, 7, SEP], [False, False, True, True, True, True])
    b = Chunk([1, 11, 12, SEP, 13, 14, SEP, 15], [False] * 4 + [True] * 4)
    row = next(pack([a, b], seq_len=24, pad_id=0))
    with torch.no_grad():
        packed, loss = model(row["input_ids"][None], row["targets"][None], row["doc_ids"][None])
        alone, _ = model(torch.tensor([b.ids]))
        alone_loss = torch.nn.functional.cross_entropy(alone[0, 3:-1], torch.tensor(b.ids[4:]))
        alone_a, _ = model(torch.tensor([a.ids]))
        loss_a = torch.nn.functional.cross_entropy(alone_a[0, 1:-1], torch.tensor(a.ids[2:]), reduction="sum")
    start = len(a)
    assert torch.allclose(packed[0, start : start + len(b)], alone[0], atol=1e-5)
    assert loss is not None
    assert torch.allclose(loss, (loss_a + alone_loss * 4) / 8, atol=1e-5)


def test_special_tokens_are_single_tokens(tokenizer: TraceTokenizer, texts: list[str]) -> None:
    for token in CWM_SPECIAL_TOKENS:
        assert len(tokenizer.encode(token)) == 1
    text = texts[0]
    ids = tokenizer.encode(text)
    assert ids.count(tokenizer.frame_sep_id) == text.count(FRAME_SEP)
    assert tokenizer.decode(ids) == text
    assert TraceTokenizer.from_str(tokenizer.to_str()).encode(text) == ids


def test_packed_rows_have_loss_only_on_frame_tokens(harvested: Path, tokenizer: TraceTokenizer) -> None:
    traces = TraceDataset([harvested], DataConfig(), split="all")
    rows = list(PackedDataset(traces, tokenizer, seq_len=128))
    assert rows and all(r["input_ids"].shape == (128,) for r in rows)
    source_start = tokenizer.encode("<|trace_context_start|>")[0]
    for row in rows:
        ids, targets = row["input_ids"], row["targets"]
        trained = targets != IGNORE_INDEX
        assert trained.any()
        # the token after <|trace_context_start|> is source text: never a target
        after_context = (ids == source_start).nonzero().flatten()
        assert not trained[after_context].any()
        assert (targets[trained] != tokenizer.pad_id).all()


def test_a_user_tokenizer_without_the_markers_gets_them(texts: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.train_from_iterator(texts[:20], trainers.BpeTrainer(vocab_size=300, show_progress=False))
    wrapped = TraceTokenizer(plain)
    for token in CWM_SPECIAL_TOKENS:
        assert len(wrapped.encode(token)) == 1


TRICKY = [
    "<|frame_sep|><|line_sep|>{}<|action_sep|>",  # markers side by side, at both ends
    "  x = 'é€😀'\r\n<|frame_sep|> y<|frame_sep|>\t\n",  # spaces and controls around markers
    "<|frame_sep|<|frame_sep|>|>",  # a broken marker next to a real one
]


def test_piecewise_encoding_gives_the_ids_of_the_whole_text(
    tokenizer: TraceTokenizer, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces between markers are encoded once and remembered: the ids must be those of the whole."""
    import trainer.tokenizer

    monkeypatch.setattr(trainer.tokenizer, "MEMO_PIECES", 40)  # the memo fills and empties
    fresh = TraceTokenizer.from_str(tokenizer.to_str())
    assert fresh._split is not None  # the memoised path is the one under test
    all_texts = TRICKY + texts
    got = [ids for i in range(0, len(all_texts), 7) for ids in fresh.encode_batch(all_texts[i : i + 7])]
    whole = fresh.tokenizer.encode_batch(all_texts, add_special_tokens=False)
    assert got == [e.ids for e in whole]
    assert 0 < len(fresh._memo) <= 40 + 7 * max(t.count("<|") + 1 for t in all_texts)


def test_a_tokenizer_of_another_kind_is_encoded_whole(texts: list[str]) -> None:
    """Metaspace prepends its marker to the first piece only: encoding piece by piece would
    differ, so tokenizers other than a plain byte-level BPE are never split."""
    import re

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    first = Tokenizer(models.BPE())
    first.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    first.train_from_iterator(
        texts[:20], trainers.BpeTrainer(vocab_size=300, special_tokens=list(CWM_SPECIAL_TOKENS),
                                        show_progress=False)
    )
    wrapped = TraceTokenizer(first)
    assert wrapped._split is None
    text = texts[0]
    whole = first.encode(text, add_special_tokens=False).ids
    assert wrapped.encode_batch([text]) == [whole]
    markers = re.compile("(" + "|".join(map(re.escape, CWM_SPECIAL_TOKENS)) + ")")
    piecewise = [
        i
        for n, piece in enumerate(markers.split(text))
        for i in ([first.token_to_id(piece)] if n % 2 else first.encode(piece, add_special_tokens=False).ids)
    ]
    assert piecewise != whole


def test_batches_are_the_collated_rows_in_one_storage(harvested: Path, tokenizer: TraceTokenizer) -> None:
    from torch.utils.data import default_collate

    from trainer.packing import FIELDS, PackedBatches

    def rows() -> PackedDataset:
        return PackedDataset(TraceDataset([harvested], DataConfig(), split="all"), tokenizer, seq_len=64)

    expected = list(rows())
    batches = list(PackedBatches(rows(), batch_size=5))
    assert [b["input_ids"].shape[0] for b in batches] == [5] * (len(expected) // 5) + (
        [len(expected) % 5] if len(expected) % 5 else []
    )
    for n, batch in enumerate(batches):
        want = default_collate(expected[5 * n : 5 * n + 5])
        assert all(torch.equal(batch[f], want[f]) for f in FIELDS)
        storages = {batch[f].untyped_storage().data_ptr() for f in FIELDS}
        assert len(storages) == 1  # one shared-memory segment per batch from a worker


def test_a_tokenizer_files_padding_and_truncation_are_turned_off(tokenizer: TraceTokenizer, texts: list[str]) -> None:
    from tokenizers import Tokenizer

    padded = Tokenizer.from_str(tokenizer.to_str())
    padded.enable_padding(pad_id=tokenizer.pad_id, pad_token="<|pad|>", length=4096)
    padded.enable_truncation(max_length=8)
    wrapped = TraceTokenizer(padded)
    whole = [e.ids for e in tokenizer.tokenizer.encode_batch(texts[:5], add_special_tokens=False)]
    assert wrapped.encode_batch(texts[:5]) == whole
    assert all(tokenizer.pad_id not in ids for ids in whole)


def test_added_tokens_that_are_not_special_are_encoded_whole(tokenizer: TraceTokenizer) -> None:
    """tokenizers matches the markers first, then other added tokens in the gaps: one overlapping
    a marker ("x<|") would be cut differently piece by piece."""
    from tokenizers import Tokenizer

    extended = Tokenizer.from_str(tokenizer.to_str())
    extended.add_tokens(["x<|"])
    wrapped = TraceTokenizer(extended)
    assert wrapped._split is None
    text = "x<|frame_sep|>y"
    assert wrapped.encode_batch([text]) == [extended.encode(text, add_special_tokens=False).ids]
