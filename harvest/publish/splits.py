"""Split specs ("train=0.95,test=0.05") and the deterministic program -> split assignment."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from harvest.errors import ConfigError

SPLIT_NAME = re.compile(r"^\w+$", re.ASCII)
# `datasets` refuses these as split names (in any case): "all" is its union of every split.
RESERVED_SPLIT_NAMES = frozenset({"all"})


def _check_name(name: str) -> None:
    if not SPLIT_NAME.match(name):
        raise ConfigError(f"--split: split name {name!r} must be word characters only ([A-Za-z0-9_])")
    if name.lower() in RESERVED_SPLIT_NAMES:
        raise ConfigError(
            f"--split: {name!r} cannot be a split name: Hugging Face datasets reserves it for the union of all splits"
        )


@dataclass(frozen=True)
class SplitSpec:
    """Named fractions that sum to 1; a program goes to one split, chosen by a hash of its id."""

    names: tuple[str, ...]
    fractions: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        names: list[str] = []
        fractions: list[float] = []
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            name = name.strip()
            if not sep:
                if len(text.split(",")) == 1 and SPLIT_NAME.match(name):
                    _check_name(name)
                    return cls((name,), (1.0,))
                raise ConfigError(f"--split {text!r}: expected NAME=FRACTION pairs, e.g. train=0.95,test=0.05")
            _check_name(name)
            if name in names:
                raise ConfigError(f"--split: split {name!r} given twice")
            try:
                fraction = float(value)
            except ValueError as e:
                raise ConfigError(f"--split: {value!r} is not a number") from e
            if not 0 < fraction <= 1:
                raise ConfigError(f"--split: the fraction of {name!r} must be in (0, 1], not {fraction}")
            names.append(name)
            fractions.append(fraction)
        if abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"--split {text!r}: the fractions sum to {sum(fractions):g}, not 1")
        return cls(tuple(names), tuple(fractions))

    def assign(self, program_id: str) -> str:
        """The split of a program: the same for every trace of it, on every run and machine."""
        digest = hashlib.sha256(program_id.encode("utf-8", "surrogatepass")).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for name, fraction in zip(self.names, self.fractions, strict=True):
            edge += fraction
            if point < edge:
                return name
        return self.names[-1]

    def __str__(self) -> str:
        return ",".join(f"{n}={f:g}" for n, f in zip(self.names, self.fractions, strict=True))
