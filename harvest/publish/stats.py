"""Statistics of a published dataset, gathered batch by batch while it is written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def _counts(column: pa.ChunkedArray | pa.Array) -> Counter[str]:
    found: Counter[str] = Counter()
    for item in pc.value_counts(column).to_pylist():
        found[str(item["values"])] += int(item["counts"])
    return found


@dataclass
class SplitStats:
    rows: int = 0
    events: int = 0
    programs: set[str] = field(default_factory=set)
    files: int = 0
    bytes: int = 0
    arrow_bytes: int = 0


@dataclass
class DatasetStats:
    """Counts over the published rows (after filters and de-duplication) and over what was dropped."""

    read: int = 0
    dropped_duplicates: int = 0
    dropped_by_status: int = 0
    dropped_by_max_events: int = 0
    dropped_nondeterministic: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    python_versions: Counter[str] = field(default_factory=Counter)
    tracer_versions: Counter[str] = field(default_factory=Counter)
    images: Counter[str] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    n_events: Counter[int] = field(default_factory=Counter)  # events per trace -> traces
    splits: dict[str, SplitStats] = field(default_factory=dict)

    def add(self, split: str, batch: pa.RecordBatch) -> None:
        """Count the rows of `batch`, all published in `split`."""
        self.statuses.update(_counts(batch.column("status")))
        self.python_versions.update(_counts(batch.column("python_version")))
        self.tracer_versions.update(_counts(batch.column("tracer_version")))
        self.images.update(_counts(batch.column("image")))
        self.backends.update(_counts(batch.column("backend")))
        self.truncated += int(pc.sum(pc.cast(batch.column("truncated"), pa.int64())).as_py() or 0)
        events = batch.column("n_events").to_pylist()
        self.n_events.update(events)
        part = self.splits.setdefault(split, SplitStats())
        part.rows += batch.num_rows
        part.events += sum(events)
        part.programs.update(batch.column("program_id").to_pylist())

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits.values())

    def events_summary(self) -> dict[str, float]:
        """min, mean, median, p90, max and total of events per trace (from the histogram)."""
        count = sum(self.n_events.values())
        if not count:
            return {"min": 0, "mean": 0, "median": 0, "p90": 0, "max": 0, "total": 0}
        total = sum(value * n for value, n in self.n_events.items())
        values = sorted(self.n_events.items())

        def quantile(q: float) -> int:
            rank = min(count - 1, int(q * count))
            seen = 0
            for value, n in values:
                seen += n
                if seen > rank:
                    return value
            return values[-1][0]

        return {
            "min": values[0][0],
            "mean": round(total / count, 1),
            "median": quantile(0.5),
            "p90": quantile(0.9),
            "max": values[-1][0],
            "total": total,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "read": self.read,
            "dropped": {
                "duplicates": self.dropped_duplicates,
                "status": self.dropped_by_status,
                "max_events": self.dropped_by_max_events,
                "nondeterministic": self.dropped_nondeterministic,
            },
            "statuses": dict(self.statuses.most_common()),
            "python_versions": dict(sorted(self.python_versions.items())),
            "tracer_versions": dict(sorted(self.tracer_versions.items())),
            "images": dict(self.images.most_common()),
            "backends": dict(self.backends.most_common()),
            "truncated": self.truncated,
            "events_per_trace": self.events_summary(),
            "splits": {
                name: {
                    "rows": s.rows,
                    "events": s.events,
                    "programs": len(s.programs),
                    "files": s.files,
                    "bytes": s.bytes,
                }
                for name, s in self.splits.items()
            },
        }


def size_category(rows: int) -> str:
    """The Hugging Face `size_categories` tag for a number of rows."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
        (10_000_000_000, "1B<n<10B"),
    ]
    for bound, name in bounds:
        if rows < bound:
            return name
    return "n>1T" if rows >= 1_000_000_000_000 else "10B<n<100B"
