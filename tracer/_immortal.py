"""Make the fork server's warm heap immortal, so that the programs it forks share its pages.

A forked program that only reads an object of the warm runner still writes to it: every
reference it takes adds to the object's reference count, and that write copies the object's
whole page (copy-on-write, a page fault of several microseconds on a VM). Most of a program's
page faults are those writes: reference counts of code objects, constants, module globals and
the functions and types it looks up. From Python 3.12 (PEP 683) CPython leaves the reference
count of an immortal object alone, so the fork server makes every object it holds immortal
once, before its first fork (Instagram's Cinder did the same for its pre-fork web servers).

What it costs: the objects of the warm heap are never freed, in the fork server and in the
programs (they lived as long as the fork server anyway), and the walk takes ~0.1 s per batch.
The programs see no difference but in the reference counts of those objects
(`sys.getrefcount(json)`), which were never the same as in a fresh interpreter, and in one the
program drops itself not being finalized. A program that crashes on the immortal heap runs again
on a mortal one (tracer/batch.py, `_rerun_on_mortal_heap`).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import List

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .env import PYBEHAVIOR

# WORLDTRACE_IMMORTAL_HEAP=0 in the runner's environment turns it off (a diagnosis of last resort).
ENV_SWITCH = "WORLDTRACE_IMMORTAL_HEAP"


def unavailable_reason() -> str | None:
    """Why the warm heap is left mortal here, or None when `immortalize_heap` will do it."""
    if os.environ.get(ENV_SWITCH, "").strip() == "0":
        return "%s=0" % ENV_SWITCH
    if not PYBEHAVIOR.immortal_refcount:
        return "no immortal objects in this interpreter (%s %d.%d%s)" % (
            sys.implementation.name,
            sys.version_info[0],
            sys.version_info[1],
            ""
            if sys.version_info < (3, 12)
            else ": a layout not checked (free-threaded, debug, 32-bit or newer)",
        )
    try:
        import ctypes  # noqa: F401
    except ImportError as exc:
        return "ctypes cannot be imported: %s" % exc
    return None


def immortalize_heap() -> int:
    """Make every object the garbage collector knows of, and what they hold, immortal.

    Call in a process that runs one thread and is about to fork (the fork server). Returns the
    number of objects made immortal, 0 where `unavailable_reason()` says why not.
    """
    if unavailable_reason() is not None:
        return 0
    import ctypes

    frozen = getattr(gc, "get_freeze_count", lambda: 0)() > 0
    if frozen:
        gc.unfreeze()  # the frozen objects are in none of the generations get_objects lists
    todo: List[object] = gc.get_objects()
    if frozen:
        gc.freeze()
    value = ctypes.c_uint32(PYBEHAVIOR.immortal_refcount)
    source = ctypes.addressof(value)
    offset = 0 if sys.byteorder == "little" else 4  # the count's low 32 bits
    memmove = ctypes.memmove
    get_referents = gc.get_referents
    code_type = type(immortalize_heap.__code__)
    seen = set()
    held: List[object] = []  # keeps each id in `seen` that object's until the walk is over
    while todo:
        obj = todo.pop()
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        held.append(obj)
        memmove(key + offset, source, 4)
        if type(obj) is code_type:  # not a container to the collector, on some versions
            todo.extend(_code_parts(obj))
        else:
            todo.extend(get_referents(obj))
    return len(held)


def _code_parts(code) -> List[object]:
    names = (
        "co_consts",
        "co_names",
        "co_varnames",
        "co_cellvars",
        "co_freevars",
        "co_filename",
        "co_name",
        "co_qualname",
        "co_linetable",
        "co_exceptiontable",
    )
    return [getattr(code, name) for name in names if hasattr(code, name)]
