"""JSON Lines output: one trace per line, UTF-8, lone surrogates escaped so every line parses."""

from __future__ import annotations

import json
import re

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match) -> str:
    # Inside JSON text: a literal backslash is written as two.
    cp = ord(match.group(0))
    if 0xDC80 <= cp <= 0xDCFF:  # a byte smuggled in by surrogateescape: show it as \xNN
        return "\\\\x%02x" % (cp - 0xDC00)
    return "\\\\u%04x" % cp


def dumps_utf8(obj) -> bytes:
    """``obj`` as one line of JSON in UTF-8: non-ASCII kept, lone surrogates escaped."""
    return text_utf8(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def text_utf8(text: str) -> bytes:
    """JSON text as UTF-8, lone surrogates escaped as ``dumps`` escapes them."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text).encode("utf-8")


class RawJSON(bytes):
    """A value that is already JSON text in this module's encoding (UTF-8, compact, lone
    surrogates escaped): ``encode_line`` writes it as it is. Traces carry their events this way
    when they were written straight from the recorder (``trace_call(events_as_json=True)``), and
    the batch runner keeps a child's events this way."""


_SLOT = "\x00raw-json\x00"


def encode_line(trace: dict) -> bytes:
    """One trace as one UTF-8 JSON line (with its newline), lone surrogates escaped."""
    raw = [value for value in trace.values() if type(value) is RawJSON]
    if not raw:
        return dumps_utf8(trace) + b"\n"
    # The raw values go where placeholders were encoded. A placeholder's text could only occur
    # elsewhere as a string equal to it (a NUL is always written escaped); then decode instead.
    slots = {key: (_SLOT if type(value) is RawJSON else value) for key, value in trace.items()}
    parts = (dumps_utf8(slots) + b"\n").split(dumps_utf8(_SLOT))
    if len(parts) != len(raw) + 1:
        return dumps_utf8({key: (json.loads(value) if type(value) is RawJSON else value)
                           for key, value in trace.items()}) + b"\n"
    out = [parts[0]]
    for value, part in zip(raw, parts[1:]):
        out.append(value)
        out.append(part)
    return b"".join(out)


def write_trace(stream, trace: dict) -> None:
    """Write one trace as a JSON line to a binary or text stream and flush it."""
    line = encode_line(trace)
    if hasattr(stream, "encoding"):
        stream.write(line.decode("utf-8"))
    else:
        stream.write(line)
    stream.flush()
