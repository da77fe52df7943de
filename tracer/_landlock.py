"""Landlock confinement of a batch program (Linux >= 5.13), with the standard library only.

A confined program may create, write, remove or truncate files only under the given directories
(the sandbox's scratch directories) and write to a few harmless devices (/dev/null, /dev/zero,
/dev/full). It may read files anywhere except in the runner's own top-level folder (`hide`: a
sandbox's /out, which holds the unit's jobs and the other programs' results). From Landlock ABI 6 (Linux 6.12) it also may not signal
processes outside its own domain (the batch runner, the fork server) nor connect to abstract Unix
sockets outside it. Its own children inherit the confinement. Files it already has open (its
pipes) are not affected.

The runner prepares a `Confinement` once (it finds the kernel's Landlock ABI); each forked child
calls `apply()` just before the program runs. Where Landlock is missing, `abi` is 0 and `reason`
says why: the batch then runs unconfined, and its run record says so.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from typing import Optional, Sequence, Tuple

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

# System call numbers: the same on x86-64 and arm64 (and every architecture using the generic
# table), since Linux 5.13.
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights, by the ABI version that introduced them.
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
REMOVE_DIR, REMOVE_FILE = 1 << 4, 1 << 5
MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = (1 << n for n in range(6, 13))
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

WRITE_RIGHTS_V1 = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK
                   | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM)
WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full")


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def landlock_abi() -> Tuple[int, str]:
    """(the kernel's Landlock ABI version, '') or (0, why it cannot be used)."""
    libc = _libc()
    if libc is None:
        return 0, "not Linux"
    abi = int(libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION)))
    if abi < 0:
        err = ctypes.get_errno()
        return 0, "Landlock is not available here (%s)" % os.strerror(err)
    return abi, ""


class Confinement(object):
    """What a child applies to itself: write access only beneath `writable_dirs`."""

    def __init__(self, writable_dirs: Sequence[str]) -> None:
        self.writable_dirs = [d for d in writable_dirs if os.path.isdir(d)]
        self.abi, self.reason = landlock_abi()
        libc = _libc() if self.abi else None
        # Resolved here, in the runner: a child that looked them up would copy more pages.
        self._syscall = libc.syscall if libc is not None else None
        self._prctl = libc.prctl if libc is not None else None
        handled = WRITE_RIGHTS_V1
        if self.abi >= 2:
            handled |= REFER
        if self.abi >= 3:
            handled |= TRUNCATE
        self.handled = handled
        self.unreadable: list = []
        self.scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if self.abi >= 6 else 0
        self._pack()
        self._file_rights = WRITE_FILE | (TRUNCATE if self.abi >= 3 else 0)
        self._readable: list = []  # with `hide`: every top-level path but the hidden ones

    def _pack(self) -> None:
        # struct landlock_ruleset_attr: handled_access_fs, handled_access_net (ABI 4), scoped (ABI 6)
        if self.abi >= 6:
            self._attr = struct.pack("=QQQ", self.handled, 0, self.scoped)
        elif self.abi >= 4:
            self._attr = struct.pack("=QQ", self.handled, 0)
        else:
            self._attr = struct.pack("=Q", self.handled)

    def hide(self, folder: str) -> bool:
        """Keep programs from reading files in `folder`, a top-level folder (read access is then
        granted beneath every other entry of /; listing directories stays allowed). False, and
        nothing hidden, for any other folder: Landlock cannot take back what a parent allows."""
        folder = os.path.abspath(folder)
        if not self.abi or folder == "/" or os.path.dirname(folder) != "/" or folder in self.writable_dirs:
            return False
        try:
            entries = sorted(os.listdir("/"))
        except OSError:
            return False
        self.unreadable.append(folder)
        self._readable = ["/" + name for name in entries if "/" + name not in self.unreadable]
        self.handled |= READ_FILE
        self._pack()
        return True

    def describe(self) -> dict:
        """For the run record."""
        if not self.abi:
            return {"landlock_abi": 0, "unavailable": self.reason}
        return {
            "landlock_abi": self.abi,
            "writable": list(self.writable_dirs) + [d for d in WRITABLE_DEVICES if os.path.exists(d)],
            "signals_scoped": bool(self.scoped & SCOPE_SIGNAL),
            "unreadable": list(self.unreadable),
        }

    def apply(self) -> None:
        """Confine this process (and what it starts) from now on; raises OSError on failure."""
        if not self.abi:
            return
        syscall = self._syscall
        assert syscall is not None and self._prctl is not None
        if self._prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # Landlock requires it
            raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
        ruleset = int(syscall(SYS_CREATE_RULESET, self._attr, len(self._attr), 0))
        if ruleset < 0:
            raise _error("landlock_create_ruleset")
        try:
            for path in self.writable_dirs:
                self._allow(syscall, ruleset, path, self.handled)
            for path in WRITABLE_DEVICES:
                if os.path.exists(path):
                    self._allow(syscall, ruleset, path, self._file_rights)
            for path in self._readable:
                if os.path.exists(path):
                    self._allow(syscall, ruleset, path, READ_FILE)
            if int(syscall(SYS_RESTRICT_SELF, ruleset, 0)) != 0:
                raise _error("landlock_restrict_self")
        finally:
            os.close(ruleset)

    @staticmethod
    def _allow(syscall, ruleset: int, path: str, rights: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            # struct landlock_path_beneath_attr { __u64 allowed_access; __s32 parent_fd; } (packed)
            if int(syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, struct.pack("=Qi", rights, fd), 0)) != 0:
                raise _error("landlock_add_rule(%s)" % path)
        finally:
            os.close(fd)


def _error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, "%s: %s" % (what, os.strerror(err)))


def confinement_for(writable_dirs: Optional[Sequence[str]]) -> Optional[Confinement]:
    """A Confinement for the runner's `--confine` (None when not asked for)."""
    return Confinement(writable_dirs) if writable_dirs is not None else None
