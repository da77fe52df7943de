"""JSON Lines output: one trace per line, UTF-8, lone surrogates escaped so every line parses."""

from __future__ import annotations

import json
import re

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_text(match) -> str:
    cp = ord(match.group(0))
    if 0xDC80 <= cp <= 0xDCFF:  # a byte smuggled in by surrogateescape: show it as \xNN
        return "\\x%02x" % (cp - 0xDC00)
    return "\\u%04x" % cp


def _escape_surrogate(match) -> str:
    # Inside JSON text: a literal backslash is written as two.
    return _surrogate_text(match).replace("\\", "\\\\")


def valid_text(text: str) -> str:
    """``text`` as a reader of the output gets it: each lone surrogate written out as ``\\uXXXX``
    (a byte that surrogateescape smuggled in as ``\\xNN``), so it is valid Unicode."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_surrogate_text, text)


def _unserialisable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _compact_encoder(ensure_ascii: bool):
    """``json.dumps(obj, ensure_ascii=..., separators=(",", ":"))`` straight from json's C encoder.

    json.dumps goes through ``JSONEncoder``'s Python code, which looks its builtins up live; the
    batch child encodes its report after the program ran, and a program may have replaced
    ``isinstance`` or ``str`` and left them so (tracer/_builtins.py).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return lambda obj: json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":"))
    string = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    # (markers: no cycle check, default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan): what JSONEncoder.iterencode passes for these options.
    encode = make(None, _unserialisable, string, None, ":", ",", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


dumps_compact = _compact_encoder(ensure_ascii=False)
dumps_ascii = _compact_encoder(ensure_ascii=True)


def dumps_utf8(obj) -> bytes:
    """``obj`` as one line of JSON in UTF-8: non-ASCII kept, lone surrogates escaped."""
    return text_utf8(dumps_compact(obj))


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
