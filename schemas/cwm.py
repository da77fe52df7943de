"""Meta CWM's execution-trace text format: render a trace as CWM tokens text, and parse it back.

Text layout (PROMPTING_GUIDE.md of facebookresearch/cwm)::

    <|begin_of_text|><|trace_context_start|>SOURCE<|frame_sep|>FRAME...[<|end_of_text|>]

SOURCE is the program with the entry function's ``def`` line marked ``  # << START_OF_TRACE``.
Frames, each ending in ``<|frame_sep|>``::

    <|call_sep|>LOCALS<|action_sep|>LINE\\n          (entering a function: LOCALS = the arguments)
    <|line_sep|>LOCALS<|action_sep|>LINE\\n          (about to run LINE)
    <|return_sep|><|action_sep|>LINE\\n<|arg_sep|>VALUE
    <|exception_sep|><|action_sep|>LINE\\n<|arg_sep|>VALUE

LOCALS is ``json.dumps`` of every variable in scope -> its rendered value; a value equal to the
one in the previous call/line frame is written ``".."`` unless a call or return frame came in
between (a reader resolves ``".."`` by walking back to the last call/return, as CWM's cwmdbg
does). VALUE is ``json.dumps`` of the rendered value. ``<|end_of_text|>`` ends a trace that ran
to the end of its entry point (status ok or exception, not truncated).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.errors import CwmFormatError
from schemas.reader import iter_full_locals

BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
TRACE_CONTEXT_START = "<|trace_context_start|>"
FRAME_SEP = "<|frame_sep|>"
ACTION_SEP = "<|action_sep|>"
RETURN_SEP = "<|return_sep|>"
CALL_SEP = "<|call_sep|>"
LINE_SEP = "<|line_sep|>"
EXCEPTION_SEP = "<|exception_sep|>"
ARG_SEP = "<|arg_sep|>"

# The trace-prediction tokens plus the text markers, for a tokenizer's special-token list.
CWM_SPECIAL_TOKENS: tuple[str, ...] = (
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    FRAME_SEP,
    ACTION_SEP,
    RETURN_SEP,
    CALL_SEP,
    LINE_SEP,
    EXCEPTION_SEP,
    ARG_SEP,
    TRACE_CONTEXT_START,
)
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."

_KIND_TOKEN = {"call": CALL_SEP, "line": LINE_SEP, "return": RETURN_SEP, "exception": EXCEPTION_SEP}
_TOKEN_KIND = {v: k for k, v in _KIND_TOKEN.items()}
_ANY_TOKEN = re.compile("|".join(re.escape(t) for t in CWM_SPECIAL_TOKENS))


@dataclass(frozen=True)
class CwmFrame:
    """One frame: `locals` (every variable, '..' resolved) for call/line, `arg` for return/exception."""

    kind: str
    source_line: str
    locals: dict[str, str] | None = None
    arg: str | None = None


@dataclass(frozen=True)
class CwmTrace:
    """What a CWM trace text holds: the program, the marked line, the frames, whether it ended."""

    source: str
    start_line: int | None  # 1-based line carrying START_OF_TRACE, None when none is marked
    frames: tuple[CwmFrame, ...]
    complete: bool


def _json(value: Any) -> str:
    return _no_markers(json.dumps(value))


def _no_markers(json_text: str) -> str:
    # Escape '<|' inside JSON strings (as <\u007c) so values never contain a special token.
    return json_text.replace("<|", "<\\u007c")


_quote = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str (ensure_ascii)


def _json_locals(shown: dict[str, str]) -> str:
    """`_json` of a dict of str to str, written directly: the same text several times faster
    (rendering was a third of the trainer's input pipeline)."""
    return _no_markers("{" + ", ".join(_quote(k) + ": " + _quote(v) for k, v in shown.items()) + "}")


def _check_plain(text: str, what: str) -> None:
    match = _ANY_TOKEN.search(text)
    if match:
        raise CwmFormatError(f"{what} contains the CWM special token {match.group()!r}")


def _entry_def_line(source_lines: Sequence[str], entrypoint: str | None, first_lineno: int) -> int:
    """1-based line of the entry function's `def` (for scripts, the first line executed)."""
    if entrypoint:
        name = re.escape(entrypoint.rsplit(".", 1)[-1])
        pattern = re.compile(rf"^\s*(async\s+)?def\s+{name}\s*[\(\[]")
        candidates = list(range(first_lineno - 1, len(source_lines))) + list(range(0, first_lineno - 1))
        for index in candidates:
            if 0 <= index < len(source_lines) and pattern.match(source_lines[index]):
                return index + 1
    return first_lineno


def trace_to_cwm(trace: Mapping[str, Any], *, source: str | None = None) -> CwmTrace:
    """The CWM view of a trace row (or a stream object, given `source`)."""
    program = source if source is not None else trace["source"]
    events = trace["events"]
    if not events:
        # Nothing ran (a syntax error, a failed import): no entry frame to mark and no frame to show.
        raise CwmFormatError("the trace has no events, and a CWM trace needs at least its entry frame")
    frames = []
    for event, state in zip(events, iter_full_locals(events)):
        kind = event["kind"]
        if kind in ("call", "line"):
            frames.append(CwmFrame(kind, event["source"], locals=state))
        elif kind in ("return", "exception"):
            frames.append(CwmFrame(kind, event["source"], arg=event["arg"]))
        else:
            raise CwmFormatError(f"unknown event kind {kind!r}")
    start_line = None
    if events:
        lines = program.split("\n")
        # A script's module frame starts at line 0: mark the first line it executes instead.
        entry_frame = events[0]["frame_id"]
        first = next(
            (e["lineno"] for e in events if e["frame_id"] == entry_frame and e["lineno"] >= 1),
            events[0]["lineno"],
        )
        start_line = _entry_def_line(lines, trace.get("entrypoint"), first)
        if not 1 <= start_line <= len(lines):
            start_line = None
    complete = not trace["truncated"] and trace["status"] in ("ok", "exception")
    return CwmTrace(program, start_line, tuple(frames), complete)


def format_cwm(cwm: CwmTrace) -> str:
    """The CWM text of a CwmTrace (parse_cwm is its inverse)."""
    _check_plain(cwm.source, "the program source")
    lines = cwm.source.split("\n")
    if any(line.rstrip("\r").endswith(START_MARKER) for line in lines):
        raise CwmFormatError(f"the program source already has a line ending in {START_MARKER!r}")
    if cwm.start_line is not None:
        # Before a CRLF program's "\r", so that the marker ends the line the model sees.
        line = lines[cwm.start_line - 1]
        cr = "\r" if line.endswith("\r") else ""
        lines[cwm.start_line - 1] = line[: len(line) - len(cr)] + START_MARKER + cr
    parts = [BEGIN_OF_TEXT, TRACE_CONTEXT_START, "\n".join(lines), FRAME_SEP]
    anchor: dict[str, str] | None = None  # full locals of the last call/line frame, if reachable
    checked: set[str] = set()  # source lines already checked (loops repeat them)
    for frame in cwm.frames:
        if frame.source_line not in checked:
            _check_plain(frame.source_line, "a source line")
            if "\n" in frame.source_line:
                raise CwmFormatError("a source line contains a newline")
            checked.add(frame.source_line)
        token = _KIND_TOKEN[frame.kind]
        if frame.kind in ("call", "line"):
            state = frame.locals or {}
            shown = {}
            for name, value in state.items():
                if frame.kind == "line" and anchor is not None and anchor.get(name) == value:
                    shown[name] = UNCHANGED
                elif value == UNCHANGED and frame.kind == "line":
                    raise CwmFormatError(f"{name!r} has the rendered value '..', ambiguous in CWM text")
                else:
                    shown[name] = value
            parts += [token, _json_locals(shown), ACTION_SEP, frame.source_line, "\n", FRAME_SEP]
            anchor = state
        else:
            parts += [token, ACTION_SEP, frame.source_line, "\n", ARG_SEP, _json(frame.arg), FRAME_SEP]
            if frame.kind == "return":
                anchor = None
    if cwm.complete:
        parts.append(END_OF_TEXT)
    return "".join(parts)


def render_cwm(trace: Mapping[str, Any], *, source: str | None = None) -> str:
    """CWM text of a trace row (or a stream object, given the program `source`)."""
    return format_cwm(trace_to_cwm(trace, source=source))


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CwmFormatError(f"{what} is not JSON: {text[:80]!r}") from e


def _source_line(text: str) -> str:
    if not text.endswith("\n"):
        raise CwmFormatError(f"source line {text[:80]!r} does not end with a newline")
    return text[:-1]


def parse_cwm(text: str) -> CwmTrace:
    """The program, marked line and frames (locals with '..' resolved) of a CWM trace text."""
    prefix = BEGIN_OF_TEXT + TRACE_CONTEXT_START
    if not text.startswith(prefix):
        raise CwmFormatError(f"CWM trace text starts with {prefix!r}")
    body = text[len(prefix) :]
    complete = body.endswith(END_OF_TEXT)
    if complete:
        body = body[: -len(END_OF_TEXT)]
    context, sep, rest = body.partition(FRAME_SEP)
    if not sep:
        raise CwmFormatError("no <|frame_sep|> after the source context")
    lines = context.split("\n")
    start_line = next((i + 1 for i, line in enumerate(lines) if line.rstrip("\r").endswith(START_MARKER)), None)
    if start_line is not None:
        line = lines[start_line - 1]
        cr = "\r" if line.endswith("\r") else ""
        lines[start_line - 1] = line[: len(line) - len(cr) - len(START_MARKER)] + cr
    pieces = rest.split(FRAME_SEP)
    if pieces[-1] != "":
        raise CwmFormatError("the last frame does not end with <|frame_sep|>")
    frames = []
    anchor: dict[str, str] | None = None
    for number, piece in enumerate(pieces[:-1], start=1):
        kind = _TOKEN_KIND.get(piece[: piece.find("|>") + 2])
        if kind is None:
            raise CwmFormatError(f"frame {number} starts with {piece[:20]!r}, not a frame token")
        payload = piece[len(_KIND_TOKEN[kind]) :]
        if kind in ("call", "line"):
            raw, sep, line = payload.partition(ACTION_SEP)
            if not sep:
                raise CwmFormatError(f"frame {number} has no <|action_sep|>")
            shown = _loads(raw, f"frame {number} locals")
            if not isinstance(shown, dict) or not all(isinstance(v, str) for v in shown.values()):
                raise CwmFormatError(f"frame {number} locals are not an object of strings")
            state = {}
            for name, value in shown.items():
                if value == UNCHANGED and kind == "line":
                    if anchor is None or name not in anchor:
                        raise CwmFormatError(f"frame {number}: {name!r} is '..' with no earlier value")
                    value = anchor[name]
                state[name] = value
            frames.append(CwmFrame(kind, _source_line(line), locals=state))
            anchor = state
        else:
            if not payload.startswith(ACTION_SEP) or ARG_SEP not in payload:
                raise CwmFormatError(f"frame {number} ({kind}) is not <|action_sep|>LINE<|arg_sep|>VALUE")
            line, _, value = payload[len(ACTION_SEP) :].partition(ARG_SEP)
            arg = _loads(value, f"frame {number} value")
            if arg is not None and not isinstance(arg, str):
                raise CwmFormatError(f"frame {number} value is not a JSON string")
            frames.append(CwmFrame(kind, _source_line(line), arg=arg))
            if kind == "return":
                anchor = None
    return CwmTrace("\n".join(lines), start_line, tuple(frames), complete)
