"""Tracer test helpers: the backend(s) under test (chosen by $WORLDTRACE_BACKEND), subprocess runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from images.interpreter import NEWER_PYTHONS, image_python
from tracer.env import PYBEHAVIOR

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACER_TESTS = Path(__file__).resolve().parent


def _shared_conftest():
    """tests/conftest.py, loaded under its own name (``conftest`` is ambiguous here)."""
    name = "worldtrace_tests_shared_conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


pyenv_pythons = _shared_conftest().pyenv_pythons
corpora_dir = _shared_conftest().corpora_dir
docker_available = _shared_conftest().docker_available


def versions_under_test() -> list[str]:
    """The CPython versions the multi-version tests run under: pyenv's, then those of the catalog's
    images (images.interpreter.NEWER_PYTHONS, run through `docker run`)."""
    return sorted(pyenv_pythons(), key=_version_key) + sorted(NEWER_PYTHONS, key=_version_key)


def _version_key(version: str) -> tuple:
    return tuple(int(part) for part in version.split("."))


def interpreter(version: str) -> str:
    """A command that runs CPython ``version`` ("3.12") like its ``python3.X``: pyenv's, or the
    catalog image's that has it. Skips the test when there is neither."""
    found = pyenv_pythons().get(version)
    if found is not None:
        return found
    if version in NEWER_PYTHONS:
        return _image_interpreter(NEWER_PYTHONS[version])
    pytest.skip(f"CPython {version} not found by pyenv")


_IMAGE_INTERPRETERS: dict = {}  # image -> the wrapper's path, or the exception its build raised


def _image_interpreter(image: str) -> str:
    """python3 of catalog image ``image`` (built on first use) with the repository and the corpora
    mounted read-only and the temporary folder writable. A failed build fails every test that
    needs the image, with its message, and is not tried again in this session."""
    if not docker_available():
        pytest.skip(f"{image}'s Python runs in Docker: no engine answers `docker info` (run scripts/setup-docker.sh)")
    if image not in _IMAGE_INTERPRETERS:
        read_only = [REPO_ROOT] + ([corpora_dir()] if corpora_dir().is_dir() else [])
        try:
            _IMAGE_INTERPRETERS[image] = str(image_python(image, read_only=read_only, writable=[tempfile.gettempdir()]))
        except Exception as exc:  # an ImageBuildError, an engine error
            _IMAGE_INTERPRETERS[image] = exc
    found = _IMAGE_INTERPRETERS[image]
    if isinstance(found, Exception):
        pytest.fail(f"cannot build image {image} for its Python: {found}")
    return found


def host_backends() -> list[str]:
    """Backends to run the host suite with: $WORLDTRACE_BACKEND, else every one available."""
    forced = os.environ.get("WORLDTRACE_BACKEND", "").strip().lower()
    available = ["settrace"] + (["monitoring"] if PYBEHAVIOR.has_sys_monitoring else [])
    if forced and forced != "auto":
        return [forced]
    return available


@pytest.fixture(params=host_backends())
def backend(request) -> str:
    if request.param == "monitoring" and not PYBEHAVIOR.has_sys_monitoring:
        pytest.skip("sys.monitoring isn't available in this Python")
    return request.param


def backends_for(version: str) -> list[str]:
    """Backends an interpreter of ``version`` ("3.12") supports."""
    minor = int(version.split(".")[1])
    return ["settrace", "monitoring"] if minor >= 12 else ["settrace"]


def run_in(python: str, *args: str, timeout: float = 600, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a tests/tracer helper script under another interpreter with the repo importable."""
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.pop("WORLDTRACE_BACKEND", None)
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run(
        [python, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO_ROOT)
    )


def script_stdout(python: str, script: str, timeout: float = 300) -> str:
    """Run a tests/tracer module as a script (its checks without pytest) under `python`; its
    stdout, once it has exited cleanly."""
    proc = run_in(python, script, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def no_problems_under_every_python(script: str):
    """A test that runs the tests/tracer module ``script`` as a script (stdlib only: it prints the
    JSON list of the problems its checks find) under every Python of versions_under_test, and expects none."""

    @pytest.mark.multipython
    @pytest.mark.parametrize("version", versions_under_test())
    def test_under_every_python(version: str) -> None:
        stdout = script_stdout(interpreter(version), script)
        assert json.loads(stdout) == [], stdout[-3000:]

    return test_under_every_python


def host_python() -> str:
    return sys.executable
