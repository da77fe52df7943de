"""A byte-level BPE tokenizer trained on the shards' CWM text, with each CWM marker one token."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainer.errors import TrainerError

log = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"


def cwm_special_tokens() -> list[str]:
    """The CWM format's markers (from schemas/cwm.py) plus our padding token."""
    from schemas.cwm import CWM_SPECIAL_TOKENS

    return [*CWM_SPECIAL_TOKENS, PAD_TOKEN]


def single_threaded_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: BPE on one thread in each worker process.

    A worker is forked from a parent whose tokenizer thread pool already ran (fitting the BPE),
    and the pool's threads do not survive the fork. `tokenizers` notices and turns parallelism
    off in the child, unless TOKENIZERS_PARALLELISM=true is set, as many Hugging Face set-ups do:
    then the first batch encoded in a worker waits forever. The variable is read at every
    encode, so setting it here, in the child, is enough; the workers are the parallelism.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class TraceTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of the markers the trainer needs."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [t for t in cwm_special_tokens() if tokenizer.token_to_id(t) is None]
        if missing:
            log.warning("tokenizer lacks %s; adding them as special tokens", missing)
            tokenizer.add_special_tokens(missing)
        self.tokenizer = tokenizer
        self.pad_id = self._id(PAD_TOKEN)
        self.bos_id = self._id("<|begin_of_text|>")
        self.eos_id = self._id("<|end_of_text|>")
        self.frame_sep_id = self._id("<|frame_sep|>")

    def _id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise TrainerError(f"tokenizer has no id for {token}")
        return token_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, markers included (so decoded frames can be parsed)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_str(cls, text: str) -> TraceTokenizer:
        return cls(Tokenizer.from_str(text))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> TraceTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises plain Exception for unreadable files
            raise TrainerError(f"cannot load tokenizer file {path}: {exc}") from exc


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> TraceTokenizer:
    """Train a GPT-2 style byte-level BPE on `texts`; markers never merge with their neighbours."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=cwm_special_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return TraceTokenizer(tokenizer)
