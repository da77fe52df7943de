"""Rendering: exact repr() for builtins, structural for the rest, never user code, bounded."""

from __future__ import annotations

import collections
import dataclasses
import enum
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
    assert r.render(dict.fromkeys(range(1000))).endswith("...}")
    assert r.render(set(range(100_000))).endswith("...}")


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

    def _fast_items(self, items, budget):
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
