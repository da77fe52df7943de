"""Rendering never runs user code, even through stdlib objects holding user objects; it is
deterministic for threads; a bound method's rendering visits its ``__self__`` (aliases).

Every hook below records that it ran in ``RAN`` instead of raising (the renderer would
swallow an exception and the test could pass for the wrong reason). The module also runs as
a script (``python test_tracer_render_usercode.py``) under each CPython of the multi-version
tests (tracer_testutil.versions_under_test), without pytest.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import dataclasses
import datetime
import inspect
import os
import re
import signal
import sys
import tempfile
import textwrap
import threading
import types

from tracer.api import trace_call, trace_script
from tracer.backends.settrace import SettraceBackend
from tracer.recorder import Recorder, _raised_by_signal_handler
from tracer.render import Renderer
from tracer.scope import Scope

try:
    import pytest
except ImportError:  # run as a script under an interpreter without pytest (see __main__)
    pytest = None  # type: ignore[assignment]

R = Renderer()
RAN: list = []


def _ran(what: str) -> None:
    RAN.append(what)


def no_user_code(fn, *args):
    """``fn(*args)``, asserting that no hook of this module ran."""
    del RAN[:]
    out = fn(*args)
    assert RAN == [], RAN
    return out


class Loud:
    """Every text hook records itself."""

    def __str__(self):
        _ran("__str__")
        return "loud"

    def __repr__(self):
        _ran("__repr__")
        return "loud"

    def __eq__(self, other):
        _ran("__eq__")
        return False

    def __hash__(self):
        _ran("__hash__")
        return 0

    def __bool__(self):
        _ran("__bool__")
        return True


class LoudStr(str):
    def __str__(self):
        _ran("str.__str__")
        return "loud"

    def __repr__(self):
        _ran("str.__repr__")
        return "loud"


class TZ(datetime.tzinfo):
    def utcoffset(self, dt):
        _ran("utcoffset")
        return datetime.timedelta(0)

    def __repr__(self):
        _ran("tzinfo.__repr__")
        return "TZ()"


def test_datetime_with_a_user_tzinfo_is_rendered_structurally() -> None:
    tz = TZ()
    d = datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=tz)
    assert no_user_code(R.render, d) == "datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=TZ())"
    assert no_user_code(R.render, d.replace(fold=1)) == (
        "datetime.datetime(2020, 1, 2, 3, 4, 5, 6, fold=1, tzinfo=TZ())")
    assert no_user_code(R.render, datetime.time(1, 2, tzinfo=tz)) == "datetime.time(1, 2, tzinfo=TZ())"
    # The interpreter's own repr where nothing of the user's can be reached.
    for value in (datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                  datetime.time(1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=1), "X")),
                  datetime.timezone(datetime.timedelta(hours=-2))):
        assert R.render(value) == repr(value)


def test_timezone_named_by_a_str_subclass() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=1), LoudStr("X"))
    assert no_user_code(R.render, tz) == "datetime.timezone(datetime.timedelta(seconds=3600), LoudStr('X'))"
    d = datetime.datetime(2020, 1, 1, tzinfo=tz)
    assert no_user_code(R.render, d) == (
        "datetime.datetime(2020, 1, 1, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(seconds=3600), LoudStr('X')))")


def test_pattern_of_a_str_subclass() -> None:
    p = re.compile(LoudStr("ab"))
    assert no_user_code(R.render, p) == "re.compile(LoudStr('ab'))"
    assert no_user_code(R.render, re.compile(LoudStr("ab"), re.I)) == "re.compile(LoudStr('ab'), 2)"
    assert R.render(re.compile("ab", re.I)) == repr(re.compile("ab", re.I))
    assert R.render(re.compile(b"ab")) == repr(re.compile(b"ab"))
    m = re.compile("b").search(LoudStr("abc"))
    assert no_user_code(R.render, m) == "<re.Match object; span=(1, 2), match='b'>"


def test_oserror_with_a_user_filename() -> None:
    e = OSError(2, "No such file")
    e.filename = Loud()
    assert no_user_code(R.exception_message, e) == "(2, 'No such file')"
    assert no_user_code(R.render_exception, e) == "FileNotFoundError: (2, 'No such file')"
    no_user_code(R.render, e)
    e.filename, e.strerror = "f.txt", Loud()
    assert no_user_code(R.exception_message, e) == "(2, 'No such file')"
    # Plain attributes: what str() says.
    e = OSError(2, "No such file", "f.txt")
    assert R.exception_message(e) == str(e) == "[Errno 2] No such file: 'f.txt'"


def test_syntaxerror_with_a_user_msg() -> None:
    e = SyntaxError("bad")
    e.msg = Loud()
    assert no_user_code(R.exception_message, e) == "bad"
    e = SyntaxError("bad", ("f.py", 3, 1, "x"))
    assert R.exception_message(e) == str(e) == "bad (f.py, line 3)"


def test_unicode_errors_and_groups_with_user_attributes() -> None:
    e = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")
    assert R.exception_message(e) == str(e)
    for name, value in (("encoding", LoudStr("x")), ("reason", Loud()), ("object", "not bytes")):
        e = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")
        setattr(e, name, value)
        assert no_user_code(R.exception_message, e) == "('utf-8', b'\\xff', 0, 1, 'bad')"
    if sys.version_info >= (3, 11):
        g = BaseExceptionGroup(LoudStr("m"), [ValueError()])  # noqa: F821  (3.11+)
        g.args = ()
        assert no_user_code(R.exception_message, g) == ""


def test_exception_group_messages_are_what_str_says() -> None:
    # A group's __str__ formats its message and the number of its exceptions, never its args
    # (which hold the exceptions themselves, not plain values): found by fuzzing except*.
    if sys.version_info < (3, 11):
        return  # no exception groups
    for g in (ExceptionGroup("g", [ValueError("m")]),  # noqa: F821  (3.11+)
              ExceptionGroup("two", [ValueError(1), TypeError()]),  # noqa: F821
              BaseExceptionGroup("b", [KeyboardInterrupt()])):  # noqa: F821
        assert no_user_code(R.exception_message, g) == str(g)
    g = ExceptionGroup("g", [ValueError(Loud())])  # noqa: F821
    assert no_user_code(R.exception_message, g) == "g (1 sub-exception)"
    assert no_user_code(R.render_exception, g) == "ExceptionGroup: g (1 sub-exception)"


class SpoofedModule(Exception):
    __module__ = "builtins"

    def __str__(self):
        _ran("exception __str__")
        return "loud"


def test_an_exception_claiming_to_be_builtin() -> None:
    assert no_user_code(R.exception_message, SpoofedModule("x")) == "x"


class LoudDate(datetime.date):
    def __repr__(self):
        _ran("date subclass __repr__")
        return "loud"


def test_a_stdlib_class_replaced_by_a_subclass_is_not_trusted() -> None:
    # As a test's monkeypatch does (``monkeypatch.setattr(datetime, "date", FixedDate)``): the
    # module's attribute is now the program's class, whose repr the renderer must not call.
    saved = datetime.date
    datetime.date = LoudDate  # type: ignore[misc]
    try:
        assert no_user_code(Renderer().render, LoudDate(2020, 1, 2)) == "LoudDate()"
    finally:
        datetime.date = saved  # type: ignore[misc]
    assert Renderer().render(datetime.date(2020, 1, 2)) == "datetime.date(2020, 1, 2)"


class LoudUUID:
    def __repr__(self):
        _ran("__repr__")
        return "UUID('?')"

    def __getattr__(self, name):
        _ran("module __getattr__ " + name)
        raise AttributeError(name)


LoudUUID.__module__, LoudUUID.__qualname__ = "uuid", "UUID"


@contextlib.contextmanager
def _program_module(name: str, path: str, **attrs: object):
    """``sys.modules[name]`` is, for the block, a module of the program's (as its own ``uuid.py``
    beside it, first on sys.path, would be)."""
    saved = sys.modules.get(name)
    module = types.ModuleType(name)
    module.__file__ = path
    module.__dict__.update(attrs)
    module.__getattr__ = LoudUUID().__getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    try:
        yield module
    finally:
        if saved is None:
            del sys.modules[name]
        else:
            sys.modules[name] = saved


def test_a_program_module_named_like_the_stdlibs_is_not_trusted() -> None:
    # The program's own uuid.py with its class UUID: neither is the stdlib's, whatever their names.
    with _program_module("uuid", os.path.join(tempfile.gettempdir(), "uuid.py"), UUID=LoudUUID):
        assert no_user_code(Renderer().render, LoudUUID()) == "LoudUUID()"
    # The stdlib's own is still rendered by its repr; a module of the program's that is not there
    # at all is asked nothing (no module __getattr__ runs).
    import uuid

    value = uuid.UUID(int=1)
    assert Renderer().render(value) == repr(value)
    with _program_module("fractions", os.path.join(tempfile.gettempdir(), "fractions.py")):
        assert no_user_code(Renderer().render, LoudUUID()) == "LoudUUID()"


class Callable:
    def __call__(self, *args):
        return 0

    def __getattr__(self, name):
        _ran("__getattr__ " + name)
        raise AttributeError(name)


class Plain:
    pass


def test_method_of_a_callable_object() -> None:
    m = types.MethodType(Callable(), Plain())
    assert no_user_code(R.render, m) == "<bound method ?>"
    assert R.render(Plain().__init__) == "<method-wrapper '__init__' of Plain object>"
    assert R.render(types.MethodType(test_method_of_a_callable_object, 1)) == (
        "<bound method test_method_of_a_callable_object>")


class ClassProperty:
    """An object claiming (through a ``__class__`` property) to be a dict or a tuple."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    @property  # type: ignore[misc]
    def __class__(self):
        _ran("__class__ property")
        return object.__getattribute__(self, "cls")


class NotADataclass:
    __dataclass_fields__ = ClassProperty(dict)


class NotANamedtuple(tuple):
    _fields = ClassProperty(tuple)


def test_class_attributes_are_checked_by_exact_type() -> None:
    assert no_user_code(R.render, NotADataclass()) == "NotADataclass()"
    assert no_user_code(R.render, NotANamedtuple((1, 2))) == "NotANamedtuple((1, 2))"


@dataclasses.dataclass
class WithLoudReprFlag:
    x: int = dataclasses.field(default=1, repr=Loud())  # type: ignore[call-overload]
    y: int = dataclasses.field(default=2, repr=False)


def test_dataclass_field_repr_flag_is_not_asked_for_its_truth() -> None:
    assert no_user_code(R.render, WithLoudReprFlag()) == "WithLoudReprFlag(x=1)"


class LoudName:
    pass


class LoudModuleMeta(type):
    pass


def test_type_names_and_modules_of_user_types() -> None:
    cls = type("Named", (), {})
    cls.__name__ = LoudStr("Named")
    cls.__qualname__ = LoudStr("Named")
    assert no_user_code(R.render, cls()) == "Named()"
    assert no_user_code(R.render, cls) == f"<class '{__name__}.Named'>"
    mod = type("Mod", (), {"__module__": Loud()})
    assert no_user_code(R.render, mod()) == "Mod()"
    assert no_user_code(R.render, mod) == "<class 'Mod'>"
    exc = type("ModExc", (Exception,), {"__module__": Loud()})
    assert no_user_code(R.exception_message, exc("x")) == "x"


class HashingMeta(type):
    """A metaclass whose classes hash and compare by user code: a set or dict lookup of such a
    class (the renderer's type checks) would run it."""

    def __hash__(cls):
        _ran("metaclass __hash__")
        return 1

    def __eq__(cls, other):
        _ran("metaclass __eq__")
        return False


class Hashed(metaclass=HashingMeta):
    def __init__(self, x):
        self.x = x


class HashedList(list, metaclass=HashingMeta):
    pass


def test_types_are_never_hashed_or_compared() -> None:
    assert no_user_code(R.render, Hashed(1)) == "Hashed(x=1)"
    assert no_user_code(R.render, [Hashed(1), Hashed(2)]) == "[Hashed(x=1), Hashed(x=2)]"
    assert no_user_code(R.render, (1, Hashed(3))) == "(1, Hashed(x=3))"
    assert no_user_code(R.render, {Hashed(4)}).startswith("{Hashed(x=4)")
    assert no_user_code(R.render, {"k": [Hashed(5)] * 150}).startswith("{'k': [Hashed(x=5)")
    assert no_user_code(R.render_keyed, [Hashed(6), 1])[0] == "[Hashed(x=6), 1]"
    assert no_user_code(R.render, HashedList([1, 2])) == "HashedList([1, 2])"
    assert no_user_code(R.render, Hashed) == f"<class '{__name__}.Hashed'>"
    assert no_user_code(R.render, collections.Counter({"a": Hashed(7)})) == "Counter({'a': Hashed(x=7)})"


def test_tracing_a_program_with_a_hashing_metaclass_changes_nothing(backend: str) -> None:
    source = textwrap.dedent("""\
        calls = []
        class Meta(type):
            def __hash__(cls):
                calls.append("hash")
                return 1
            def __eq__(cls, other):
                calls.append("eq")
                return False
        class P(metaclass=Meta):
            def __init__(self, x):
                self.x = x
        def f(n):
            p = P(n)
            q = [p, P(n + 1)]
            return len(calls), q
    """)
    t = trace_call("prog.py", "f", "1", source=source, backend=backend)
    assert (t["status"], t["return_value"]) == ("ok", "(0, [P(x=1), P(x=2)])"), t


def test_a_function_whose_globals_are_the_programs_mapping(backend: str) -> None:
    # ``FunctionType(code, Namespace(...))``: the recorder asks such globals (and builtins) for
    # nothing. The mapping's class lies outside the program's scope: its methods run untraced, so
    # no other frame's events make the recorder re-read every local instead.
    source = textwrap.dedent("""\
        import types
        calls = []
        ns = {"calls": calls}
        exec(compile(
            "class Names(dict):\\n"
            "    def get(self, k, d=None):\\n"
            "        calls.append('get ' + k)\\n"
            "        return dict.get(self, k, d)\\n"
            "    def __contains__(self, k):\\n"
            "        calls.append('in ' + k)\\n"
            "        return dict.__contains__(self, k)\\n", "/elsewhere/names.py", "exec"), ns)
        K = [7]
        def body(xs):
            n = len(xs)
            xs.append(K)
            return n
        def f():
            names = ns["Names"](globals())
            names["__builtins__"] = ns["Names"](len=len)
            n = types.FunctionType(body.__code__, names)([1])
            return n, calls
    """)
    t = trace_call("prog.py", "f", "", source=source, backend=backend)
    assert (t["status"], t["return_value"]) == ("ok", "(1, [])"), t


@contextlib.contextmanager
def program_log():
    """A list the traced program reaches as ``import usercode_log; usercode_log.calls``."""
    log = types.ModuleType("usercode_log")
    log.calls = []  # type: ignore[attr-defined]
    sys.modules["usercode_log"] = log
    try:
        yield log.calls  # type: ignore[attr-defined]
    finally:
        del sys.modules["usercode_log"]


def test_a_programs_exception_is_classified_by_its_type(backend: str) -> None:
    # ``isinstance(exc, MemoryError)`` asks an exception of another class for its ``__class__``:
    # the program's ``__getattribute__``.
    source = textwrap.dedent("""\
        import usercode_log
        class E(Exception):
            def __getattribute__(self, name):
                usercode_log.calls.append(name)
                return Exception.__getattribute__(self, name)
        def f():
            raise E("bad")
    """)
    with program_log() as calls:
        t = trace_call("prog.py", "f", "", source=source, backend=backend)
    assert (t["status"], t["exception_type"], t["exception_message"]) == ("exception", "prog.E", "bad"), t
    assert calls == []


def test_a_scripts_exit_code_is_not_compared_by_its_eq(backend: str) -> None:
    source = textwrap.dedent("""\
        import sys
        import usercode_log
        class Code:
            def __eq__(self, other):
                usercode_log.calls.append("__eq__")
                return True
            __hash__ = None
        sys.exit(Code())
    """)
    with tempfile.TemporaryDirectory() as folder, program_log() as calls:
        path = os.path.join(folder, "prog.py")
        with open(path, "w") as f:
            f.write(source)
        t = trace_script(path, [], backend=backend)
    assert (t["status"], t["exception_type"]) == ("exception", "SystemExit"), t
    assert calls == []


class LoudHandler:
    def __call__(self, signum, frame):
        pass

    def __getattr__(self, name):
        _ran("handler __getattr__ " + name)
        raise AttributeError(name)


def test_signal_handlers_are_recognised_without_asking_them() -> None:
    # Whether an exception escaping a callback was raised by one of the program's signal
    # handlers: a handler that is an object with a __getattr__ is not asked for __code__.
    previous = signal.signal(signal.SIGUSR1, LoudHandler())
    try:
        try:
            raise ValueError("x")
        except ValueError as exc:
            assert no_user_code(_raised_by_signal_handler, exc) is False
    finally:
        signal.signal(signal.SIGUSR1, previous)


class LoudTrace:
    def __call__(self, frame, event, arg):
        return None

    def __eq__(self, other):
        _ran("trace object __eq__")
        return True

    __hash__ = None  # type: ignore[assignment]


def test_whether_the_trace_function_is_still_ours_asks_nothing_of_the_programs() -> None:
    backend = SettraceBackend(Recorder(Renderer(), Scope(__file__), 0))
    previous = sys.gettrace()
    backend.start()
    try:
        assert backend.installed()
        sys.settrace(LoudTrace())
        assert no_user_code(backend.installed) is False
    finally:
        backend.stop()
        sys.settrace(previous)


def test_instance_dicts_and_counters_with_user_keys() -> None:
    obj = Plain()
    obj.__dict__[Loud()] = 1
    obj.__dict__["a"] = 2
    assert no_user_code(R.render, obj) == "Plain(?=1, a=2)"
    c = collections.Counter({Loud(): 2, "b": 3})
    assert no_user_code(R.render, c) == "Counter({'b': 3, Loud(): 2})"
    d = collections.defaultdict(int, {Loud(): 1})
    no_user_code(R.render, d)


class Stop(BaseException):
    pass


class StoppingTZ(datetime.tzinfo):
    def __repr__(self):
        raise Stop("raised from inside the renderer")


def test_a_base_exception_from_user_code_cannot_escape() -> None:
    d = datetime.datetime(2020, 1, 1, tzinfo=StoppingTZ())
    assert R.render(d) == "datetime.datetime(2020, 1, 1, 0, 0, tzinfo=StoppingTZ())"


class Worker(threading.Thread):
    pass


def test_threads_render_without_per_run_ids() -> None:
    for t in (threading.Thread(target=len, args=((),), name="T"), Worker(name="W")):
        before = R.render(t)
        t.start()
        t.join()
        after = R.render(t)
        for text in (before, after):
            for attr in ("_ident", "_native_id", "_tstate_lock", "_handle", "_os_thread_handle", "_is_stopped"):
                assert attr + "=" not in text, text
            assert str(t.ident) not in text
        assert f"_name={t.name!r}" in after
    assert "_ident" not in R.render(threading.current_thread())


def _ids(value) -> frozenset:
    return R.render_keyed(value)[1] or frozenset()


def test_a_method_rendering_visits_its_self() -> None:
    lst, seen, d, obj = [], set(), {}, Plain()
    for method, owner in ((lst.append, lst), (seen.add, seen), (d.setdefault, d), (lst.__setitem__, lst),
                          (types.MethodType(len, obj), obj), ([lst.append], lst), ({"k": seen.add}, seen)):
        assert id(owner) in _ids(method), method
    # Not modules nor classes: calling ``print`` or ``dict.fromkeys`` mutates neither.
    for method, owner in ((print, sys.modules["builtins"]), (dict.fromkeys, dict), (sys.getrecursionlimit, sys)):
        assert id(owner) not in _ids(method), method


def test_calling_a_bound_method_re_reads_its_object(backend: str) -> None:
    source = textwrap.dedent("""\
        def f():
            lst = []
            push = lst.append
            push(1)
            seen = set()
            add = seen.add
            add(2)
            return lst, seen
    """)
    t = trace_call("prog.py", "f", "", source=source, backend=backend)
    assert t["status"] == "ok", t
    after = {e["lineno"]: e["locals"] for e in t["events"] if e["kind"] == "line"}
    assert after[5].get("lst") == "[1]", after
    assert after[8].get("seen") == "{2}", after


def test_a_frozendict_renders_as_its_repr() -> None:
    """3.15's builtin frozendict is no dict subclass: it rendered as ``<frozendict object>``."""
    frozendict = getattr(builtins, "frozendict", None)
    if frozendict is None:
        if __name__ != "__main__":  # (run as a script, nothing to skip)
            pytest.skip("frozendict is a builtin from Python 3.15")
        return
    held: list = []
    cyclic = frozendict(a=held, b=(1, 2))
    held.append(cyclic)
    subclass = type("Sub", (frozendict,), {})
    for value in (frozendict(), frozendict({"a": 1, "b": [2]}), subclass(x=1), subclass(), [frozendict(k="v")]):
        assert R.render(value) == repr(value)
    assert R.render(cyclic) == "frozendict({'a': [frozendict({...})], 'b': (1, 2)})"
    big = R.render(frozendict((i, i * i) for i in range(5000)))
    assert big.startswith("frozendict({0: 0, 1: 1, ") and big.endswith("})") and "..." in big


def _run_as_script() -> None:
    """Every test of this module, without pytest (fixtures: the backends this Python has)."""
    backends = ["settrace"] + (["monitoring"] if sys.version_info >= (3, 12) else [])
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or name == "test_under_every_python" or not callable(fn):
            continue
        if "backend" in inspect.signature(fn).parameters:
            for backend in backends:
                fn(backend=backend)
        else:
            fn()
    print("ok")


if pytest is not None:
    from tracer_testutil import interpreter, script_stdout, versions_under_test

    @pytest.mark.multipython
    @pytest.mark.parametrize("version", versions_under_test())
    def test_under_every_python(version: str) -> None:
        stdout = script_stdout(interpreter(version), __file__)
        assert stdout.strip().endswith("ok"), stdout[-3000:]


if __name__ == "__main__":
    _run_as_script()
