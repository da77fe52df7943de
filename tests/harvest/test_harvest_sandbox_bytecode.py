"""The sandboxes ship the tracer's bytecode: runners in images with the host's Python skip compiling it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from harvest.sandbox.base import TRACER_DIR
from harvest.sandbox.local import LocalSandbox


def test_a_sandbox_writes_the_tracers_bytecode_beside_its_sources(tmp_path: Path) -> None:
    tracer = tmp_path / "tracer"
    shutil.copytree(TRACER_DIR, tracer, ignore=shutil.ignore_patterns("__pycache__"))
    modules = [tracer / "batch.py", tracer / "_batch_zygote.py", tracer / "backends" / "settrace.py"]
    assert not any(Path(importlib.util.cache_from_source(str(m))).exists() for m in modules)
    LocalSandbox(tracer_dir=tracer)
    for module in modules:
        assert Path(importlib.util.cache_from_source(str(module))).is_file(), module
