"""The batch runner's output: an append-only JSON Lines file that a re-run resumes."""

from __future__ import annotations

import json
import os
from typing import Any, Set

from tracer._batch_errors import OutputError
from tracer.jsonl import encode_line

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)


def decode_output(data: bytes) -> str:
    """Captured program output as text: UTF-8, undecodable bytes as \\xNN."""
    return data.decode("utf-8", errors="backslashreplace")


STARTED_SUFFIX = ".started"


class TraceWriter:
    """Appends trace lines to PATH; one `os.write` per line, so a kill leaves at most a partial last line.

    Opening resumes: a partial trailing line (an interrupted write) is cut off, and the program ids of
    the complete lines are in `done`, so the caller can skip them. PATH.started lists the program ids
    this run started, in order (`starting`): if the runner itself dies, whoever ran it can tell the
    program it was running from a runner that never got to one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: Set[str] = set()
        self.lines_before = 0
        self.cut_bytes = 0
        self._fd = self._started_fd = -1
        self._resume()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(path, flags, 0o644)
            self._started_fd = os.open(path + STARTED_SUFFIX, flags | os.O_TRUNC, 0o644)
        except OSError as exc:
            self.close()
            raise OutputError("cannot open the output %s: %s" % (exc.filename or path, exc.strerror)) from exc

    def _resume(self) -> None:
        try:
            f = open(self.path, "rb+")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(
                "cannot read the output %s to resume it: %s" % (self.path, exc.strerror)
            ) from exc
        with f:
            good_end = 0
            for lineno, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    break  # interrupted final write
                try:
                    obj = json.loads(line)
                    program_id = obj["program_id"]
                except (ValueError, KeyError, TypeError):
                    raise OutputError(
                        "%s line %d is a complete line but not a trace object; refusing to append"
                        " to a file this runner did not write" % (self.path, lineno)
                    ) from None
                self.done.add(program_id)
                self.lines_before += 1
                good_end += len(line)
            size = f.seek(0, os.SEEK_END)
            if size > good_end:
                self.cut_bytes = size - good_end
                f.truncate(good_end)

    def write(self, trace: Any) -> None:
        """Append one trace line (single write) and remember its program id."""
        data = encode_line(trace)
        view = memoryview(data)
        while view:  # a regular file takes it in one write; the loop is for the theoretical rest
            written = os.write(self._fd, view)
            view = view[written:]
        self.done.add(trace["program_id"])

    def starting(self, program_id: str) -> None:
        """Note that the program `program_id` starts now (a line of PATH.started)."""
        os.write(self._started_fd, (json.dumps(program_id) + "\n").encode("utf-8"))

    def close(self) -> None:
        for name in ("_fd", "_started_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
