"""Read the programs to harvest: JSON Lines of programs, CRUXEval and MBPP rows, script folders,
test suites.

Every reader yields `Program`s. The format of a file is detected from its rows, not its name:
a row with `source` is a program, a row with `code` and `test_list` is MBPP (the code and its
asserts run as a script), any other row with `code` is CRUXEval. A malformed file is a
`InputFormatError` naming the file and line; a program that fails to compile or run is not an
input error: it is traced and becomes a row with its status.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harvest.errors import ConfigError
from harvest.script_files import ScriptFilesError, data_files
from harvest.script_modules import ScriptModulesError, sibling_modules
from tracer._batch_jobs import MAX_STDIN_BYTES

log = logging.getLogger(__name__)

Mode = Literal["call", "script", "pytest"]
# Programs files in a folder. Not .json: a folder of programs often holds other JSON (a harvest's
# own harvest-run.json, a config); a file given by name is read as JSON Lines whatever its suffix.
PROGRAM_SUFFIXES = (".jsonl", ".ndjson")
# Every key a program, CRUXEval or MBPP row may have (others are reported, not an error: datasets
# often carry their own metadata).
ROW_KEYS = frozenset(("id", "program_id", "source", "code", "entrypoint", "input", "argv", "stdin", "timeout_s", "image", "output",
                      "expected_output", "task_id", "text", "test_list", "test_setup_code",
                      "challenge_test_list"))
PROJECT_ROOT = "/opt/project"  # where repository images keep the project and its tests


class InputFormatError(ConfigError):
    """A programs file or folder cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Program:
    """One program to trace: what the batch runner needs, plus where it came from."""

    program_id: str
    mode: Mode
    source: str | None = None  # program text (call, script)
    entrypoint: str | None = None  # function to call (call mode)
    input: str | None = None  # argument text of the call, CRUXEval style: "'abc', 3"
    argv: tuple[str, ...] = ()
    stdin: str | None = None  # script mode: its standard input (None: /dev/null)
    image: str | None = None  # None: the harvest's --image
    file: str | None = None  # path inside the image (pytest mode: the test folder or file)
    expected_output: str | None = None  # CRUXEval's `output`, kept for checking
    package: tuple[str, ...] = ()  # pytest mode: import names whose calls are traced
    cwd: str | None = None  # pytest mode: the folder pytest runs in
    timeout_s: float | None = None  # None: the harvest's --timeout
    test_timeout_s: float | None = None  # pytest mode: each test's limit (None: none)
    # script mode: (path relative to the script's folder, text) of the folder's modules it imports
    modules: tuple[tuple[str, str], ...] = ()
    # script mode: (path relative to the script's folder, UTF-8 text or bytes) of the folder's
    # data files it names (harvest/script_files.py)
    files: tuple[tuple[str, str | bytes], ...] = ()
    origin: str = ""  # "path/to/file.jsonl:12", for messages

    def job(self, blobs: Mapping[str | bytes, str] | None = None) -> dict[str, Any]:
        """This program as one line of the batch runner's jobs file (schemas/batch_jobs.md).

        `blobs`: contents of modules and data files that the jobs file defines as blobs (content
        -> its SHA-256), which the job names instead of carrying them (see `unit_jobs`)."""
        job: dict[str, Any] = {"program_id": self.program_id, "mode": self.mode}
        if self.source is not None:
            job["source"] = self.source
        if self.file is not None:
            job["file"] = self.file
        if self.entrypoint is not None:
            job["entrypoint"] = self.entrypoint
        if self.input is not None:
            job["input"] = self.input
        if self.argv:
            job["argv"] = list(self.argv)
        if self.stdin is not None:  # absent when none, so a program without it keeps its hash
            job["stdin"] = self.stdin
        if self.package:
            job["package"] = list(self.package)
        if self.cwd is not None:
            job["cwd"] = self.cwd
        if self.timeout_s is not None:
            job["timeout_s"] = self.timeout_s
        if self.test_timeout_s is not None:
            job["test_timeout_s"] = self.test_timeout_s
        if self.modules:  # absent when none, so a program without modules keeps its hash
            job["modules"] = {path: _blob_ref(text, blobs) or text for path, text in self.modules}
        if self.files:  # absent when none, so a program without data files keeps its hash
            job["files"] = self.files_json(blobs)
        return job

    def files_json(self, blobs: Mapping[str | bytes, str] | None = None) -> dict[str, Any]:
        """Its data files as the batch job's `files` has them: text, `{"base64": ...}`, or
        `{"blob": SHA256}` for a content of `blobs`."""
        return {
            path: _blob_ref(content, blobs)
            or (content if isinstance(content, str) else {"base64": base64.b64encode(content).decode("ascii")})
            for path, content in self.files
        }

    @property
    def trace_input(self) -> str | None:
        """Its traces' `input`: a call's argument text, a script's standard input."""
        return self.stdin if self.mode == "script" else self.input

    def content_hash(self) -> str:
        """Hash of everything that decides the trace (not the origin): same program, same hash."""
        payload = json.dumps([self.job(), self.image], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# A module or data file that several programs of a unit carry goes into its jobs file once, as a
# blob line, from this size on (below it, a copy costs less than a reference and its blob line).
SHARED_CONTENT_MIN_CHARS = 512
# The batch runner keeps every blob until the unit ends, inside the sandbox's memory limit (512 MiB
# by default, programs included): the blobs of one unit hold at most this much, the contents that
# save the most first; the others stay copies, streamed job by job as before.
SHARED_CONTENT_MAX_BYTES = 32 << 20


def unit_jobs(programs: Sequence[Program]) -> Iterator[dict[str, Any]]:
    """The batch runner's jobs file for `programs`, line by line, in their order.

    A module or data file that several of them carry (a folder's data file that many of its
    scripts read) is written once, as a blob line before the first job that names it, and the
    jobs name it by its SHA-256 (schemas/batch_jobs.md): a unit of 400 scripts that read one
    1 MiB file writes that MiB once, not 400 times."""
    uses: Counter[str | bytes] = Counter()
    for program in programs:
        for _, content in (*program.modules, *program.files):
            if len(content) >= SHARED_CONTENT_MIN_CHARS:
                uses[content] += 1
    shared = [(content, _content_bytes(content), n) for content, n in uses.items() if n > 1]
    shared.sort(key=lambda item: -len(item[1]) * (item[2] - 1))  # what a blob saves, most first
    blobs: dict[str | bytes, str] = {}
    budget = SHARED_CONTENT_MAX_BYTES
    for content, data, _ in shared:
        if len(data) <= budget:
            budget -= len(data)
            blobs[content] = hashlib.sha256(data).hexdigest()
    written: set[str] = set()
    for program in programs:
        for _, content in (*program.modules, *program.files):
            digest = blobs.get(content)
            if digest is not None and digest not in written:
                written.add(digest)
                yield {"blob": digest, "base64": base64.b64encode(_content_bytes(content)).decode("ascii")}
        yield program.job(blobs)


def _content_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _blob_ref(content: str | bytes, blobs: Mapping[str | bytes, str] | None) -> dict[str, str] | None:
    digest = blobs.get(content) if blobs else None
    return {"blob": digest} if digest is not None else None


def load_programs(paths: Sequence[Path]) -> list[Program]:
    """Programs from files and folders, in order; duplicate ids are an error unless identical."""
    return unique_per_image(program for path in paths for program in _read_path(path))


def unique_per_image(programs: Iterable[Program]) -> list[Program]:
    """`programs` without repeats of the same program in the same image; a program id used for
    two different programs in one image is an error naming both. Run it again once each program
    has its final image: a row naming none and a row naming `--image` then run side by side."""
    out: list[Program] = []
    seen: dict[tuple[str | None, str], Program] = {}
    repeats: list[str] = []
    for program in programs:
        key = (program.image, program.program_id)
        earlier = seen.get(key)
        if earlier is not None:
            if earlier.content_hash() == program.content_hash():
                repeats.append(f"{program.origin} (as {earlier.origin})")
                continue
            image = f" in image {program.image!r}" if program.image else ""
            raise InputFormatError(
                f"{program.origin}: program id {program.program_id!r} is already used by "
                f"{earlier.origin} for a different program{image}; ids must be unique per image"
            )
        seen[key] = program
        out.append(program)
    if repeats:  # said, not silent: the harvest then has fewer programs than the inputs have rows
        shown = "; ".join(repeats[:3]) + (f"; and {len(repeats) - 3} more" if len(repeats) > 3 else "")
        log.warning("%d program(s) repeat an earlier one (same id, same program) and are traced once: %s",
                    len(repeats), shown)
    return out


def repository_tests_program(
    image: str,
    tests: Sequence[str],
    packages: Sequence[str],
    timeout_s: float = 900.0,
    root: str = PROJECT_ROOT,
    test_timeout_s: float | None = 60.0,
) -> Program:
    """The pytest job that traces a repository image's own test suite (`--tests`).

    `tests` are pytest's arguments as the image's build ran them in the project folder `root`
    (paths relative to it, and options such as `--ignore=tests/x.py`); the job runs pytest there
    too. Calls into `packages` (import names) are traced, one trace per top-level call. The whole
    suite has `timeout_s`, each test `test_timeout_s` (a test that hangs or ends the process is
    lost, not the tests after it: see schemas/batch_jobs.md).
    """
    first = next((i for i, arg in enumerate(tests) if not arg.startswith("-")), None)
    if first is None:
        raise ConfigError(f"image {image!r} lists no tests to run")
    return Program(
        program_id=f"{image}:tests",
        mode="pytest",
        image=image,
        file=tests[first],
        argv=tuple(tests[:first]) + tuple(tests[first + 1 :]),
        package=tuple(packages),
        cwd=root,
        timeout_s=timeout_s,
        test_timeout_s=test_timeout_s,
        origin=f"--tests of image {image}",
    )


def _read_path(path: Path) -> Iterator[Program]:
    if path.is_dir():
        yield from read_folder(path)
    elif path.is_file():
        if path.suffix == ".py":
            yield script_program(path, path.stem)
        else:
            yield from read_jsonl(path)
    elif path.exists():
        raise InputFormatError(
            f"{_shown(path)}: not a regular file or folder (a FIFO, socket or device?); PROGRAMS are "
            "Python scripts (.py), JSON Lines files of programs, or folders of both"
        )
    else:
        raise InputFormatError(f"{path}: no such file or folder")


def read_folder(folder: Path) -> Iterator[Program]:
    """A folder: each top-level `*.py` is a script, each `*.jsonl` a programs file (sorted by name)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    except OSError as exc:
        raise InputFormatError(f"{_shown(folder)}: cannot list it ({exc.strerror or exc})") from None
    found = False
    for path in entries:
        if path.is_file() and path.suffix == ".py":
            found = True
            yield script_program(path, path.stem)
        elif path.is_file() and path.suffix in PROGRAM_SUFFIXES:
            found = True
            yield from read_jsonl(path)
    if not found:
        raise InputFormatError(f"{folder}: no *.py scripts and no *.jsonl programs files in this folder")


def _shown(path: Path) -> str:
    """`path` for a message, whatever bytes its name has."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def script_program(path: Path, program_id: str) -> Program:
    """A Python file run as `__main__`, with the modules of its folder that it imports
    (harvest/script_modules.py) and the data files of its folder that it names
    (harvest/script_files.py), as `cd FOLDER && python SCRIPT.py` would find them."""
    try:
        program_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InputFormatError(f"{_shown(path)}: the file name is not UTF-8 (it would be the program id)") from None
    try:
        source = path.read_text(encoding="utf-8-sig")  # a BOM is allowed, as CPython allows it
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{_shown(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputFormatError(f"{_shown(path)}: cannot read it ({exc.strerror or exc})") from None
    try:
        modules = sibling_modules(path, source)
        files = data_files(path, source, modules)
    except (ScriptModulesError, ScriptFilesError) as exc:
        raise InputFormatError(str(exc)) from None
    return Program(
        program_id=program_id, mode="script", source=source, modules=modules, files=files, origin=str(path)
    )


def read_jsonl(path: Path) -> Iterator[Program]:
    """Rows of a JSON Lines file, each a program or a CRUXEval row (detected per row)."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise InputFormatError(f"{_shown(path)}: cannot read it ({exc.strerror or exc})") from None
    unused: set[str] = set()
    with f:
        any_row = False
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                # A byte order mark opens the file, as editors on Windows write it (as for .py files).
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputFormatError(f"{where}: not UTF-8 ({exc.reason} at column {exc.start + 1})") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                hint = ""
                if not any_row and path.suffix not in (*PROGRAM_SUFFIXES, ".json"):
                    hint = " (PROGRAMS are Python scripts (.py), JSON Lines files of programs, or folders of both)"
                raise InputFormatError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno}){hint}") from None
            except RecursionError:  # Python's parser recurses once per nesting level
                raise InputFormatError(f"{where}: JSON nested too deeply to read (no program row is)") from None
            if not isinstance(row, dict):
                raise InputFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
            if ("\\ud" in text or "\\uD" in text) and not _utf8_encodable(row):
                raise InputFormatError(f"{where}: a string holds a lone surrogate (a \\ud800-\\udfff escape): not text")
            any_row = True
            unused.update(k for k in row if k not in ROW_KEYS)
            yield program_from_row(row, where)
    if not any_row:
        raise InputFormatError(f"{path}: no programs in this file (empty)")
    if unused:
        log.warning("%s: rows have keys that harvest does not read (typos?): %s", _shown(path), ", ".join(sorted(unused)))


def _utf8_encodable(row: dict[str, Any]) -> bool:
    """Whether every string in `row` is valid Unicode text (JSON's \\u escapes can make lone
    surrogates, which no UTF-8 file, job or shard can hold)."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def program_from_row(row: dict[str, Any], where: str) -> Program:
    """One JSON object as a Program; `where` ("file:line") prefixes every error."""
    if "source" in row:
        return _program_row(row, where)
    if "code" in row and "test_list" in row:
        return _mbpp_row(row, where)
    if "code" in row:
        return _cruxeval_row(row, where)
    keys = ", ".join(sorted(row)) or "none"
    raise InputFormatError(
        f"{where}: unknown row format (keys: {keys}); expected a program "
        "{'id', 'source', 'entrypoint'?, 'input'?, 'argv'?, 'stdin'?, 'timeout_s'?, 'image'?, 'output'?}, a CRUXEval row "
        "{'id', 'code', 'input', 'output'} or an MBPP row {'task_id', 'code', 'test_list'}"
    )


def _program_row(row: dict[str, Any], where: str) -> Program:
    program_id = _id(row, where)
    source = _string(row, "source", where, required=True)
    entrypoint = _string(row, "entrypoint", where)
    call_input = row.get("input")
    if call_input is not None and not isinstance(call_input, str):
        raise InputFormatError(f"{where}: 'input' must be argument text such as \"'abc', 3\", got {type(call_input).__name__}")
    if call_input is not None and entrypoint is None:
        raise InputFormatError(f"{where}: 'input' given without an 'entrypoint' to call")
    argv = row.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise InputFormatError(f"{where}: 'argv' must be a list of strings")
    if argv and entrypoint is not None:
        raise InputFormatError(f"{where}: 'argv' is for scripts; a program with an 'entrypoint' takes 'input'")
    timeout_s = row.get("timeout_s")
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s < float("inf")
    ):
        raise InputFormatError(f"{where}: 'timeout_s' must be a positive number of seconds, got {json.dumps(timeout_s)}")
    stdin = row.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise InputFormatError(f"{where}: 'stdin' must be the text a script reads, got {type(stdin).__name__}")
    if stdin is not None and entrypoint is not None:
        raise InputFormatError(f"{where}: 'stdin' is for scripts; a program with an 'entrypoint' takes 'input'")
    if stdin is not None and len(stdin.encode("utf-8", "surrogatepass")) > MAX_STDIN_BYTES:
        raise InputFormatError(f"{where}: 'stdin' is longer than {MAX_STDIN_BYTES >> 20} MiB")
    image = _string(row, "image", where)
    expected = row.get("output", row.get("expected_output"))
    return Program(
        program_id=program_id,
        mode="call" if entrypoint is not None else "script",
        source=source,
        entrypoint=entrypoint,
        input=(call_input if call_input is not None else "") if entrypoint is not None else None,
        argv=tuple(argv),
        stdin=stdin,
        timeout_s=float(timeout_s) if timeout_s is not None else None,
        image=image,
        expected_output=expected if isinstance(expected, str) else None,
        origin=where,
    )


def _cruxeval_row(row: dict[str, Any], where: str) -> Program:
    program_id = _id(row, where)
    return Program(
        program_id=program_id,
        mode="call",
        source=_string(row, "code", where, required=True),
        entrypoint="f",
        input=_string(row, "input", where, required=True),
        expected_output=_string(row, "output", where),
        image=_string(row, "image", where),
        origin=where,
    )


def _mbpp_row(row: dict[str, Any], where: str) -> Program:
    """An MBPP task as a script: its code, its `test_setup_code`, then its `test_list` asserts
    (a failed assert makes a trace with status `exception`). The id is `mbpp_<task_id>`."""
    task = row.get("task_id")
    if "id" not in row and "program_id" not in row and task is not None:
        row = {**row, "id": f"mbpp_{task}"}
    program_id = _id(row, where)
    code = _string(row, "code", where, required=True)
    tests = row["test_list"]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise InputFormatError(f"{where}: 'test_list' must be a list of strings (assert statements)")
    setup = _string(row, "test_setup_code", where) or ""
    assert code is not None
    parts = [code.rstrip("\r\n"), setup.rstrip("\r\n"), *tests]
    return Program(
        program_id=program_id,
        mode="script",
        source="\n".join(p for p in parts if p) + "\n",
        image=_string(row, "image", where),
        origin=where,
    )


def _id(row: dict[str, Any], where: str) -> str:
    value = row.get("id", row.get("program_id"))
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputFormatError(f"{where}: every program needs a non-empty string 'id'")
    if any(c in value for c in "\n\r\0"):
        raise InputFormatError(f"{where}: program id {value!r} contains a newline or NUL")
    return value


def _string(row: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise InputFormatError(f"{where}: missing '{key}'")
        return None
    if not isinstance(value, str):
        raise InputFormatError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def count_by_image(programs: Iterable[Program], default_image: str) -> dict[str, int]:
    """How many programs run in each image."""
    counts: dict[str, int] = {}
    for program in programs:
        image = program.image or default_image
        counts[image] = counts.get(image, 0) + 1
    return counts
