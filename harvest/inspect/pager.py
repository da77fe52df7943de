"""Step through a trace interactively in a terminal, one step per screen."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import click

from harvest.inspect.steps import Step, iter_steps, program_file, program_lines
from harvest.inspect.text import TextStyle, header, render_step

HELP = "→/n/space next · ←/p back · g go to step · Home/b first · End/e last · q quit"
NEXT_KEYS = {"n", " ", "\r", "\n", "j", "l", "\x1b[C", "\x1b[B", "\x1bOC"}
PREV_KEYS = {"p", "k", "h", "\x7f", "\x1b[D", "\x1b[A", "\x1bOD"}
FIRST_KEYS = {"b", "\x1b[H", "\x1bOH", "<"}
LAST_KEYS = {"e", "\x1b[F", "\x1bOF", ">"}


class StepCache:
    """Steps computed on demand from the start and kept, so going back is free."""

    def __init__(self, events: Any) -> None:
        self._source: Iterator[Step] = iter_steps(events)
        self._steps: list[Step] = []
        self.total = len(events)

    def __getitem__(self, index: int) -> Step:
        while len(self._steps) <= index:
            self._steps.append(next(self._source))
        return self._steps[index]


def page_trace(trace: Mapping[str, Any], style: TextStyle, start: int = 0) -> None:
    """Show one step per screen and read keys until the user quits."""
    steps = StepCache(trace["events"])
    if steps.total == 0:
        click.echo(header(trace) + "\n(no events)")
        return
    source_lines = program_lines(trace["source"])
    main_file = program_file(trace)
    index = max(0, min(start, steps.total - 1))
    while True:
        click.clear()
        click.echo(header(trace))
        click.echo(render_step(steps[index], steps.total, source_lines, main_file, style))
        click.echo(click.style(HELP, dim=True))
        key = click.getchar()
        if key in ("q", "Q", "\x03", "\x1b"):
            return
        if key in NEXT_KEYS:
            index = min(index + 1, steps.total - 1)
        elif key in PREV_KEYS:
            index = max(index - 1, 0)
        elif key in FIRST_KEYS:
            index = 0
        elif key in LAST_KEYS:
            index = steps.total - 1
        elif key == "g":
            target = click.prompt("step", type=click.IntRange(1, steps.total), default=index + 1)
            index = target - 1
