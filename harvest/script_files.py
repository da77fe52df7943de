"""The data files of a script's own folder that it names, to travel with it to the sandbox.

A folder of course scripts keeps `input.txt` or `data.csv` next to `main.py`, which opens it by a
relative name: `open("input.txt")`, `Path("data.csv").read_text()`,
`os.path.join(os.path.dirname(__file__), "words.json")`. A harvested script runs in a folder of
its own as `cd FOLDER && python main.py` (the batch job's `files`, schemas/batch_jobs.md), so the
files it names go with it. They are read statically: every string constant of the script and of
the modules that travel with it that, as a relative `/`-separated path (no absolute path, no
`..`, no NUL or backslash; `./` and doubled `/` are dropped), names a regular file inside the
script's folder (after symlinks) other than the script and its modules. A module's string is
looked up both from the folder (the working directory) and from the module's own folder (its
`__file__`). A name that is computed (`f"data_{i}.txt"`, `os.listdir`), a file outside the folder
and a file that another program writes are not found. Text that is UTF-8 travels as text, any
other content as bytes.
"""

from __future__ import annotations

import ast
import hashlib
import os
import stat
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from harvest.errors import ConfigError

# What may travel with one script: each data file's bytes, all of them, and their number.
MAX_FILE_BYTES = 1 << 20
MAX_FILES_BYTES = 4 << 20
MAX_FILES = 100
_MAX_NAME_CHARS = 1024  # longer strings are text, not file names (and cost a stat each)


class ScriptFilesError(ConfigError):
    """A script's data files cannot travel with it (unreadable, or over the bound)."""


def data_files(
    script: Path, source: str, modules: Iterable[tuple[str, str]]
) -> tuple[tuple[str, str | bytes], ...]:
    """(path relative to the script's folder, UTF-8 text or bytes) of every file of that folder
    that the script or its `modules` ((relative path, text), harvest/script_modules.py) name in a
    string constant, sorted by path; never the script or a module. Raises ScriptFilesError for a
    file that cannot be read or a set over the bound, naming the script and the file."""
    root = script.parent
    modules = tuple(modules)
    taken = {path for path, _ in modules}
    try:
        real_root = root.resolve(strict=True)
        real_script = script.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ScriptFilesError(f"{script}: cannot resolve its folder ({exc})") from None
    names: set[str] = set()
    for folder, text in (("", source), *((_parent(path), text) for path, text in modules)):
        for name in _string_constants(text):
            for base in {"", folder}:
                path = _relative_path(name, base)
                if path is not None and path not in taken:
                    names.add(path)
    found: list[tuple[str, str | bytes]] = []
    total = 0
    for path in sorted(names):
        file = root.joinpath(*path.split("/"))
        size = _regular_file_size(file, real_root, real_script)
        if size is None:
            continue
        if size > MAX_FILE_BYTES:
            raise ScriptFilesError(_too_big(script, path, size))
        content = _read(script, path, file)
        size = len(content) if isinstance(content, bytes) else len(content.encode("utf-8"))
        if size > MAX_FILE_BYTES:  # it grew since
            raise ScriptFilesError(_too_big(script, path, size))
        total += size
        if total > MAX_FILES_BYTES or len(found) + 1 > MAX_FILES:
            raise ScriptFilesError(
                f"{script}: the data files it names in its folder come to more than "
                f"{MAX_FILES_BYTES:,} bytes or {MAX_FILES} files with {path} ({total:,} bytes in "
                f"{len(found) + 1} files); harvest a smaller folder, or put the data in the image"
            )
        found.append((path, content))
    return tuple(found)


def _too_big(script: Path, path: str, size: int) -> str:
    return (
        f"{script}: the data file {path} that it names is {size:,} bytes; at most {MAX_FILE_BYTES:,} "
        "bytes travel per file (move the file out of the folder, or put the data in the image)"
    )


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _string_constants(source: str) -> Iterable[str]:
    """Every str (and UTF-8 bytes) constant of `source`; none when it does not compile."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    continue
            if isinstance(value, str) and 0 < len(value) <= _MAX_NAME_CHARS:
                yield value


def _relative_path(name: str, base: str) -> str | None:
    """`name` as a normalised `/`-path inside the folder, from its subfolder `base` ('' the
    folder itself); None if it is absolute, leaves the folder or cannot be a file name."""
    if name.startswith("/") or any(c in name for c in "\0\\\n\r"):
        return None
    parts = [part for part in (*base.split("/"), *name.split("/")) if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _regular_file_size(file: Path, real_root: Path, real_script: Path) -> int | None:
    """The size of `file` if it is a regular file inside the folder (after symlinks) and not
    the script; None otherwise."""
    try:
        info = os.stat(file)
        real = file.resolve(strict=True)
    except (OSError, ValueError, RuntimeError):  # missing, a name too long, a symlink loop
        return None
    if not stat.S_ISREG(info.st_mode) or real == real_script or not real.is_relative_to(real_root):
        return None
    return info.st_size


def _read(script: Path, path: str, file: Path) -> str | bytes:
    """The file's content: its text if it is UTF-8, else its bytes. Equal contents are held once:
    the same object for every script of a folder that names one file (1,500 scripts naming one
    1 MB file took 1.5 GB of the driver's memory before)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ScriptFilesError(
            f"{script}: cannot read the data file {path} that it names ({exc.strerror or exc})"
        ) from None
    return _content(data)


# Contents read so far, by their SHA-256 (not by the bytes: those would be a second copy of every
# distinct file), the most recent last; at most _HELD of them.
_CONTENTS: OrderedDict[bytes, str | bytes] = OrderedDict()
_HELD = 1024


def _content(data: bytes) -> str | bytes:
    """`data` as text if it is UTF-8, else itself; one object per distinct content."""
    key = hashlib.sha256(data).digest()
    found = _CONTENTS.get(key)
    if found is not None:
        _CONTENTS.move_to_end(key)
        return found
    try:
        content: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        content = data
    _CONTENTS[key] = content
    if len(_CONTENTS) > _HELD:
        _CONTENTS.popitem(last=False)
    return content
