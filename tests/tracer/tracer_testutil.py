"""Tracer test helpers: the backend(s) under test (chosen by $WORLDTRACE_BACKEND), subprocess runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    JSON list of the problems its checks find) under every pyenv Python, and expects none."""
    pythons = pyenv_pythons()

    @pytest.mark.multipython
    @pytest.mark.parametrize("version", sorted(pythons))
    def test_under_every_python(version: str) -> None:
        stdout = script_stdout(pythons[version], script)
        assert json.loads(stdout) == [], stdout[-3000:]

    return test_under_every_python


def host_python() -> str:
    return sys.executable
