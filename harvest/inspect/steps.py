"""A trace as steps: each event with its frame's full locals and the call stack at that moment."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.reader import iter_full_locals


@dataclass(frozen=True)
class FrameView:
    """One frame on the call stack: its function, current line and every local with its value."""

    frame_id: int
    function: str
    lineno: int
    locals: Mapping[str, str]


@dataclass(frozen=True)
class Step:
    """One event of a trace, with the state a reader wants to see at that moment."""

    index: int
    kind: str
    lineno: int
    file: str
    function: str
    line_source: str
    depth: int
    frame_id: int
    thread_id: int
    arg: str | None
    locals: Mapping[str, str]  # the full state of the event's frame (deltas folded)
    changed: frozenset[str]  # the variables this event records (new, changed or deleted)
    stack: tuple[FrameView, ...]  # outermost frame first; the event's frame last

    def describe(self) -> str:
        """What happens at this step, in a few words."""
        if self.kind == "call":
            return f"call {self.function}()"
        if self.kind == "return":
            if self.arg is None:
                return f"{self.function}() ends (exception propagates)"
            return f"{self.function}() returns {self.arg}"
        if self.kind == "exception":
            return f"exception in {self.function}(): {self.arg}"
        return f"line {self.lineno} in {self.function}()"


def iter_steps(events: Sequence[Mapping[str, Any]]) -> Iterator[Step]:
    """Steps of a trace's events, computed in one pass (usable on long traces).

    The call stack of a thread is rebuilt from `depth`: an event at depth d replaces whatever was
    at depth >= d, so frames that returned (or unwound) disappear from the stack.
    """
    stacks: dict[int, list[FrameView]] = {}
    for index, (event, state) in enumerate(zip(events, iter_full_locals(events), strict=True)):
        frame = FrameView(event["frame_id"], event["function"], event["lineno"], state)
        stack = stacks.setdefault(event["thread_id"], [])
        del stack[event["depth"] :]
        stack.append(frame)
        yield Step(
            index=index,
            kind=event["kind"],
            lineno=event["lineno"],
            file=event["file"],
            function=event["function"],
            line_source=event["source"],
            depth=event["depth"],
            frame_id=event["frame_id"],
            thread_id=event["thread_id"],
            arg=event["arg"],
            locals=state,
            changed=frozenset(_names(event["locals"])),
            stack=tuple(stack),
        )


def _names(locals_: Any) -> list[str]:
    """Variable names of an event's `locals` (a list of name/value rows, or a stream dict)."""
    if isinstance(locals_, Mapping):
        return list(locals_)
    return [item["name"] for item in locals_]


def program_file(trace: Mapping[str, Any]) -> str | None:
    """The file name the program's own code has in the events (the entry frame's file)."""
    events = trace.get("events") or []
    return events[0]["file"] if events else None


def program_lines(source: str) -> list[str]:
    """The program's lines as the events number them: split at "\\n" only (not at the form feeds,
    \\x1c-\\x1e, \\x85 or \\u2028 that str.splitlines also breaks at), a CRLF line's "\\r" dropped."""
    lines = source.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
