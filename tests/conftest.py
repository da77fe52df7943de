"""Shared fixtures: the third-party corpora and the availability of Docker, Ray and GPUs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPORA_ENV = "WORLDTRACE_CORPORA"


def corpora_dir() -> Path:
    """Where the real third-party corpora live: $WORLDTRACE_CORPORA or ../shared/corpora."""
    return Path(os.environ.get(CORPORA_ENV, REPO_ROOT.parent / "shared" / "corpora"))


def load_corpus(name: str) -> list[dict]:
    """Rows of corpora/<name>.jsonl, or skip the test with the reason."""
    path = corpora_dir() / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"corpus {path} not found (set {CORPORA_ENV} to the folder holding {name}.jsonl)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def cruxeval() -> list[dict]:
    return load_corpus("cruxeval")


@pytest.fixture(scope="session")
def mbpp() -> list[dict]:
    return load_corpus("mbpp")


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip unless a Docker engine answers (scripts/setup-docker.sh starts one)."""
    if not docker_available():
        pytest.skip("no Docker engine answers `docker info` (run scripts/setup-docker.sh)")


BASE_IMAGE = "base-py311"


@pytest.fixture(scope="session")
def docker_client(docker_engine: None) -> Any:
    from harvest.docker_client import get_client

    return get_client()


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    """The tag of base-py311, built now if missing (about a minute the first time, then cached)."""
    from images.builder import ImageBuilder
    from images.catalog import get_spec

    builder = ImageBuilder(docker_client)
    return builder.ensure(get_spec(BASE_IMAGE))


def pyenv_pythons() -> dict[str, str]:
    """CPython 3.8-3.13 interpreters that pyenv lists, as {"3.12": "/path/to/python3.12"}."""
    found: dict[str, str] = {}
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    versions = Path(root) / "versions"
    if versions.is_dir():
        for entry in sorted(versions.iterdir()):
            parts = entry.name.split(".")
            if len(parts) < 2 or not (parts[0] == "3" and parts[1].isdigit()):
                continue
            minor = int(parts[1])
            exe = entry / "bin" / f"python3.{minor}"
            if 8 <= minor <= 13 and exe.exists():
                found[f"3.{minor}"] = str(exe)
    return found


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample programs traced locally (no Docker): two shards (6 traces, 5 programs)
    with their manifest and a run manifest, for the publish and inspect tests."""
    from harvest.inspect.sample import SAMPLE_PROGRAMS, write_sample_shards

    out = tmp_path_factory.mktemp("shards")
    write_sample_shards(SAMPLE_PROGRAMS, out, rows_per_shard=3)
    (out / "harvest-run.json").write_text(
        '{"format": "worldtrace.harvest-run/1", "run_id": "test-run", "versions": {"tracer": "0.1.0"}}\n'
    )
    return out
