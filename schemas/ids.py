"""Stable trace ids: the same program, input, image, backend and tracer version give the same id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

TRACE_ID_CHARS = 32  # hex digits of sha256 kept (128 bits)


def trace_id(
    program_id: str,
    source: str,
    entrypoint: str | None,
    input: str | None,  # noqa: A002 - the field is called `input` everywhere
    image: str,
    backend: str,
    tracer_version: str,
    modules: Mapping[str, str] | None = None,
    files: Mapping[str, Any] | None = None,
) -> str:
    """Hex id of one trace: sha256 over the canonical JSON of its identifying fields. `modules`:
    the script's own modules that travelled with it (path -> text); `files`: its data files, as
    the batch job's `files` has them (path -> text or `{"base64": ...}`); none leaves the id as
    it was."""
    key: list[Any] = [1, program_id, source, entrypoint, input, image, backend, tracer_version]
    if modules:
        key.append(sorted(modules.items()))
    if files:  # an object: never the same JSON as a list of modules
        key.append({"files": sorted(files.items())})
    payload = json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()[:TRACE_ID_CHARS]
