"""Stable trace ids: the same program, input, image, backend and tracer version give the same id."""

from __future__ import annotations

import hashlib
import json

TRACE_ID_CHARS = 32  # hex digits of sha256 kept (128 bits)


def trace_id(
    program_id: str,
    source: str,
    entrypoint: str | None,
    input: str | None,  # noqa: A002 - the field is called `input` everywhere
    image: str,
    backend: str,
    tracer_version: str,
) -> str:
    """Hex id of one trace: sha256 over the canonical JSON of its identifying fields."""
    key = [1, program_id, source, entrypoint, input, image, backend, tracer_version]
    payload = json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()[:TRACE_ID_CHARS]
