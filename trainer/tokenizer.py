"""A byte-level BPE tokenizer trained on the shards' CWM text, with each CWM marker one token."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainer.errors import TrainerError

log = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"

# Pieces of text between markers, memoised: source lines and most locals repeat from frame to frame.
# The memo is emptied when it holds more than this many pieces (about 30 MB).
MEMO_PIECES = 1 << 16


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
        if tokenizer.padding is not None or tokenizer.truncation is not None:
            # Rows are packed and padded here; a file's own padding or truncation would put pad
            # ids inside the traces or cut them.
            log.warning("tokenizer: its padding/truncation settings are turned off")
            tokenizer.no_padding()
            tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.pad_id = self._id(PAD_TOKEN)
        self.bos_id = self._id("<|begin_of_text|>")
        self.eos_id = self._id("<|end_of_text|>")
        self.frame_sep_id = self._id("<|frame_sep|>")
        self._added_ids = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()}
        self._split = self._piecewise_split()
        self._memo: dict[str, list[int]] = {}

    def _id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise TrainerError(f"tokenizer has no id for {token}")
        return token_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _piecewise_split(self) -> Callable[[str], list[str]] | None:
        """`re.split` at the added tokens (markers), where encoding the pieces between them one by
        one gives exactly the ids of encoding the whole text: a byte-level BPE without normaliser,
        prefix space or dropout, whose added tokens match literally, as `train_tokenizer` makes.
        None for any other tokenizer (a file given with --tokenizer), which is encoded whole."""
        config = json.loads(self.tokenizer.to_str())
        pre, model = config.get("pre_tokenizer") or {}, config.get("model") or {}
        plain = (
            config.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("add_prefix_space") is False
            and model.get("type") == "BPE" and model.get("dropout") in (None, 0.0)
        )
        added = self.tokenizer.get_added_tokens_decoder().values()
        # Non-special added tokens are matched after the special ones, in the gaps: one regex
        # over both would cut a marker that overlaps one of them. `train_tokenizer` adds none.
        if not plain or any(t.lstrip or t.rstrip or t.single_word or not t.special for t in added):
            return None
        by_length = sorted(self._added_ids, key=len, reverse=True)  # longest match first
        return re.compile("(" + "|".join(map(re.escape, by_length)) + ")").split

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, markers included as their ids (no BOS/EOS added)."""
        if self._split is None:
            return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        memo = self._memo
        if len(memo) > MEMO_PIECES:
            memo.clear()
        split = [self._split(text) for text in texts]  # text, marker, text, marker, ..., text
        missing = list({p for pieces in split for p in pieces[0::2] if p and p not in memo})
        if missing:
            encoded = self.tokenizer.encode_batch(missing, add_special_tokens=False)
            memo.update(zip(missing, (e.ids for e in encoded)))
        added, out = self._added_ids, []
        for pieces in split:
            ids: list[int] = []
            for i, piece in enumerate(pieces):
                if i & 1:
                    ids.append(added[piece])
                elif piece:
                    ids += memo[piece]
            out.append(ids)
        return out

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
