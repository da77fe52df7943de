"""Turn programs into work units: grouped by image, `programs_per_unit` each, ids from content.

A unit's id is a hash of its image, the settings that decide its traces, the tracer's version and its
programs, so the same command always plans the same units and a re-run maps every unit to the same
shard name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harvest.errors import ConfigError
from harvest.inputs import Program
from harvest.sandbox import base as sb
from tracer import __version__ as tracer_version

DEFAULT_IMAGE = "base-py311"
# Each unit pays a sandbox start and stop, a batch runner start and the host's per-unit work: ~0.5 s
# of CPU here (docs/harvest.md "Unit size"), 16% of a unit of 400 CRUXEval-sized programs, 28% of 200.
DEFAULT_PROGRAMS_PER_UNIT = 400
PLAN_VERSION = 1  # bump when the way units are formed changes


@dataclass(frozen=True)
class HarvestSettings:
    """Everything about a harvest that decides its traces and how its sandboxes are limited."""

    image: str = DEFAULT_IMAGE  # for programs that name none: the first of `images`
    images: tuple[str, ...] = ()  # every image the run was asked for (--image, repeated)
    sandbox: str = "docker"
    backend: str = "auto"
    timeout_s: float = sb.DEFAULT_PROGRAM_TIMEOUT_S  # per program, enforced by the batch runner
    max_events: int = sb.DEFAULT_MAX_EVENTS
    max_value_chars: int = sb.DEFAULT_MAX_VALUE_CHARS
    memory_mb: int = sb.DEFAULT_MEMORY_MB
    cpus: float = sb.DEFAULT_CPUS
    pids: int = sb.DEFAULT_PIDS
    tmpfs_mb: int = sb.DEFAULT_TMPFS_MB
    programs_per_unit: int = DEFAULT_PROGRAMS_PER_UNIT
    unit_timeout_s: float | None = None  # None: derived from the unit's size (unit_deadline)

    def __post_init__(self) -> None:
        if self.programs_per_unit < 1:
            raise ConfigError(f"--programs-per-unit must be >= 1, got {self.programs_per_unit}")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s:g}")
        if self.max_events < 1:
            raise ConfigError(f"--max-events must be >= 1, got {self.max_events}")

    def trace_fingerprint(self) -> dict[str, object]:
        """The settings that change what a trace contains (sandbox limits included)."""
        data = asdict(self)
        data.pop("unit_timeout_s")  # only decides when the host gives up on a unit
        data.pop("image")  # each unit names its own image
        data.pop("images")
        return data

    def unit_deadline(self, programs: Sequence[Program]) -> float:
        """Host-side deadline of a unit: every program at its own deadline, plus start-up slack."""
        if self.unit_timeout_s is not None:
            return self.unit_timeout_s
        return 120.0 + sum((p.timeout_s or self.timeout_s) + 1.0 for p in programs)


def shard_name(unit_id: str) -> str:
    """The file name of unit `unit_id`'s shard."""
    return f"unit-{unit_id}.parquet"


@dataclass(frozen=True)
class WorkUnit:
    """Programs that run together in one sandbox and land in one shard."""

    unit_id: str
    image: str
    programs: tuple[Program, ...]

    @property
    def shard_name(self) -> str:
        """The shard's file name; deterministic, so a re-run overwrites rather than duplicates."""
        return shard_name(self.unit_id)

    def __len__(self) -> int:
        return len(self.programs)


def plan_units(programs: Sequence[Program], settings: HarvestSettings) -> list[WorkUnit]:
    """Group programs by image (images sorted by name, programs in input order) and cut units."""
    by_image: dict[str, list[Program]] = {}
    for program in programs:
        by_image.setdefault(program.image or settings.image, []).append(program)
    # The tracer's version too: one of another version records other traces of the same programs,
    # so it plans other units, and a folder never mixes the two (see shard_io.check_no_overlap).
    fingerprint = json.dumps(
        {"plan": PLAN_VERSION, "settings": settings.trace_fingerprint(), "tracer": tracer_version}, sort_keys=True
    )
    units: list[WorkUnit] = []
    size = settings.programs_per_unit
    for image in sorted(by_image):
        members = by_image[image]
        for start in range(0, len(members), size):
            chunk = tuple(members[start : start + size])
            units.append(WorkUnit(unit_id=_unit_id(fingerprint, image, chunk), image=image, programs=chunk))
    return units


def _unit_id(fingerprint: str, image: str, programs: Sequence[Program]) -> str:
    digest = hashlib.sha256()
    digest.update(fingerprint.encode())
    digest.update(b"\0" + image.encode() + b"\0")
    for program in programs:
        digest.update(program.content_hash().encode() + b"\n")
    return digest.hexdigest()[:20]
