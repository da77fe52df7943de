"""The builtins as they were when the tracer was imported, for the tracer's own code.

A program, or a test suite's monkeypatch, may replace ``builtins.len``, ``isinstance``, ``open``,
``__import__`` and the like while it runs. The recorder runs inside the program, so looking its
builtins up live would call the program's replacements from inside the recorder: user code run
while rendering, events recorded from within the recorder (recursing without end), and a program
that sees calls it never made. Every tracer module therefore binds ``__builtins__`` to this
snapshot (``from ._builtins import PINNED as __builtins__``, with its imports): CPython finds
a module's builtins through that global (3.10+: each function takes it when it is defined;
3.8/3.9: a frame reads it when it starts), so the tracer's code sees the snapshot, whatever the
program does to the ``builtins`` module. The program itself keeps seeing the live module.
"""

import builtins

PINNED = dict(builtins.__dict__)
