"""CWM text format: golden texts (checked by hand), render/parse round trips, hostile inputs.

Golden files: tests/schemas/golden/handmade/*.cwm (from hand-made stream objects) and
tests/schemas/golden/<X.Y>/*.cwm (real tracer, per Python version). Regenerate with
WORLDTRACE_REGEN_GOLDEN=1 and review the diff by eye.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from stream_samples import SIMPLE_SOURCE, event, simple_trace, stream_object

from schemas.cwm import (
    CWM_SPECIAL_TOKENS,
    START_MARKER,
    CwmFrame,
    format_cwm,
    parse_cwm,
    render_cwm,
    trace_to_cwm,
)
from schemas.errors import CwmFormatError

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("WORLDTRACE_REGEN_GOLDEN") == "1"
PY = ".".join(platform.python_version_tuple()[:2])

NESTED_SOURCE = "def g(a):\n    b = a * 2\n    return b\n\ndef f(x):\n    y = g(x)\n    return y + x\n"


def nested_trace() -> dict[str, Any]:
    """f(3) calling g(3): the caller's locals are written in full again after the return."""
    return stream_object(
        [
            event("call", 5, "def f(x):", {"x": "3"}),
            event("line", 6, "    y = g(x)"),
            event("call", 1, "def g(a):", {"a": "3"}, function="g", depth=1, frame_id=1),
            event("line", 2, "    b = a * 2", function="g", depth=1, frame_id=1),
            event("line", 3, "    return b", {"b": "6"}, function="g", depth=1, frame_id=1),
            event("return", 3, "    return b", arg="6", function="g", depth=1, frame_id=1),
            event("line", 7, "    return y + x", {"y": "6"}),
            event("return", 7, "    return y + x", arg="9"),
        ],
        input="3",
        return_value="9",
    )


EXCEPTION_SOURCE = "def f(s):\n    t = s + '<|' + 'frame_sep|>'\n    del s\n    raise ValueError(t)\n"


def exception_trace() -> dict[str, Any]:
    """Escaping exception, deleted variable, a special token and non-ASCII inside values."""
    return stream_object(
        [
            event("call", 1, "def f(s):", {"s": "'é'"}),
            event("line", 2, "    t = s + '<|' + 'frame_sep|>'"),
            event("line", 3, "    del s", {"t": "'é<|frame_sep|>'"}),
            event("line", 4, "    raise ValueError(t)", {"s": None}),
            event("exception", 4, "    raise ValueError(t)", arg="ValueError: é<|frame_sep|>"),
            event("return", 4, "    raise ValueError(t)", arg=None),
        ],
        input="'é'",
        status="exception",
        exception_type="ValueError",
        exception_message="é<|frame_sep|>",
    )


HANDMADE: dict[str, tuple[dict[str, Any], str]] = {
    "simple": (simple_trace(3), SIMPLE_SOURCE),
    "nested": (nested_trace(), NESTED_SOURCE),
    "exception": (exception_trace(), EXCEPTION_SOURCE),
    "truncated": (
        stream_object(simple_trace(3)["events"][:2], n_events=2, truncated=True, truncated_reason="max_events"),
        SIMPLE_SOURCE,
    ),
}

# Programs for the real tracer: name -> (source, entry point, input).
PROGRAMS: dict[str, tuple[str, str, str]] = {
    "cruxeval_sample_0": (
        "def f(nums):\n    output = []\n    for n in nums:\n        output.append((nums.count(n), n))\n"
        "    output.sort(reverse=True)\n    return output",
        "f",
        "[1, 1, 3, 1, 3, 1]",
    ),
    "helper_calls": (
        "def helper(a):\n    b = a * 2\n    return b\n\n\ndef f(xs):\n    total = 0\n    for x in xs:\n"
        "        total += helper(x)\n    return total\n",
        "f",
        "[1, 2]",
    ),
    "caught_then_escaping": (
        "def f(s):\n    try:\n        n = int(s)\n    except ValueError:\n        n = -1\n    return 10 // (n + 1)\n",
        "f",
        "'abc'",
    ),
    "generator": (
        "def squares(n):\n    for i in range(n):\n        yield i * i\n\n\ndef f(n):\n    return sum(squares(n))\n",
        "f",
        "3",
    ),
    "method_entry": (
        "class Point:\n    def __init__(self, x):\n        self.x = x\n\n    def norm(self, k):\n"
        "        return abs(self.x) * k\n\n\ndef f(x):\n    return Point(x).norm(2)\n",
        "f",
        "-4",
    ),
}


def check_golden(path: Path, text: str) -> None:
    if REGEN or not path.exists():
        if not REGEN:
            pytest.fail(f"{path} is missing: run with WORLDTRACE_REGEN_GOLDEN=1 and review it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{path} differs (WORLDTRACE_REGEN_GOLDEN=1 to update)"


def assert_roundtrip(trace: dict[str, Any], source: str) -> str:
    text = render_cwm(trace, source=source)
    parsed = parse_cwm(text)
    assert parsed == trace_to_cwm(trace, source=source)
    assert parsed.source == source
    assert format_cwm(parsed) == text
    return text


@pytest.mark.parametrize("name", sorted(HANDMADE))
def test_handmade_golden(name: str) -> None:
    trace, source = HANDMADE[name]
    check_golden(GOLDEN / "handmade" / f"{name}.cwm", assert_roundtrip(trace, source))


def test_format_details_by_hand() -> None:
    text = render_cwm(nested_trace(), source=NESTED_SOURCE)
    assert text.startswith("<|begin_of_text|><|trace_context_start|>def g(a):\n")
    assert "def f(x):  # << START_OF_TRACE\n" in text and text.count(START_MARKER) == 1
    assert text.endswith('<|arg_sep|>"9"<|frame_sep|><|end_of_text|>')
    # after g returns, f's variables are written in full, not as ".."
    assert '<|line_sep|>{"x": "3", "y": "6"}<|action_sep|>    return y + x\n<|frame_sep|>' in text
    assert '<|line_sep|>{"a": ".."}<|action_sep|>    b = a * 2\n' in text
    text = render_cwm(exception_trace(), source=EXCEPTION_SOURCE)
    # special tokens inside values are escaped in the JSON; the deleted variable is gone
    assert '{"s": "..", "t": "\'\\u00e9<\\u007cframe_sep|>\'"}' in text
    assert '<|line_sep|>{"t": ".."}<|action_sep|>    raise ValueError(t)\n' in text
    assert '<|exception_sep|><|action_sep|>    raise ValueError(t)\n<|arg_sep|>"ValueError: \\u00e9<\\u007cframe_sep|>"' in text
    assert text.endswith("<|return_sep|><|action_sep|>    raise ValueError(t)\n<|arg_sep|>null<|frame_sep|><|end_of_text|>")
    assert sum(text.count(t) for t in ("<|frame_sep|>",)) == 7
    # a truncated trace has no end of text
    assert not format_cwm(trace_to_cwm(HANDMADE["truncated"][0], source=SIMPLE_SOURCE)).endswith("<|end_of_text|>")


def test_special_tokens_list() -> None:
    assert len(CWM_SPECIAL_TOKENS) == len(set(CWM_SPECIAL_TOKENS)) == 10
    assert all(t.startswith("<|") and t.endswith("|>") for t in CWM_SPECIAL_TOKENS)


def test_unrenderable_and_unparsable() -> None:
    trace = simple_trace(3)
    with pytest.raises(CwmFormatError, match="special token"):
        render_cwm(trace, source=SIMPLE_SOURCE + "\n# <|frame_sep|>")
    with pytest.raises(CwmFormatError, match="already has a line"):
        render_cwm(trace, source=SIMPLE_SOURCE + "\nx = 1" + START_MARKER)
    good = render_cwm(trace, source=SIMPLE_SOURCE)
    for bad, message in [
        (good[5:], "starts with"),
        (good.replace("<|frame_sep|>", "", 1), "frame"),
        (good.replace('{"x": ".."}', '{"z": ".."}'), "no earlier value"),
        (good.replace('{"x": "3"}', '{"x": 3}'), "object of strings"),
        (good.replace("<|line_sep|>", "<|jump_sep|>", 1), "not a frame token"),
        (good.replace("<|end_of_text|>", "<|line_sep|>{}"), "does not end with <|frame_sep|>"),
    ]:
        with pytest.raises(CwmFormatError, match=message):
            parse_cwm(bad)


def test_a_trace_without_events_is_not_a_cwm_trace() -> None:
    """A program that never ran (a syntax error) has no entry frame: not a complete CWM trace,
    so training skips it like any trace CWM cannot express."""
    trace = stream_object([], status="exception", exception_type="SyntaxError", n_events=0)
    with pytest.raises(CwmFormatError, match="no events"):
        render_cwm(trace, source="def f(:\n    pass\n")
    pytest.importorskip("torch")
    from trainer.packing import cwm_texts

    row = {**trace, "source": "def f(:\n    pass\n", "trace_id": "t0"}
    assert list(cwm_texts([row, {**simple_trace(3), "source": SIMPLE_SOURCE}])) == [
        render_cwm(simple_trace(3), source=SIMPLE_SOURCE)
    ]


def test_dotdot_value_is_refused_when_ambiguous() -> None:
    trace = stream_object([event("call", 1, "def f(x):", {"x": "1"}), event("line", 2, "    y = 2", {"z": ".."})])
    with pytest.raises(CwmFormatError, match="ambiguous"):
        render_cwm(trace, source=SIMPLE_SOURCE)


def test_parsed_frames_hold_full_locals() -> None:
    frames = parse_cwm(render_cwm(nested_trace(), source=NESTED_SOURCE)).frames
    assert frames[4] == CwmFrame("line", "    return b", locals={"a": "3", "b": "6"})
    assert frames[5] == CwmFrame("return", "    return b", arg="6")


def _trace_program(tmp_path: Path, name: str, source: str, entry: str, input_text: str) -> dict[str, Any]:
    api = pytest.importorskip("tracer.api", reason="the tracer (tracer/api.py) is not available")
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    return api.trace_call(str(path), entry, input_text, program_id=name)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_real_tracer_golden(name: str, tmp_path: Path) -> None:
    source, entry, input_text = PROGRAMS[name]
    trace = _trace_program(tmp_path, name, source, entry, input_text)
    text = assert_roundtrip(trace, source)
    check_golden(GOLDEN / PY / f"{name}.cwm", text)


def test_cruxeval_cwm_roundtrip(cruxeval_traces: list[tuple[dict, str]]) -> None:
    for trace, source in cruxeval_traces:
        text = assert_roundtrip(trace, source)
        assert text.count(START_MARKER) == 1
        assert text.endswith("<|end_of_text|>") == (trace["status"] in ("ok", "exception"))


def test_python_version_dir_name() -> None:
    assert PY == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_script_marks_its_first_executed_line() -> None:
    source = '"""Doc."""\nimport os\n\nx = 1\n'
    trace = stream_object(
        [
            event("call", 0, "", function="<module>"),
            event("line", 1, '"""Doc."""', function="<module>"),
            event("line", 2, "import os", function="<module>"),
            event("line", 4, "x = 1", {"os": "<module 'os'>"}, function="<module>"),
            event("return", 4, "x = 1", arg="None", function="<module>"),
        ],
        entrypoint=None,
        input=None,
    )
    text = assert_roundtrip(trace, source)
    assert text.startswith('<|begin_of_text|><|trace_context_start|>"""Doc."""  # << START_OF_TRACE\nimport os\n')
    assert parse_cwm(text).start_line == 1


def test_a_crlf_program_gets_the_start_marker_before_its_carriage_return() -> None:
    source = NESTED_SOURCE.replace("\n", "\r\n")
    text = render_cwm(nested_trace(), source=source)
    assert "def f(x):  # << START_OF_TRACE\r\n" in text  # not "def f(x):\r  # << ..."
    cwm = parse_cwm(text)
    assert cwm.source == source and cwm.start_line == trace_to_cwm(nested_trace(), source=source).start_line


@pytest.mark.parametrize(
    "shown",
    [
        {},
        {"x": "1"},
        {"s": "'a\"b\\\\c'", "t": "\t\n\r\x00\x1f", "u": "é€😀", "lone": "\ud800", "tok": "<|frame_sep|> <|"},
        {"<|k|>": "..", "é": "'x'"},
    ],
)
def test_locals_json_is_the_text_json_dumps_writes(shown: dict) -> None:
    from schemas.cwm import _json, _json_locals

    assert _json_locals(shown) == _json(shown)
