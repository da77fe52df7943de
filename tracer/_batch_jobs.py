"""Parse and validate the batch runner's jobs file (schemas/batch_jobs.md)."""

from __future__ import annotations

import binascii
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

MODES = ("call", "script", "pytest")
KNOWN_KEYS = frozenset(
    (
        "program_id",
        "mode",
        "source",
        "file",
        "entrypoint",
        "input",
        "argv",
        "timeout_s",
        "test_timeout_s",
        "package",
        "cwd",
        "meta",
        "modules",
        "files",
        "stdin",
    )
)
# A script's standard input (`stdin`), as UTF-8: competitive-programming tests run to megabytes.
MAX_STDIN_BYTES = 16 << 20


class JobError(ValueError):
    """A jobs-file line that cannot be run; the message names the problem."""

    def __init__(self, message: str, program_id: Optional[str]) -> None:
        super().__init__(message)
        self.program_id = program_id


@dataclass(frozen=True)
class Job:
    """One validated job: a program to trace."""

    program_id: str
    mode: str
    source: Optional[str] = None
    file: Optional[str] = None
    entrypoint: Optional[str] = None
    input: Optional[str] = None
    argv: Tuple[str, ...] = ()
    timeout_s: Optional[float] = None
    package: Tuple[str, ...] = ()  # pytest mode: import names whose calls are traced
    cwd: Optional[str] = None  # pytest mode: the folder pytest runs in (None: the runner's)
    test_timeout_s: Optional[float] = None  # pytest mode: each test's wall-clock limit
    # script mode with `source`: (relative path, source text) of the modules that travel with
    # the program (its folder's own modules), sorted by path
    modules: Tuple[Tuple[str, str], ...] = ()
    # script mode with `source`: (relative path, content) of the data files that travel with the
    # program (files of its folder that it reads), sorted by path
    files: Tuple[Tuple[str, bytes], ...] = ()
    # script mode: the text the program reads on its standard input (None: /dev/null)
    stdin: Optional[str] = None
    # pytest mode, set by the runner only: node ids not to run (tests that already ran, or ended
    # an earlier child of the job), when it starts pytest again after a test ended the process.
    skip_tests: Tuple[str, ...] = ()
    lineno: int = 0  # where the job came from (1-based line of the jobs file)

    @property
    def trace_input(self) -> Optional[str]:
        """The trace's `input`: a call's argument text, a script's standard input (or None)."""
        return self.stdin if self.mode == "script" else self.input


class Blobs:
    """The shared contents that a jobs file defines for the jobs after them.

    A line `{"blob": SHA256, "base64": TEXT}` (no `program_id`: it is not a job) defines a content
    once; a job's `modules` and `files` then name it as `{"blob": SHA256}` instead of carrying a
    copy (a data file that 400 scripts of a unit read is in the unit's jobs file once)."""

    def __init__(self) -> None:
        # digest -> the content, or (a str) why the line that defined it was refused
        self._contents: Dict[str, Any] = {}

    def define(self, raw: Dict[str, Any], lineno: int) -> None:
        """Take the blob line `raw` (untrusted). A line in error defines its digest as that error,
        which each job naming it reports; a line whose digest is not one defines nothing."""
        digest = raw.get("blob")
        if not _is_digest(digest):
            return  # a job can only name it by a digest, which it is not: "not defined" there
        unknown = sorted(set(raw) - {"blob", "base64"})
        data = _base64(raw.get("base64"))
        actual = hashlib.sha256(data).hexdigest() if data is not None else None
        if unknown:
            problem = "unknown key(s) %s (a blob line has `blob` and `base64`)" % ", ".join(unknown)
        elif data is None:
            problem = "its `base64` is not base64 text (RFC 4648, padded, one line)"
        elif actual != digest:
            problem = "its content's SHA-256 is %s, not the one it names" % actual
        else:
            self._contents[digest] = data
            return
        self._contents.setdefault(digest, "the blob line %d that defines it is refused: %s" % (lineno, problem))

    def get(self, ref: Any, key: str, path: str, program_id: str) -> bytes:
        """The content that `ref` (`{"blob": SHA256}`, from a job's `key` entry `path`) names."""
        digest = ref.get("blob")
        found = self._contents.get(digest) if isinstance(digest, str) else None
        if isinstance(found, bytes):
            return found
        why = found if found is not None else "no blob line before this job defines it"
        shown = digest if _is_digest(digest) else _show(digest)  # whole: a digest cut short names none
        raise JobError("`%s` %s names blob %s: %s" % (key, _show(path), shown, why), program_id)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_blob_ref(value: Any) -> bool:
    """Whether a `modules`/`files` value names a blob (`{"blob": SHA256}`)."""
    return isinstance(value, dict) and set(value) == {"blob"}


def invalid_job_id(jobs_name: str, lineno: int) -> str:
    """The program id given to a line whose own id cannot be read (stable across re-runs)."""
    return "%s:%d" % (jobs_name, lineno)


def parse_job(line: str, lineno: int, blobs: Optional[Blobs] = None) -> Optional[Job]:
    """One jobs-file line as a `Job`, or `JobError` naming what is wrong with it; None for a line
    that defines a blob (taken into `blobs`, which the jobs after it may name)."""
    if blobs is None:
        blobs = Blobs()
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JobError(
            "line %d is not valid UTF-8 (byte offset %d)" % (lineno, exc.start), None
        ) from None
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise JobError("line %d is not valid JSON: %s" % (lineno, exc), None) from None
    if not isinstance(raw, dict):
        raise JobError("line %d is a JSON %s, not an object" % (lineno, type(raw).__name__), None)
    if "blob" in raw and "program_id" not in raw:
        blobs.define(raw, lineno)
        return None
    program_id = raw.get("program_id")
    if not isinstance(program_id, str) or not program_id.strip():
        raise JobError(
            "line %d: `program_id` must be a non-empty string, got %s"
            % (lineno, _show(program_id)),
            None,
        )
    try:
        return _validate(raw, program_id, lineno, blobs)
    except JobError as exc:
        raise JobError("line %d (%s): %s" % (lineno, program_id, exc), program_id) from None


def _validate(raw: Dict[str, Any], program_id: str, lineno: int, blobs: Blobs) -> Job:
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise JobError(
            "unknown key(s) %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(KNOWN_KEYS))),
            program_id,
        )
    mode = raw.get("mode")
    if mode is None:
        mode = "call" if "entrypoint" in raw else "script"
    if mode not in MODES:
        raise JobError(
            "`mode` must be one of %s, got %s" % (", ".join(MODES), _show(mode)), program_id
        )
    source = _opt_str(raw, "source", program_id)
    file = _opt_str(raw, "file", program_id)
    entrypoint = _opt_str(raw, "entrypoint", program_id)
    input_text = _opt_str(raw, "input", program_id)
    cwd = _opt_str(raw, "cwd", program_id)
    if cwd is not None and (mode != "pytest" or not cwd):
        raise JobError("`cwd` is a non-empty folder, for `pytest` jobs only", program_id)
    argv = raw.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise JobError("`argv` must be a list of strings, got %s" % _show(argv), program_id)
    timeout_s = _opt_seconds(raw, "timeout_s", program_id)
    test_timeout_s = _opt_seconds(raw, "test_timeout_s", program_id)
    if test_timeout_s is not None and mode != "pytest":
        raise JobError("`test_timeout_s` is for `pytest` jobs only (use `timeout_s`)", program_id)
    package = raw.get("package", [])
    if isinstance(package, str):
        package = [package]
    if not isinstance(package, list) or not all(isinstance(p, str) and p for p in package):
        raise JobError(
            "`package` must be an import name or a list of them, got %s" % _show(package),
            program_id,
        )

    stdin = _opt_str(raw, "stdin", program_id)
    if stdin is not None:
        if mode != "script":
            raise JobError("`stdin` is for `script` jobs (a call takes `input`)", program_id)
        if len(stdin) > MAX_STDIN_BYTES or len(stdin.encode("utf-8")) > MAX_STDIN_BYTES:
            raise JobError("`stdin` is longer than %d bytes of UTF-8" % MAX_STDIN_BYTES, program_id)

    modules = _modules(raw.get("modules"), program_id, blobs)
    if modules and (mode != "script" or source is None):
        raise JobError("`modules` is for `script` jobs given as `source`", program_id)
    if any(path == script_file_name(program_id) for path, _ in modules):
        raise JobError(
            "`modules` must not hold the script itself (%s, from its `program_id`)"
            % script_file_name(program_id),
            program_id,
        )
    files = _files(raw.get("files"), program_id, blobs)
    if files and (mode != "script" or source is None):
        raise JobError("`files` is for `script` jobs given as `source`", program_id)
    if modules or files:
        _check_folder_paths(script_file_name(program_id), modules, files, program_id)

    if mode in ("call", "script"):
        if (source is None) == (file is None):
            raise JobError(
                "give exactly one of `source` (program text) or `file` (a path)", program_id
            )
    if mode == "call":
        if not entrypoint:
            raise JobError("mode `call` needs `entrypoint` (the function to call)", program_id)
        if input_text is None:
            input_text = ""
    elif mode == "script":
        if entrypoint is not None or input_text is not None:
            raise JobError(
                "mode `script` runs the program as __main__: `entrypoint`/`input` do not apply"
                " (use mode `call`)",
                program_id,
            )
    elif mode == "pytest":
        if file is None:
            raise JobError(
                "mode `pytest` needs `file` (the test path or node id to run)", program_id
            )
        if source is not None or entrypoint is not None or input_text is not None:
            raise JobError(
                "mode `pytest` takes `file`, `package` and `argv`, not `source`/`entrypoint`/`input`",
                program_id,
            )
    return Job(
        program_id=program_id,
        mode=mode,
        source=source,
        file=file,
        entrypoint=entrypoint,
        input=input_text,
        argv=tuple(argv),
        timeout_s=timeout_s,
        package=tuple(package),
        cwd=cwd,
        test_timeout_s=test_timeout_s,
        modules=modules,
        files=files,
        stdin=stdin,
        lineno=lineno,
    )


def script_file_name(program_id: str) -> str:
    """The file name a `script` job with `modules` runs under, next to its modules: the id with
    characters other than letters, digits, `-_.` as `_` (a folder's `main.py` has id `main`)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in program_id) + ".py"


def _folder_entries(value: Any, key: str, what: str, path_problem, program_id: str) -> list:
    """The (path, content) pairs of a job's `modules` or `files` object (untrusted), each path
    checked by `path_problem`; [] when the key is absent."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise JobError(
            "`%s` must be an object of relative path -> %s, got %s" % (key, what, _show(value)),
            program_id,
        )
    for path in value:
        problem = path_problem(path)
        if problem:
            raise JobError("`%s` path %s: %s" % (key, _show(path), problem), program_id)
    return list(value.items())


def _modules(value: Any, program_id: str, blobs: Blobs) -> Tuple[Tuple[str, str], ...]:
    """`modules` (untrusted): relative `.py` paths inside the program's folder -> source text (or
    a blob of it as UTF-8)."""
    out = []
    for path, text in _folder_entries(value, "modules", "source text", _module_path_problem, program_id):
        if _is_blob_ref(text):
            try:
                text = blobs.get(text, "modules", path, program_id).decode("utf-8")
            except UnicodeDecodeError:
                raise JobError(
                    "`modules` %s names a blob that is not UTF-8 text" % _show(path), program_id
                ) from None
        if not isinstance(text, str):
            raise JobError(
                "`modules` %s must be source text (a string), got %s" % (_show(path), _show(text)),
                program_id,
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JobError(
                "`modules` %s is not text (a lone surrogate escape)" % _show(path), program_id
            ) from None
        out.append((path, text))
    return tuple(sorted(out))


def _files(value: Any, program_id: str, blobs: Blobs) -> Tuple[Tuple[str, bytes], ...]:
    """`files` (untrusted): relative paths inside the program's folder -> content, UTF-8 text (a
    string), any bytes (an object `{"base64": TEXT}`) or a blob (`{"blob": SHA256}`)."""
    out = []
    for path, content in _folder_entries(value, "files", "content", _folder_path_problem, program_id):
        if _is_blob_ref(content):
            data = blobs.get(content, "files", path, program_id)
        elif isinstance(content, str):
            try:
                data = content.encode("utf-8")
            except UnicodeEncodeError:
                raise JobError(
                    "`files` %s is not text (a lone surrogate escape)" % _show(path), program_id
                ) from None
        elif isinstance(content, dict) and set(content) == {"base64"}:
            data = _base64(content["base64"])
            if data is None:
                raise JobError(
                    "`files` %s: `base64` is not base64 text (RFC 4648, padded, one line)"
                    % _show(path),
                    program_id,
                )
        else:
            raise JobError(
                '`files` %s must be text (a string), {"base64": TEXT} or {"blob": SHA256}, got %s'
                % (_show(path), _show(content)),
                program_id,
            )
        out.append((path, data))
    return tuple(sorted(out))


def _base64(text: Any) -> Optional[bytes]:
    """The bytes of standard, padded base64 `text` (None: it is not that; a2b_base64 alone skips
    characters outside the alphabet)."""
    if not isinstance(text, str):
        return None
    try:
        encoded = text.encode("ascii")
        data = binascii.a2b_base64(encoded)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    return data if binascii.b2a_base64(data, newline=False) == encoded else None


def _check_folder_paths(
    script: str,
    modules: Tuple[Tuple[str, str], ...],
    files: Tuple[Tuple[str, bytes], ...],
    program_id: str,
) -> None:
    """The script, `modules` and `files` must name different files of the folder, none of them a
    folder that another one is in (`a.txt` and `a.txt/b.txt`)."""
    owner = {script: "the script's own name (from its `program_id`)"}
    for path, _ in modules:
        owner[path] = "a path of `modules`"
    for path, _ in files:
        if path in owner:
            raise JobError("`files` path %s is also %s" % (_show(path), owner[path]), program_id)
        owner[path] = "a path of `files`"
    for path in owner:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in owner:
                raise JobError(
                    "%s is inside %s, which is a file there (%s)"
                    % (_show(path), _show(folder), owner[folder]),
                    program_id,
                )


def _module_path_problem(path: str) -> str:
    """What is wrong with `path` as a module's place in the program's folder ('' if nothing)."""
    if not path.endswith(".py") or "\0" in path or "\\" in path:
        return "must be a relative path of a .py file (no NUL, no backslash)"
    return _folder_path_problem(path)


def _folder_path_problem(path: str) -> str:
    """What is wrong with `path` as a file's place in the program's folder ('' if nothing)."""
    if "\0" in path or "\\" in path:
        return "must be a relative path (no NUL, no backslash)"
    if path.startswith("/"):
        return "must be relative, not absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "must not have empty, `.` or `..` parts (it stays inside the program's folder)"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not text (a lone surrogate escape)"
    return ""


def _opt_seconds(raw: Dict[str, Any], key: str, program_id: str) -> Optional[float]:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise JobError("`%s` must be a positive number, got %s" % (key, _show(value)), program_id)
    return float(value)


def _opt_str(raw: Dict[str, Any], key: str, program_id: str) -> Optional[str]:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise JobError("`%s` must be a string, got %s" % (key, _show(value)), program_id)
    return value


def _show(value: Any) -> str:
    text = (
        json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def iter_job_lines(path: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every non-blank line of the jobs file.

    A line that is not UTF-8 is passed on as it is (surrogate-escaped) and fails to parse as a job
    with a message saying so; its program text is never silently altered.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.decode("utf-8", errors="surrogateescape")
            if text.strip():
                yield lineno, text
