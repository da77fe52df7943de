"""The terminal view of a trace: a header, then one block per step (source, locals, stack)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from harvest.inspect.steps import Step, program_file, program_lines

CONTEXT_LINES = 3
MAX_VALUE = 200


@dataclass(frozen=True)
class TextStyle:
    """Whether to colour the output (ANSI) and how many source lines to show around the current one."""

    color: bool = False
    context: int = CONTEXT_LINES


def _short(value: str | None, limit: int = MAX_VALUE) -> str:
    text = "None" if value is None else value.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header(trace: Mapping[str, Any]) -> str:
    """The trace's identity and outcome, a few lines."""
    call = trace.get("entrypoint") or "<script>"
    if trace.get("entrypoint") and trace.get("input") is not None:
        call = f"{trace['entrypoint']}({_short(trace['input'], 80)})"
    elif trace.get("input") is not None:  # a script's standard input
        call = f"<script> < {_short(trace['input'], 80)}"
    if trace["status"] == "ok":
        outcome = f"returned {_short(trace.get('return_value'))}" if trace.get("entrypoint") else "finished"
    elif trace.get("exception_type"):
        outcome = f"raised {trace['exception_type']}: {_short(trace.get('exception_message'))}"
    else:
        outcome = _short(trace.get("tracer_error") or trace.get("exception_message") or "")
    lines = [
        f"trace {trace['trace_id']}  program {trace['program_id']}",
        f"  {call} -> {trace['status']}: {outcome}",
        f"  {trace['n_events']} events{' (truncated)' if trace.get('truncated') else ''}, "
        f"Python {trace['python_version']} ({trace['backend']}), image {trace['image']}, "
        f"{trace['wall_time_s']:.4f} s",
    ]
    return "\n".join(lines)


def _source_block(step: Step, source_lines: list[str], in_program: bool, style: TextStyle) -> list[str]:
    if in_program and step.lineno == 0:  # a script's module frame starts before its first line
        return [f"  ({step.file}: start of the module)"]
    if not in_program or not 1 <= step.lineno <= len(source_lines):
        marker = f"→ {step.lineno:>4}  {step.line_source}"
        return [f"  ({step.file})", click.style(marker, reverse=True) if style.color else marker]
    lo = max(1, step.lineno - style.context)
    hi = min(len(source_lines), step.lineno + style.context)
    out = []
    for number in range(lo, hi + 1):
        text = source_lines[number - 1]
        if number == step.lineno:
            line = f"→ {number:>4}  {text}"
            out.append(click.style(line, reverse=True, bold=True) if style.color else line)
        else:
            out.append(f"  {number:>4}  {text}")
    return out


def render_step(
    step: Step, total: int, source_lines: list[str], main_file: str | None, style: TextStyle
) -> str:
    """One step: what happens, the source around the line, the frame's locals and the call stack."""
    title = f"── step {step.index + 1}/{total} · {step.describe()} "
    lines = [click.style(title, bold=True) if style.color else title]
    lines += _source_block(step, source_lines, step.file == main_file, style)
    if step.locals:
        lines.append(f"  locals of {step.function} (frame {step.frame_id}; * changed):")
        width = max(len(name) for name in step.locals)
        lines += [
            f"  {'*' if name in step.changed and step.kind == 'line' else ' '} {name.ljust(width)} = {_short(value)}"
            for name, value in step.locals.items()
        ]
    else:
        lines.append(f"  locals of {step.function}: (none)")
    stack = " → ".join(f"{frame.function}:{frame.lineno}" for frame in step.stack)
    lines.append(f"  stack: {stack}" + (f"  (thread {step.thread_id})" if step.thread_id else ""))
    if step.kind == "return" and step.arg is not None:
        lines.append(f"  return value: {_short(step.arg)}")
    elif step.kind == "exception":
        lines.append(f"  exception: {_short(step.arg)}")
    return "\n".join(lines)


def render_steps(
    trace: Mapping[str, Any], steps: Iterable[Step], style: TextStyle | None = None
) -> Iterable[str]:
    """The blocks of `steps` (from iter_steps over this trace's events), one string each."""
    style = style or TextStyle()
    source_lines = program_lines(trace["source"])
    main_file = program_file(trace)
    total = len(trace["events"])
    for step in steps:
        yield render_step(step, total, source_lines, main_file, style)


def render_outcome(trace: Mapping[str, Any]) -> str:
    """The program's output after the steps, when it wrote any."""
    parts = []
    for name in ("stdout", "stderr"):
        if trace.get(name):
            parts.append(f"── {name}\n{trace[name].rstrip()}")
    return "\n".join(parts)
