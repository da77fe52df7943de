"""What a traced program sees of its interpreter is what plain Python gives it: a script's
``__main__`` module and ``sys.path`` as ``python script.py`` makes them, an imported module's
``__builtins__`` dict and ``__spec__``, ``sys.argv``, ``sys.stdout``'s name and mode, the file
descriptors it opens, the warnings it was already shown, and no garbage of the tracer's for its
own ``gc.collect()``; and ``python -m tracer call`` writes only the trace to stdout, whatever runs
at interpreter exit. Each check runs the command line under each backend of every CPython
3.8-3.13 that pyenv lists (the module also runs as a script, stdlib only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import tracer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(tracer.__file__)))

MAIN_VIEW = """\
import os, sys
print(sorted(k for k in globals() if k.startswith("__")))
print(__file__, __cached__, type(__loader__).__name__, type(__builtins__).__name__, __spec__)
print(sys.path[0] == os.path.dirname(os.path.abspath(__file__)), sys.argv[1:])
try:
    import cwdonly
    print("the working directory is importable")
except ImportError:
    print("the working directory is not importable")
print(sys.stdout.name, sys.stdout.mode)
"""

MODULE_VIEW = """\
import sys
def main():
    return (type(__builtins__).__name__, __builtins__["abs"](-3), sys.argv[1:], __spec__.name == __name__,
            __file__ == __spec__.origin, sys.stdout.name, sys.stdout.mode, sys.stderr.name)
"""
MODULE_VIEW_RESULT = "('dict', 3, [], True, True, '<stdout>', 'w', '<stderr>')"

AT_EXIT = """\
import atexit, os
class Fin:
    def __del__(self):
        print("a finalizer at exit")
keep = Fin()
atexit.register(print, "an atexit handler")
def main():
    f = open(__file__)
    n = f.fileno()
    f.close()
    return n
"""

WARNED_ONCE = """\
import warnings
def f():
    warnings.warn("careful", UserWarning)
f()
def main():
    f()  # the registry remembers the import's warning: not shown again
    return 1
"""

NO_GARBAGE = """\
import gc
def f(n):
    return n + 1
def g(n):
    try:
        raise ValueError(n)
    except ValueError:
        return -1
def main():
    gc.collect()
    for i in range(5):
        f(i)
        g(i)
    return gc.collect()
"""


def _run(args: list, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONHASHSEED="0")
    env.pop("PYTHONWARNINGS", None)  # the multi-version runner silences warnings; these show one
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def backends() -> list:
    return ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])


def problems() -> list:
    found = []
    with tempfile.TemporaryDirectory() as top:
        programs = os.path.join(top, "programs")
        elsewhere = os.path.join(top, "elsewhere")
        os.mkdir(programs)
        os.mkdir(elsewhere)
        with open(os.path.join(elsewhere, "cwdonly.py"), "w") as f:
            f.write("")
        files = {}
        for name, text in (("main_view", MAIN_VIEW), ("module_view", MODULE_VIEW), ("at_exit", AT_EXIT),
                           ("warned_once", WARNED_ONCE), ("no_garbage", NO_GARBAGE)):
            files[name] = os.path.join(programs, name + ".py")
            with open(files[name], "w") as f:
                f.write(text)
        script = os.path.relpath(files["main_view"], elsewhere)
        plain = _run([script], elsewhere).stdout
        baseline_fd = _run(["-c", "import at_exit; print('fd', at_exit.main())"], programs).stdout.split()[1]
        for backend in backends():
            def check(what: str, got, want, backend: str = backend) -> None:
                if got != want:
                    found.append({"check": what, "backend": backend, "got": got, "want": want})

            proc = _run(["-m", "tracer", "run", script, "--backend", backend], elsewhere)
            check("__main__ and sys.path as python script.py", json.loads(proc.stdout)["stdout"], plain)
            for name in ("module_view", "at_exit", "warned_once", "no_garbage"):
                proc = _run(["-m", "tracer", "call", files[name], "main", "--input", "", "--backend", backend], programs)
                lines = proc.stdout.splitlines()
                check(name + ": stdout is one JSON line", len(lines), 1)
                trace = json.loads(lines[0]) if lines else {}
                if name == "module_view":
                    check("an imported module's view", trace.get("return_value"), MODULE_VIEW_RESULT)
                elif name == "at_exit":
                    check("the first file descriptor the program opens", trace.get("return_value"), baseline_fd)
                    check("exit output goes to stderr", "an atexit handler" in proc.stderr, True)
                elif name == "warned_once":
                    check("a warning shown at import is not shown again", trace.get("stderr", "").count("UserWarning: careful"), 1)
                else:
                    check("no cyclic garbage of the tracer's", trace.get("return_value"), "0")
    return found


def test_the_program_sees_what_plain_python_gives_it() -> None:
    assert problems() == [], json.dumps(problems(), indent=1)


if "pytest" in sys.modules:  # as a script, the module prints its problems (stdlib only)
    from tracer_testutil import no_problems_under_every_python

    test_under_every_python = no_problems_under_every_python(__file__)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(problems()) + "\n")
