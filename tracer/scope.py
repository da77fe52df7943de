"""Which code is the program's own: the files the tracer records (others run untraced)."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import sys
import sysconfig

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

_TRACER_DIR = os.path.dirname(os.path.abspath(__file__))


_getcwd = os.getcwd


def absolute_path(path: str) -> str:
    """``os.path.abspath(path)`` for a str path on POSIX, computed here.

    Scope decisions are made while the program runs (a code object's first event), and
    posixpath's functions look their builtins and helpers up live: a program, or a test's
    monkeypatch, may have replaced ``isinstance`` or ``os.path.join`` (tracer/_builtins.py).
    """
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    # POSIX keeps exactly two leading slashes; '.' and empty parts go, '..' removes one part
    # (none above the root), as posixpath.normpath does.
    lead = "//" if path.startswith("//") and not path.startswith("///") else "/"
    parts: list = []
    for part in path.split("/"):
        if part == ".." and parts:
            parts.pop()
        elif part and part != "." and part != "..":
            parts.append(part)
    return lead + "/".join(parts)


def glob_matcher(pattern: str):
    """``fnmatch.fnmatchcase(name, pattern)`` as a compiled regex's ``match``."""
    return re.compile(fnmatch.translate(pattern)).match


@functools.lru_cache(maxsize=None)  # sysconfig.get_paths() costs ~1 ms a call: half a small trace
def _library_dirs() -> list:
    """Directories of the stdlib and installed packages (never the program's own code)."""
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            path = sysconfig.get_paths().get(key)
        except Exception:
            path = None
        if path:
            dirs.add(os.path.abspath(path))
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        dirs.add(os.path.join(os.path.abspath(prefix), "lib"))
    dirs.add(_TRACER_DIR)
    return sorted(dirs)


class CachedScope:
    """A scope: ``scope(filename)`` says whether code of that file is recorded; each file's
    decision (``_decide``) is made once. ``include`` / ``exclude``: path globs, compiled now, since
    decisions are made while the program runs (see absolute_path)."""

    def __init__(self, include=(), exclude=()) -> None:
        self._cache: dict = {}
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._include = [glob_matcher(pattern) for pattern in self.include]
        self._exclude = [glob_matcher(pattern) for pattern in self.exclude]

    def __call__(self, filename: str) -> bool:
        hit = self._cache.get(filename)
        if hit is None:
            hit = self._decide(filename)
            self._cache[filename] = hit
        return hit

    def _decide(self, filename: str) -> bool:
        raise NotImplementedError


class Scope(CachedScope):
    """Decide, per file name, whether code is in scope; decisions are cached.

    By default only the program's own file and files below its directory are in scope,
    never the stdlib, site-packages or the tracer itself. ``include`` globs add files,
    ``exclude`` globs remove them (exclude wins).
    """

    def __init__(self, program_file: str | None, include=(), exclude=()) -> None:
        super().__init__(include, exclude)
        self.program_file = program_file
        # The same file by another name (a module's absolute __file__ for a relative or virtual one).
        self.program_abs = os.path.abspath(program_file) if program_file else None
        self.roots = []
        if program_file and os.path.exists(program_file):
            self.roots.append(os.path.dirname(os.path.abspath(program_file)) + os.sep)
        self.library_dirs = [d + os.sep for d in _library_dirs()]

    def _decide(self, filename: str) -> bool:
        absolute = absolute_path(filename) if not filename.startswith("<") else filename
        names = (filename, absolute)
        if any(match(n) for match in self._exclude for n in names):
            return False
        if self.program_file is not None and (filename == self.program_file or absolute == self.program_abs):
            return True
        if absolute.startswith(_TRACER_DIR + os.sep):
            return False  # whatever the globs say: the recorder would record itself
        if any(match(n) for match in self._include for n in names):
            return True
        if filename.startswith("<"):
            return False
        if "site-packages" in absolute or "dist-packages" in absolute:
            return False
        if any(absolute.startswith(d) for d in self.library_dirs) and not any(
            absolute.startswith(r) and len(r) > len(d) for r in self.roots for d in self.library_dirs
        ):
            return False
        return any(absolute.startswith(r) for r in self.roots)
