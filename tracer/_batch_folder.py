"""The folder a batch `script` job with `modules` or `files` runs in: its script, its modules and
its data files (schemas/batch_jobs.md), as `cd FOLDER && python SCRIPT.py` would find them."""

from __future__ import annotations

import os
import shutil
from typing import Sequence, Tuple

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

# Under a scratch directory (emptied before each program) the name is always free, so a program
# sees the same `__file__` on every run; elsewhere a taken name falls back to a fresh one.
FOLDER_NAME = "program"


def write_program_folder(
    parent: str,
    script_name: str,
    source: str,
    modules: Sequence[Tuple[str, str]],
    files: Sequence[Tuple[str, bytes]] = (),
) -> str:
    """A new folder under `parent` holding `script_name` (text `source`), `modules` ((relative
    path, text)) and `files` ((relative path, content)), validated by tracer/_batch_jobs.py; its
    real path. Raises OSError or UnicodeError, leaving nothing behind."""
    folder = os.path.join(parent, FOLDER_NAME)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        import tempfile

        folder = tempfile.mkdtemp(prefix=FOLDER_NAME + "-", dir=parent)
    folder = os.path.realpath(folder)
    try:
        texts = tuple(modules) + ((script_name, source),)
        for path, data in tuple((p, t.encode("utf-8")) for p, t in texts) + tuple(files):
            full = os.path.join(folder, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "xb") as f:  # x: a path given twice (or through a file) is an error
                f.write(data)
    except BaseException:
        remove_program_folder(folder)
        raise
    return folder


def remove_program_folder(folder: str) -> None:
    """Remove `folder` and what the program left in it; never raises."""
    shutil.rmtree(folder, ignore_errors=True)
