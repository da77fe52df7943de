"""Rendering: exact repr() for builtins, structural for the rest, never user code, bounded."""

from __future__ import annotations

import array
import collections
import dataclasses
import enum
import pathlib
import sys

import pytest

from tracer.render import Renderer

R = Renderer()


class Hostile:
    """Every hook that could run user code raises."""

    def __init__(self) -> None:
        object.__setattr__(self, "a", 1)

    def __repr__(self):
        raise AssertionError("__repr__ ran")

    def __str__(self):
        raise AssertionError("__str__ ran")

    def __eq__(self, other):
        raise AssertionError("__eq__ ran")

    def __hash__(self):
        raise AssertionError("__hash__ ran")

    def __getattr__(self, name):
        raise AssertionError("__getattr__ ran")

    def __getattribute__(self, name):
        raise AssertionError("__getattribute__ ran")

    def __len__(self):
        raise AssertionError("__len__ ran")

    @property
    def prop(self):
        raise AssertionError("property ran")


class EvilMeta(type):
    @property
    def __name__(cls):
        raise AssertionError("metaclass property ran")


class WithEvilMeta(metaclass=EvilMeta):
    pass


class HostileList(list):
    def __iter__(self):
        raise AssertionError("__iter__ ran")

    def __len__(self):
        raise AssertionError("__len__ ran")


class HostileDict(dict):
    """A dict subclass whose Python-level hooks raise (its views must not call them)."""

    def __iter__(self):
        raise AssertionError("__iter__ ran")

    def __len__(self):
        raise AssertionError("__len__ ran")

    def __getitem__(self, key):
        raise AssertionError("__getitem__ ran")

    def keys(self):
        raise AssertionError("keys ran")

    def values(self):
        raise AssertionError("values ran")

    def items(self):
        raise AssertionError("items ran")


class DictProperty:
    @property
    def __dict__(self):
        raise AssertionError("__dict__ property ran")


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x = 1


@dataclasses.dataclass
class DC:
    x: int
    y: list


class Color(enum.Enum):
    RED = 1


Pair = collections.namedtuple("Pair", "a b")

BUILTINS = [
    0, -1, 2**64, 1.5, float("nan"), float("inf"), -0.0, 1 + 2j, True, None, ..., NotImplemented,
    "", "it's", 'say "hi"', "tab\t\n", "é\u2603", "\udcff", b"", b"\xff\x00'", bytearray(b"ab"),
    (), (1,), (1, 2), [], [1, [2, (3,)]], {}, {"a": [1, {"b": 2}]}, set(), {1, 2, 3}, frozenset(), frozenset({5}),
    range(3), range(1, 10, 2), collections.deque([1, 2]), collections.deque([1], maxlen=2),
    collections.OrderedDict(a=1), collections.OrderedDict(), collections.Counter("abbccc"), collections.Counter(),
    collections.defaultdict(list, {"k": [1]}), ValueError("x"), KeyError("k"), Exception(), len,
    DC(1, [2]), Pair(1, "b"), Color.RED, int, Hostile,
    # views and slices: builtin, with a deterministic repr
    {"a": 1, "b": [2]}.keys(), {"a": 1, "b": [2]}.values(), {"a": 1, "b": [2]}.items(), {}.items(),
    dict.keys(HostileDict(k=1)), slice(3), slice(1, "a", None), slice(None, None, -1),
    array.array("i", [1, -2]), array.array("d", [0.1]), array.array("b"),
    pathlib.PurePosixPath("/a/b"), pathlib.Path("rel/x.py"), pathlib.PureWindowsPath("c:/a\\b"),
]


@pytest.mark.parametrize("value", BUILTINS, ids=[type(v).__name__ + str(i) for i, v in enumerate(BUILTINS)])
def test_builtins_match_repr(value) -> None:
    assert R.render(value) == repr(value)


STRUCTURAL = [
    (Hostile(), "Hostile(a=1)"),
    (WithEvilMeta(), "WithEvilMeta()"),
    (HostileList([1, 2]), "HostileList([1, 2])"),
    (DictProperty(), "<DictProperty object>"),
    (Slotted(), "Slotted(x=1)"),
    ([Hostile()], "[Hostile(a=1)]"),
    ({Hostile.__name__: Hostile()}, "{'Hostile': Hostile(a=1)}"),
    ((lambda: 0), "<function <lambda>>"),
    (sys, "<module 'sys'>"),
    (iter([]).__next__, "<method-wrapper '__next__' of list_iterator object>"),
    ([].append, "<built-in method append of list object>"),
]


@pytest.mark.parametrize("value, expected", STRUCTURAL, ids=[e for _v, e in STRUCTURAL])
def test_user_objects_render_structurally_without_running_user_code(value, expected) -> None:
    assert R.render(value) == expected


def test_sets_are_sorted_for_determinism() -> None:
    assert R.render({"b", "a", "c"}) == "{'a', 'b', 'c'}"
    assert R.render({3, "x", 1.5}) == "{1.5, 3, 'x'}"


def test_no_memory_addresses() -> None:
    for value in (object(), Hostile(), len, (lambda: 0), iter([]), Renderer):
        assert "0x" not in R.render(value)


def test_cycles() -> None:
    a: list = [1]
    a.append(a)
    d: dict = {}
    d["self"] = d
    assert R.render(a) == repr(a) == "[1, [...]]"
    assert R.render(d) == "{'self': {...}}"
    h = Hostile()
    object.__setattr__(h, "me", h)
    assert R.render(h) == "Hostile(a=1, me=Hostile(...))"


def test_budgets_bound_huge_values() -> None:
    r = Renderer(max_value_chars=100, max_items=10, max_depth=3)
    big = list(range(10_000_000))
    text = r.render(big)
    assert len(text) <= 100 and text.startswith("[0, 1, 2") and text.endswith("9999999]")
    s = r.render("x" * 10_000_000)
    assert len(s) <= 100 and s.startswith("'xxx") and "..." in s
    assert r.render([[[[1]]]]) == "[[[[...]]]]"  # three levels opened, the fourth elided
    # dicts and sets show a head and a tail too (a key added last is seen)
    assert r.render(dict.fromkeys(range(1000))) == (
        "{0: None, 1: None, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None, ..., 998: None, 999: None}")
    assert r.render(set(range(100_000))) == "{0, 1, 2, 3, 4, 5, 6, 7, ..., 99998, 99999}"
    # a view of a huge dict and a huge array cost the items budget, not their length
    huge = dict.fromkeys(range(1_000_000), 0)
    assert r.render(huge.keys()) == "dict_keys([0, 1, 2, 3, 4, 5, 6, 7, ..., 999998, 999999])"
    assert r.render(huge.items()) == (
        "dict_items([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), ..., (999998, 0), (999999, 0)])")
    assert r.render(array.array("q", range(1000))) == "array('q', [0, 1, 2, 3, 4, 5, 6, 7, ..., 998, 999])"


def test_views_show_their_dict_and_never_its_user_code() -> None:
    d = HostileDict(a=1)
    view = dict.values(d)
    d["b"] = [2]  # a view is live
    assert R.render(view) == "dict_values([1, [2]])"
    text, ids, _key = R.render_keyed(view)
    assert id(d) in ids  # the recorder re-reads the view when a line mutates its dict
    loop: dict = {}
    loop["v"] = loop.values()
    assert R.render(loop) == repr(loop) == "{'v': dict_values([...])}"


@pytest.mark.parametrize("chars, value, expected", [
    # whole numbers from the head (two thirds of the room) and the tail, the last item kept
    (120, [1.0000000000000004] * 30 + [2.5],
     "[1.0000000000000004, 1.0000000000000004, 1.0000000000000004, ..., 1.0000000000000004, "
     "1.0000000000000004, 2.5]"),
    (80, ["ab" * 10] * 10 + ["last"], "['abababababababababab', 'abababababababababab', ..., 'last']"),
    # a container item gets the room left and shows its own head and tail
    (60, [[0] * 500, [1] * 500], "[[0, 0, 0, 0, 0, 0, 0, ..., 0, 0, 0], [1, 1, ..., 1]]"),
    (100, {f"k{i}": i for i in range(40)},
     "{'k0': 0, 'k1': 1, 'k2': 2, 'k3': 3, 'k4': 4, 'k5': 5, 'k6': 6, ..., 'k38': 38, 'k39': 39}"),
    # only the first item of each end is cut to fit, inside its quotes
    (60, ["x" * 200, "short"], "['xxxxxxxxxxxxxxxxxxx...xxxxxxxxx', 'short']"),
    (70, {"a" * 30, "b" * 30, "c" * 30}, "{'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', ..., 'cccccccccccccc...ccccccc'}"),
])
def test_a_value_over_the_character_budget_is_cut_between_whole_items(chars: int, value, expected: str) -> None:
    """Over the character budget a container shows whole items from its head and from its tail
    (an item appended last is seen), never a number or a string's quotes cut in the middle (the
    text used to be cut by characters: '[1.00...000004, 1.00', a tail from the middle)."""
    text = Renderer(max_value_chars=chars).render(value)
    assert text == expected and len(text) <= chars


def test_cuts_keep_whole_items_at_every_budget() -> None:
    """Lists of numbers at every character budget: the shown items are the list's first and
    last items, whole, in order, with "..." between when some are left out."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        value = [rng.choice([rng.randint(-10**6, 10**6), rng.random() * 10**rng.randint(-3, 9), None, True])
                 for _ in range(rng.randint(1, 150))]
        chars = rng.randint(8, 400)
        text = Renderer(max_value_chars=chars, max_items=rng.choice([0, 10, 100])).render(value)
        assert len(text) <= chars and text[0] == "[" and text[-1] == "]", (chars, text)
        parts = text[1:-1].split(", ") if len(text) > 2 else []
        reprs = [repr(v) for v in value]
        if "..." in parts:
            cut = parts.index("...")
            head, tail = parts[:cut], parts[cut + 1:]
            assert head == reprs[:len(head)] and (not tail or tail == reprs[-len(tail):]), (chars, text)
            assert len(head) + len(tail) < len(value)
        else:
            assert parts == reprs, (chars, text)


class _NoShortcuts(Renderer):
    """The reference over the budget: no repr()-based fitting of scalar lists, and no reuse of
    the whole items the item-by-item pass rendered before it found the plan does not fit."""

    def _scalars_overflow(self, *args):
        return None

    def _overflow(self, n, head, tail, front, back, pairs, depth, budget, allow, done=()):
        return Renderer._overflow(self, n, head, tail, front, back, pairs, depth, budget, allow)


def test_fitting_shortcuts_render_exactly_like_the_plain_path() -> None:
    import random

    rng = random.Random(11)

    def value(depth: int = 0):
        if depth > 2 or rng.random() < 0.35:
            return rng.choice([rng.randint(-10**9, 10**9), rng.random() * 1e6, "s" * rng.randint(0, 80), None])
        n = rng.choice([0, 1, 2, 3, 5, 12, 40, 130])
        kind = rng.random()
        if kind < 0.4:
            return [value(depth + 1) for _ in range(n)]
        if kind < 0.55:
            return tuple(value(depth + 1) for _ in range(n))
        if kind < 0.8:
            return {f"k{i}": value(depth + 1) for i in range(n)}
        return {rng.randint(0, 10**6) for _ in range(n)}

    for _ in range(1500):
        v = value()
        budgets = rng.choice([10, 30, 60, 100, 250, 1000]), rng.choice([0, 3, 10, 100]), rng.choice([2, 4, 8])
        text = Renderer(*budgets).render(v)
        assert text == _NoShortcuts(*budgets).render(v) == Renderer(*budgets).render_keyed(v)[0], (budgets, v)
        assert len(text) <= budgets[0] or type(v) in (int, float), (budgets, text)


def test_unlimited_budget_is_full_repr() -> None:
    r = Renderer(0, 0, 0)
    value = [list(range(300))] * 5
    assert r.render(value) == repr(value)


def test_huge_ints_beyond_the_digit_limit() -> None:
    text = R.render(7 ** 100000)
    assert text.startswith("<int ~") and "digits" in text
    assert R.render(-(10 ** 5000)).startswith("<int -~")


def test_a_type_that_failed_is_not_tried_again() -> None:
    class Weird:
        pass

    r = Renderer()
    calls = []

    def explode(t):
        calls.append(t)
        raise RuntimeError("renderer bug")

    r._classify = explode  # type: ignore[method-assign]
    assert r.render(Weird()) == "<Weird object>"
    assert r.render(Weird()) == "<Weird object>"
    assert len(calls) == 1


def test_output_is_always_valid_text() -> None:
    for value in ("\udcff\ud800", b"\xff\xfe", "\x00", bytes(range(256))):
        R.render(value).encode("utf-8")


def test_exception_messages_without_user_code() -> None:
    assert R.render_exception(ValueError("bad")) == "ValueError: bad"
    assert R.render_exception(KeyError("k")) == "KeyError: 'k'"
    assert R.render_exception(OSError(2, "nope")) == "FileNotFoundError: [Errno 2] nope"
    assert R.exception_message(ValueError(Hostile())) == "Hostile(a=1)"


class _ItemByItem(Renderer):
    """The reference: no C-speed shortcuts, every item through ``_render``."""

    @staticmethod
    def _fast_items(items):
        return None


def _random_value(rng, depth: int = 0):
    """Lists, tuples and dicts of small scalars (sometimes nested, sometimes past a budget)."""
    scalars = (
        lambda: rng.randint(-5, 300),
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0.5, -0.0, 1e300, float("inf")]),
        lambda: rng.choice(["", "a", "it's", "x" * rng.randint(1, 120), "\u00e9\n"]),
        lambda: None,
    )
    kinds = scalars[: rng.randint(1, len(scalars))]
    n = rng.choice([0, 1, 2, 5, 99, 100, 101, 130])
    if depth == 0 and rng.random() < 0.3:
        return [_random_value(rng, 1) for _ in range(rng.randint(0, 12))]
    if depth == 0 and rng.random() < 0.3:  # a table of small scalars
        width = rng.randint(0, 12)
        return [[rng.randint(-9, 99) for _ in range(width)] for _ in range(rng.randint(2, 12))]
    items = [rng.choice(kinds)() for _ in range(n)]
    shape = rng.choice(["list", "tuple", "dict"])
    if shape == "dict":
        return {rng.choice([str(i), i]): v for i, v in enumerate(items)}
    return items if shape == "list" else tuple(items)


def test_a_fast_head_then_a_mixed_tail_is_charged_once() -> None:
    """A long list whose head takes the C-speed join but whose tail does not: the head must not
    be charged to the character budget twice (it was cut at 51 items, with no tail)."""
    value = list(range(100000, 100125)) + [1, "a"] * 12 + [2]
    expected = "[" + ", ".join(map(repr, value[:75])) + ", ..., " + ", ".join(map(repr, value[-25:])) + "]"
    assert len(expected) < 1000
    assert Renderer().render(value) == expected == _ItemByItem().render(value)


@pytest.mark.parametrize("chars, items", [(1000, 100), (60, 100), (1000, 7), (0, 0)])
def test_fast_paths_render_exactly_like_the_item_by_item_path(chars: int, items: int) -> None:
    """render_keyed's repr() shortcuts (lists, tables, dicts of small scalars) and refresh's
    incremental re-rendering of mutated lists give exactly what ``render`` gives; and while the
    character budget is not spent, so does the item-by-item path without C-speed joins."""
    import random

    rng = random.Random(chars * 1000 + items)
    fast = Renderer(max_value_chars=chars, max_items=items)
    item_by_item = _ItemByItem(max_value_chars=chars, max_items=items)

    class slow:  # the reference for each rendering: a fresh renderer's render()
        @staticmethod
        def render(value):
            text = Renderer(max_value_chars=chars, max_items=items).render(value)
            if "..." not in text:  # nothing was cut (the random strings never contain "...")
                assert item_by_item.render(value) == text, value
            return text

    for _ in range(400):
        value = _random_value(rng)
        text, _, key = fast.render_keyed(value)
        assert text == slow.render(value), value
        if type(value) is not list or type(key) is not tuple:
            continue
        for _ in range(6):  # mutate, then refresh against the previous key
            op = rng.choice(["set", "swap", "append", "pop", "rebind", "cell", "row"])
            rows = [i for i, row in enumerate(value) if type(row) is list and row]
            if op == "cell" and rows:  # a table: change one cell of one row
                row = value[rng.choice(rows)]
                row[rng.randrange(len(row))] = rng.choice([7, "z", None, [1]])
            elif op == "row" and rows:  # a table: replace a row by an equal copy
                i = rng.choice(rows)
                value[i] = list(value[i])
            elif op == "set" and value:
                value[rng.randrange(len(value))] = rng.randint(0, 9)
            elif op == "swap" and len(value) > 1:
                i, j = rng.randrange(len(value)), rng.randrange(len(value))
                value[i], value[j] = value[j], value[i]
            elif op == "append":
                value.append(rng.choice([1, "b", 2.5]))
            elif op == "pop" and value:
                value.pop()
            elif op == "rebind":
                value = list(value)
            result = fast.refresh(key, value)
            if result is None:
                assert text == slow.render(value), value
            else:
                text, _, key = result
                assert text == slow.render(value), value
                if type(key) is not tuple:
                    break
