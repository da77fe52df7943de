"""The tracer's code never looks builtins up live (tracer/_builtins.py).

A program that replaces ``builtins.len`` would otherwise have its replacement called from inside
the recorder. The behaviour is tested end to end by the ``program_patches_builtins`` check
(tracer_golden_runner.py, every interpreter and backend) and the ``breaks-builtins`` batch job;
this test keeps every module of the package wired to the snapshot, including modules added later.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types

import pytest

import tracer
from tracer._builtins import PINNED


def _modules() -> list:
    names = [info.name for info in pkgutil.walk_packages(tracer.__path__, "tracer.")]
    return [tracer] + [importlib.import_module(name) for name in sorted(names) if name != "tracer._builtins"]


def _functions(module: types.ModuleType):
    """The functions and methods written in the module's file (not those dataclasses generates)."""
    for value in vars(module).values():
        candidates = [value]
        if isinstance(value, type) and value.__module__ == module.__name__:
            candidates = [getattr(attr, "__func__", attr) for attr in vars(value).values()]
        for fn in candidates:
            if isinstance(fn, types.FunctionType) and fn.__code__.co_filename == module.__file__:
                yield fn


def test_every_tracer_module_sees_the_snapshot() -> None:
    modules = _modules()
    assert len(modules) > 20
    assert [m.__name__ for m in modules if vars(m).get("__builtins__") is not PINNED] == []


@pytest.mark.skipif(sys.version_info < (3, 10), reason="functions carry __builtins__ from 3.10")
def test_every_tracer_function_sees_the_snapshot() -> None:
    # A function takes its module's __builtins__ when it is defined: one defined above the
    # module's `from ._builtins import PINNED as __builtins__` would still see the live builtins.
    functions = [f for m in _modules() for f in _functions(m)]
    assert len(functions) > 300
    assert [f.__qualname__ for f in functions if f.__builtins__ is not PINNED] == []
