import dataclasses
from collections import namedtuple

Pair = namedtuple("Pair", "left right")


@dataclasses.dataclass
class Point:
    x: int
    y: int

    def moved(self, dx):
        return Point(self.x + dx, self.y)


class Node:
    __slots__ = ("value", "next")

    def __init__(self, value, next=None):
        self.value = value
        self.next = next


class Loud:
    def __repr__(self):
        raise RuntimeError("user code must not run")

    def __getattr__(self, name):
        raise RuntimeError("user code must not run")


def main():
    p = Point(1, 2)
    q = p.moved(3)
    pair = Pair(p, q)
    head = Node(1, Node(2))
    loud = Loud()
    loud.tag = "x"
    cyc = [1]
    cyc.append(cyc)
    return pair, head, loud, cyc
