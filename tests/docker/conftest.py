"""Fixtures for the Docker integration tests (the engine client and the base image are in
tests/conftest.py): helpers that assert no container of a run is left behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def run_id(docker_client: Any) -> Iterator[str]:
    """A fresh run id; after the test, no container of it may be left (then they are removed)."""
    rid = f"test-{uuid.uuid4().hex[:12]}"
    yield rid
    left = docker_client.containers.list(all=True, filters={"label": f"worldtrace.run={rid}"})
    for container in left:
        container.remove(force=True, v=True)
    assert not left, f"containers of run {rid} were left behind: {[c.short_id for c in left]}"


@pytest.fixture
def fake_tracer(tmp_path: Path) -> Callable[[str], Path]:
    """Makes a stand-in `tracer` package whose `python -m tracer ...` runs the given source."""

    def make(main_source: str) -> Path:
        pkg = tmp_path / f"lib-{uuid.uuid4().hex[:8]}" / "tracer"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "__main__.py").write_text(main_source)
        return pkg

    return make
