"""Where a dataset came from: the harvest run manifests and shard manifests beside its input shards."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvest import recheck
from harvest.run_manifest import RUN_MANIFEST, RUNS_DIR
from schemas.shards import MANIFEST_NAME


@dataclass(frozen=True)
class RunManifest:
    """One harvest run manifest found next to the input."""

    path: Path
    sha256: str
    data: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.data.get("run_id") or self.sha256[:12])


def _folders(input_path: str, shard_files: list[str]) -> list[Path]:
    """The input folder (when PATH is one) and every folder holding an input shard."""
    folders: dict[Path, None] = {}
    if os.path.isdir(input_path):
        folders[Path(input_path).resolve()] = None
    for file in shard_files:
        folders[Path(file).resolve().parent] = None
    return list(folders)


def find_run_manifests(input_path: str, shard_files: list[str]) -> list[RunManifest]:
    """Run manifests (latest and history) in the folders of the input, each run once."""
    found: dict[str, RunManifest] = {}
    for folder in _folders(input_path, shard_files):
        candidates = [folder / RUN_MANIFEST, *sorted((folder / RUNS_DIR).glob("*.json"))]
        for path in candidates:
            if not path.is_file():
                continue
            raw = path.read_bytes()
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            manifest = RunManifest(path, hashlib.sha256(raw).hexdigest(), data)
            found.setdefault(manifest.run_id, manifest)
    return list(found.values())


@dataclass(frozen=True)
class DeterminismReport:
    """A harvest's determinism check (`harvest --recheck`, harvest/recheck.py) found next to the input."""

    path: Path
    sha256: str
    data: dict[str, Any]

    def flagged(self) -> set[str]:
        """Trace ids of the programs that traced differently when run again."""
        return recheck.flagged(self.data)


def find_determinism_reports(input_path: str, shard_files: list[str]) -> list[DeterminismReport]:
    """The determinism reports in the folders of the input."""
    found = []
    for folder in _folders(input_path, shard_files):
        data = recheck.load_report(folder)
        if data is not None:
            raw = (folder / recheck.REPORT).read_bytes()
            found.append(DeterminismReport(folder / recheck.REPORT, hashlib.sha256(raw).hexdigest(), data))
    return found


def find_shard_manifests(input_path: str, shard_files: list[str]) -> list[Path]:
    """The per-folder shard manifests (`_manifest.json`) of the input shards' folders."""
    return [
        folder / MANIFEST_NAME
        for folder in _folders(input_path, shard_files)
        if (folder / MANIFEST_NAME).is_file()
    ]
