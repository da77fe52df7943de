"""The modules of a script's own folder that the script imports, to travel with it to the sandbox.

`python folder/main.py` puts `folder` first on `sys.path`, so `main.py` can import `helper.py` or a
package `pkg/` next to it. A harvested script runs elsewhere, so what it imports from its folder
goes with it (the batch job's `modules`, schemas/batch_jobs.md). The imports are read statically:
`import a`, `import a.b`, `from a import b`, `from a.b import c` anywhere in the script, and the
same plus relative imports in the modules found, transitively. Each name is looked up as Python
looks it up in the folder: a package `a/__init__.py`, then a module `a.py`, then a namespace
package folder `a/`. Names not found there (the standard library, installed packages, missing
modules) are left to the sandbox's Python. Imports with computed names (`importlib.import_module`,
`__import__`) are not followed. The data files the program reads: harvest/script_files.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from harvest.errors import ConfigError

# What may travel with one script: its modules' UTF-8 text and their number.
MAX_MODULE_BYTES = 256 * 1024
MAX_MODULE_FILES = 100


class ScriptModulesError(ConfigError):
    """A script's sibling modules cannot travel with it (unreadable, or over the bound)."""


@dataclass(frozen=True)
class _Found:
    """A module found in the folder: its file (None: a namespace package) and whether a package."""

    file: Path | None
    is_package: bool


def sibling_modules(script: Path, source: str) -> tuple[tuple[str, str], ...]:
    """(path relative to the script's folder, text) of every module of that folder the script
    imports, directly or through those modules, sorted by path; the script itself is never one.
    Raises ScriptModulesError for a module that is not UTF-8 text or a set over the bound."""
    root = script.parent
    found: dict[str, _Found | None] = {}  # module name -> where it is (None: not in the folder)
    shipped: dict[str, str] = {}
    todo = _imported_names(source, package=None)
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # `a.b` imports `a` first, then `b` from it
            name = ".".join(parts[:depth])
            if name not in found:
                module = found[name] = _find(root, parts[:depth])
                if module is not None and module.file is not None:
                    text = _ship(root, script, module.file, shipped)
                    if text is not None:
                        package = name if module.is_package else ".".join(parts[: depth - 1]) or None
                        todo.extend(_imported_names(text, package))
            module = found[name]
            if module is None or not module.is_package:
                break  # nothing below a module, or below what is not in the folder
    _check_bound(script, shipped)
    return tuple(sorted(shipped.items()))


def _ship(root: Path, script: Path, file: Path, shipped: dict[str, str]) -> str | None:
    """Add `file` to `shipped` and return its text (None: it is the script itself)."""
    if file.resolve() == script.resolve():
        return None  # imported by a module: it is in the folder anyway, as the script
    text = shipped[file.relative_to(root).as_posix()] = _read(file)
    return text


def _find(root: Path, parts: list[str]) -> _Found | None:
    """Module `parts` in `root` as the import system finds it there (parents already found)."""
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return _Found(base / "__init__.py", True)
    if base.with_name(parts[-1] + ".py").is_file():
        return _Found(base.with_name(parts[-1] + ".py"), False)
    if base.is_dir():
        return _Found(None, True)
    return None


def _imported_names(source: str, package: str | None) -> list[str]:
    """Absolute names of the modules `source` may import (with `from a import b`, both `a` and
    `a.b`: b may be a submodule). `package`: the package relative imports start from (None: the
    script, where they cannot be used). Source that does not compile imports nothing."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, package)
            if base is None:
                continue
            if base:
                names.append(base)
            names.extend(f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")
    return [name for name in names if name and all(part.isidentifier() for part in name.split("."))]


def _absolute_base(node: ast.ImportFrom, package: str | None) -> str | None:
    """The absolute module name `from ... import` reads from ('' for `from . import x` at the
    top; None when the relative import cannot be resolved)."""
    if not node.level:
        return node.module or ""
    if package is None:
        return None
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return None  # beyond the top-level package
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScriptModulesError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ScriptModulesError(f"{file}: cannot read it ({exc.strerror or exc})") from None


def _check_bound(script: Path, shipped: dict[str, str]) -> None:
    size = sum(len(text.encode("utf-8")) for text in shipped.values())
    if size > MAX_MODULE_BYTES or len(shipped) > MAX_MODULE_FILES:
        raise ScriptModulesError(
            f"{script}: the modules it imports from its folder come to {size:,} bytes in "
            f"{len(shipped)} files; at most {MAX_MODULE_BYTES:,} bytes and {MAX_MODULE_FILES} files "
            "travel with a script (harvest a smaller folder, or install the code in the image)"
        )
