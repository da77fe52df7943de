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


def dumps(obj) -> str:
    """``obj`` as one line of JSON: non-ASCII kept, lone surrogates escaped (valid UTF-8)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text


def write_trace(stream, trace: dict) -> None:
    """Write one trace as a JSON line to a binary or text stream and flush it."""
    line = dumps(trace) + "\n"
    if hasattr(stream, "encoding"):
        stream.write(line)
    else:
        stream.write(line.encode("utf-8"))
    stream.flush()
