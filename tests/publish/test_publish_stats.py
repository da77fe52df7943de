"""Dataset statistics from the events-per-trace histogram, size categories and split specs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from harvest.errors import ConfigError
from harvest.publish import SplitSpec
from harvest.publish.stats import DatasetStats, size_category


def test_events_summary_matches_the_sorted_values() -> None:
    rng = random.Random(7)
    values = [rng.randint(1, 500) for _ in range(1001)]
    stats = DatasetStats(n_events=Counter(values))
    ordered = sorted(values)
    assert stats.events_summary() == {
        "min": ordered[0],
        "mean": round(sum(values) / len(values), 1),
        "median": ordered[len(values) // 2],
        "p90": ordered[int(0.9 * len(values))],
        "max": ordered[-1],
        "total": sum(values),
    }


@pytest.mark.parametrize(
    ("rows", "category"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000_000, "100M<n<1B")]
)
def test_size_categories(rows: int, category: str) -> None:
    assert size_category(rows) == category


def test_split_spec_fractions_follow_the_hash() -> None:
    spec = SplitSpec.parse("train=0.8,validation=0.1,test=0.1")
    counts = Counter(spec.assign(f"program-{i}") for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.02
    assert abs(counts["test"] / 20_000 - 0.1) < 0.02
    assert SplitSpec.parse("train").names == ("train",)
    with pytest.raises(ConfigError, match="not a number"):
        SplitSpec.parse("train=x")
    with pytest.raises(ConfigError, match="twice"):
        SplitSpec.parse("a=0.5,a=0.5")
