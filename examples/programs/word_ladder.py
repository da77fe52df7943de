"""Breadth-first search for a word ladder from COLD to WARM through a small dictionary."""
from collections import deque

WORDS = {"cold", "cord", "card", "ward", "warm", "word", "worm", "corm"}


def neighbours(word):
    for i in range(len(word)):
        for letter in "abcdefghijklmnopqrstuvwxyz":
            candidate = word[:i] + letter + word[i + 1 :]
            if candidate != word and candidate in WORDS:
                yield candidate


def ladder(start, goal):
    queue = deque([[start]])
    seen = {start}
    while queue:
        path = queue.popleft()
        if path[-1] == goal:
            return path
        for nxt in neighbours(path[-1]):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(path + [nxt])
    return None


print(" -> ".join(ladder("cold", "warm")))
