"""Every Python-version difference the tracer cares about, as named behaviour flags.

Version-specific code elsewhere carries a greppable tag naming the flag, e.g.
``# PYBEHAVIOR: f_locals_is_proxy``.
"""

from __future__ import annotations

import platform
import sys

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

PYVERSION = sys.version_info
PYTHON_VERSION = platform.python_version()
CPYTHON = platform.python_implementation() == "CPython"
# The newest CPython the test suite runs the tracer under (golden traces, the differential tests).
NEWEST_TESTED = (3, 15)


def _immortal_refcount() -> int:
    if not CPYTHON or not (3, 12) <= PYVERSION[:2] <= NEWEST_TESTED:
        return 0
    if sys.maxsize < 2**32 or hasattr(sys, "gettotalrefcount"):  # 32-bit, debug build
        return 0
    abiflags = getattr(sys, "abiflags", None)  # POSIX; "t": free-threaded, another object layout
    if abiflags is None:  # not sysconfig first: a new interpreter has not imported it
        import sysconfig

        abiflags = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    if "t" in abiflags:
        return 0
    return 0xFFFFFFFF if PYVERSION < (3, 14) else 0xE0000000  # see PYBEHAVIOR.immortal_refcount


class PYBEHAVIOR:
    """Named behaviour flags of the running interpreter."""

    # PEP 669 sys.monitoring exists (3.12+).
    has_sys_monitoring = PYVERSION >= (3, 12) and hasattr(sys, "monitoring")

    # PEP 709: list/dict/set comprehensions are inlined into the enclosing frame
    # (no own frame; the loop variable appears in the enclosing locals while it runs).
    inlined_comprehensions = PYVERSION >= (3, 12)

    # PEP 667: frame.f_locals is a live write-through proxy, a new object per access.
    f_locals_is_proxy = PYVERSION >= (3, 13)

    # sys.settrace is implemented on top of sys.monitoring (legacy_tracing.c), so the
    # two backends see the very same events.
    settrace_via_monitoring = PYVERSION >= (3, 12)

    # settrace writes f_locals back into the frame after each trace call (LocalsToFast),
    # which warns "assigning None to unbound local" for hidden PEP 709 comprehension
    # variables at module level (3.12 only; 3.13's proxy has no write-back).
    settrace_locals_to_fast_warns = PYVERSION[:2] == (3, 12)

    # threading.settrace_all_threads exists.
    has_settrace_all_threads = PYVERSION >= (3, 12)

    # threading.gettrace exists (else read threading._trace_hook).
    has_threading_gettrace = PYVERSION >= (3, 10)

    # Closing a suspended generator emits no trace events at all (3.13 only); before and
    # after, a call / exception(GeneratorExit) / return triple.
    gen_close_silent = PYVERSION[:2] == (3, 13)

    # int -> str conversion is capped (sys.get_int_max_str_digits); backported to some
    # 3.8-3.10 patch releases, so test for the function rather than the version.
    int_max_str_digits = hasattr(sys, "get_int_max_str_digits")

    # OrderedDict's repr is ``OrderedDict({...})`` rather than ``OrderedDict([(k, v)])``.
    ordereddict_repr_is_dict = PYVERSION >= (3, 12)

    # code.co_lines(): (start, end, line) ranges of bytecode, line None where an instruction
    # has none (PEP 626, 3.10+); before, an instruction belongs to the last line start before it.
    has_co_lines = PYVERSION >= (3, 10)

    # LOAD_ATTR's oparg carries a "load a method" flag in its low bit, the name index above it
    # (3.12+; before, LOAD_METHOD was an opcode of its own).
    load_attr_has_method_flag = PYVERSION >= (3, 12)

    # Reading, through f_locals, a cell variable that an inlined comprehension's loop variable
    # shadows, while the comprehension runs, crashes CPython 3.13.0-3.13.2 (gh-128396, fixed
    # in 3.13.3): the tracer must not read the frame's locals then.
    comprehension_shadowed_cell_crash = CPYTHON and (3, 13) <= PYVERSION[:3] < (3, 13, 3)

    # ``in`` / ``not in`` have an opcode of their own, CONTAINS_OP (3.9+); before, COMPARE_OP
    # with argument 6 / 7.
    has_contains_op = PYVERSION >= (3, 9)

    # A suspended ``yield from`` / ``await`` leaves f_lasti on the instruction before
    # YIELD_FROM (3.8-3.10); later versions use SEND + YIELD_VALUE.
    has_yield_from_opcode = PYVERSION < (3, 11)

    # A loop's exit leaves the instruction after its POP_ITER without a LINE event when that
    # instruction's line is the one of the instruction before the loop's END_FOR (3.14+: the
    # line table skips POP_ITER as it skips END_FOR, so a multi-line comprehension's store back on
    # its first line runs under the ``for`` line's event).
    pop_iter_hides_next_line = PYVERSION >= (3, 14)

    # ``python script.py`` gives ``__main__.__file__`` as an absolute path (3.9+); before, as typed.
    main_file_is_absolute = PYVERSION >= (3, 9)

    # A script's ``__main__`` starts with an empty ``__annotations__`` (3.8-3.13); from 3.14
    # (PEP 649) annotations are evaluated lazily and the module starts without it.
    main_has_annotations = PYVERSION < (3, 14)

    # Modules carry ``__cached__`` (3.8-3.14; 3.15 dropped the attribute: ``__spec__.cached``).
    module_has_cached = PYVERSION < (3, 15)

    # PEP 683 immortal objects (3.12+; a 64-bit CPython with the GIL, not a debug build): an
    # object whose 32-bit reference count holds this value is never freed, and Py_INCREF and
    # Py_DECREF leave it unwritten. 3.12-3.13: Py_INCREF saturates at 0xFFFFFFFF, Py_DECREF skips
    # a count >= 2**31. 3.14+: Py_DECREF skips a count >= 2**31 but Py_INCREF only one >= 3 << 30,
    # and the interpreter also counts some references without either check ("mortal" stack
    # references, made while the object was mortal: the walk that makes it immortal leaves one
    # such decrement on every object). So 0xFFFFFFFF would wrap to 0 (and the object be freed),
    # and CPython's own 3 << 30 drops below the Py_INCREF threshold at that first decrement;
    # 0xE0000000 has half a billion either way. 0: not done (an interpreter whose object layout
    # was not checked).
    immortal_refcount = _immortal_refcount()


def monitoring_unavailable_reason() -> str | None:
    """Why the sys.monitoring backend cannot be used here, or None if it can."""
    if not CPYTHON:
        return "sys.monitoring is only supported on CPython, not %s" % platform.python_implementation()
    if not PYBEHAVIOR.has_sys_monitoring:
        return "sys.monitoring isn't available in Python %d.%d" % (PYVERSION[0], PYVERSION[1])
    return None
