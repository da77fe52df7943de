"""The self-contained HTML stepper: one file, the trace embedded as JSON, CSS and JS inline."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from harvest.inspect.steps import program_file

# The order of an event's fields in the embedded JSON (the viewer's JS reads them by position,
# which keeps the file about half the size of one object per event).
EVENT_FIELDS = ("kind", "lineno", "function", "file", "depth", "frame_id", "thread_id", "locals", "arg", "source")
TRACE_FIELDS = (
    "trace_id", "program_id", "entrypoint", "input", "status", "return_value", "exception_type",
    "exception_message", "tracer_error", "truncated", "n_events", "python_version", "backend",
    "image", "wall_time_s", "stdout", "stderr",
)

_PLACEHOLDER = re.compile(r"__(?:TITLE|CSS|JS|DATA)__")


def _asset(name: str) -> str:
    return (resources.files("harvest.inspect") / name).read_text(encoding="utf-8")


def _embed_json(value: Any) -> str:
    """JSON that is safe inside <script>: no '<', '>' or '&' can close the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_data(trace: Mapping[str, Any]) -> dict[str, Any]:
    """What the viewer needs from a trace row: metadata, the source and the events as tuples."""
    events = []
    for event in trace["events"]:
        row = [event[f] for f in EVENT_FIELDS]
        row[EVENT_FIELDS.index("locals")] = [[v["name"], v["value"]] for v in event["locals"]]
        events.append(row)
    return {
        "trace": {f: trace.get(f) for f in TRACE_FIELDS},
        "source": trace["source"],
        "main_file": program_file(trace),
        "events": events,
    }


def render_html(trace: Mapping[str, Any]) -> str:
    """One self-contained HTML document that steps through `trace` (no network access needed)."""
    title = f"worldtrace · {trace['program_id']} · {trace['trace_id'][:12]}"
    parts = {
        "__TITLE__": html.escape(title),
        "__CSS__": _asset("viewer.css"),
        "__JS__": _asset("viewer.js"),
        "__DATA__": _embed_json(viewer_data(trace)),
    }
    # One pass over the template, so text from the trace is never scanned for placeholders.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(0)], _asset("viewer.html"))


def render_iframe(trace: Mapping[str, Any], height: int = 640) -> str:
    """The viewer inside an <iframe srcdoc>, for notebooks: its ids and styles stay isolated."""
    return (
        f'<iframe srcdoc="{html.escape(render_html(trace), quote=True)}" '
        f'style="width:100%;height:{height}px;border:1px solid #d0d7de;border-radius:6px" '
        'sandbox="allow-scripts"></iframe>'
    )
