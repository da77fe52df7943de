"""The folder a batch `script` job with `modules` runs in: its script and its modules as files
(schemas/batch_jobs.md), as `python FOLDER/SCRIPT.py` would find them."""

from __future__ import annotations

import os
import shutil
from typing import Sequence, Tuple

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

# Under a scratch directory (emptied before each program) the name is always free, so a program
# sees the same `__file__` on every run; elsewhere a taken name falls back to a fresh one.
FOLDER_NAME = "program"


def write_program_folder(
    parent: str, script_name: str, source: str, modules: Sequence[Tuple[str, str]]
) -> str:
    """A new folder under `parent` holding `script_name` (text `source`) and `modules`
    ((relative path, text), validated by tracer/_batch_jobs.py); its real path. Raises OSError or
    UnicodeError, leaving nothing behind."""
    folder = os.path.join(parent, FOLDER_NAME)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        import tempfile

        folder = tempfile.mkdtemp(prefix=FOLDER_NAME + "-", dir=parent)
    folder = os.path.realpath(folder)
    try:
        for path, text in tuple(modules) + ((script_name, source),):
            full = os.path.join(folder, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "xb") as f:  # x: a path given twice (or through a file) is an error
                f.write(text.encode("utf-8"))
    except BaseException:
        remove_program_folder(folder)
        raise
    return folder


def remove_program_folder(folder: str) -> None:
    """Remove `folder` and what the program left in it; never raises."""
    shutil.rmtree(folder, ignore_errors=True)
