"""Reading programs: formats detected per row, clear errors naming file and line."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import pytest

from harvest.errors import ConfigError
from harvest.inputs import InputFormatError, load_programs, repository_tests_program

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "programs"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_program_rows_become_call_and_script_jobs(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "source": "def f(x):\n    return x\n", "entrypoint": "f", "input": "1"},
            {"id": "b", "source": "print('hi')\n", "argv": ["-v"], "image": "base-py313"},
        ],
    )
    a, b = load_programs([path])
    assert a.job() == {"program_id": "a", "mode": "call", "source": "def f(x):\n    return x\n", "entrypoint": "f", "input": "1"}
    assert (a.origin, a.image) == (f"{path}:1", None)
    assert b.job() == {"program_id": "b", "mode": "script", "source": "print('hi')\n", "argv": ["-v"]}
    assert b.image == "base-py313"


def test_a_script_row_may_give_its_stdin_which_is_part_of_the_program(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "source": "print(int(input()) * 2)\n", "stdin": "21\n", "output": "42", "timeout_s": 2},
            {"id": "b", "source": "print(int(input()) * 2)\n", "stdin": "22\n"},
            {"id": "c", "source": "print(int(input()) * 2)\n"},
        ],
    )
    a, b, c = load_programs([path])
    assert a.job() == {"program_id": "a", "mode": "script", "source": "print(int(input()) * 2)\n", "stdin": "21\n", "timeout_s": 2.0}
    assert (a.trace_input, a.expected_output, c.trace_input) == ("21\n", "42", None)
    assert "stdin" not in c.job()  # a script without stdin keeps the hash it had
    hashes = {p.content_hash() for p in (a, b, c)}
    assert len(hashes) == 3


def test_cruxeval_rows_call_f_and_keep_the_expected_output(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"code": "def f(a):\n    return a", "input": "'x'", "output": "'x'", "id": "sample_0"}])
    (program,) = load_programs([path])
    assert (program.mode, program.entrypoint, program.input, program.expected_output) == ("call", "f", "'x'", "'x'")


def test_mbpp_rows_run_their_code_then_their_asserts_as_a_script(tmp_path: Path) -> None:
    row = {"task_id": 7, "text": "Add.", "code": "def add(a, b):\r\n\treturn a + b\r\n",
           "test_setup_code": "import math", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
           "challenge_test_list": []}
    path = write_jsonl(tmp_path / "mbpp.jsonl", [row, {**row, "task_id": 8, "test_setup_code": ""}])
    first, second = load_programs([path])
    assert (first.program_id, first.mode, first.entrypoint) == ("mbpp_7", "script", None)
    assert first.source == "def add(a, b):\r\n\treturn a + b\nimport math\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"
    assert second.source == "def add(a, b):\r\n\treturn a + b\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"


def test_the_mbpp_corpus_reads_as_scripts(mbpp: list[dict]) -> None:
    from harvest.inputs import program_from_row

    programs = [program_from_row(row, f"mbpp.jsonl:{n}") for n, row in enumerate(mbpp, start=1)]
    assert all(p.mode == "script" for p in programs)
    assert len({p.program_id for p in programs}) == len(mbpp)
    for program, row in zip(programs, mbpp):
        assert program.source is not None and program.source.endswith(row["test_list"][-1] + "\n")
        with warnings.catch_warnings():  # some tasks write regexes as '\w' (a DeprecationWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            compile(program.source, program.program_id, "exec")


def test_a_folder_gives_its_scripts_and_jsonl_programs() -> None:
    programs = load_programs([EXAMPLES])
    modes = {p.program_id: p.mode for p in programs}
    assert sum(m == "script" for m in modes.values()) >= 3
    assert sum(m == "call" for m in modes.values()) >= 10
    assert modes["collatz"] == "script"
    assert len(modes) == len(programs)  # unique ids


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "p.jsonl:2: not valid JSON"),
        ("[1, 2]", "p.jsonl:2: expected a JSON object, got list"),
        ('{"id": "x"}', "p.jsonl:2: unknown row format (keys: id); expected a program {'id', 'source', 'entrypoint'?, 'input'?, 'argv'?,"),
        ('{"source": "pass"}', "p.jsonl:2: every program needs a non-empty string 'id'"),
        ('{"id": "x", "source": 3}', "p.jsonl:2: 'source' must be a string, got int"),
        ('{"id": "x", "source": "", "input": "1"}', "p.jsonl:2: 'input' given without an 'entrypoint'"),
        ('{"id": "x", "source": "", "stdin": ["1"]}', "p.jsonl:2: 'stdin' must be the text a script reads, got list"),
        ('{"id": "x", "source": "", "timeout_s": 0}', "p.jsonl:2: 'timeout_s' must be a positive number of seconds, got 0"),
        ('{"id": "x", "source": "", "timeout_s": "2"}', "p.jsonl:2: 'timeout_s' must be a positive number of seconds, got \"2\""),
        ('{"id": "x", "source": "def f(): pass", "entrypoint": "f", "stdin": "1"}', "p.jsonl:2: 'stdin' is for scripts"),
        ('{"id": "x", "code": "def f(): pass"}', "p.jsonl:2: missing 'input'"),
        ('{"task_id": 3, "code": "", "test_list": "assert 1"}', "p.jsonl:2: 'test_list' must be a list of strings"),
        ('{"code": "", "test_list": []}', "p.jsonl:2: every program needs a non-empty string 'id'"),
        ('{"id": "x", "source": "# \\ud800"}', "p.jsonl:2: a string holds a lone surrogate"),
        ('{"id": "x", "source": ' + "[" * 100_000 + "]" * 100_000 + "}", "p.jsonl:2: JSON nested too deeply"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "ok", "source": "pass"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputFormatError) as info:
        load_programs([path])
    assert message in str(info.value)


def test_a_program_that_does_not_compile_is_not_an_input_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "broken", "source": "def f(:\n", "entrypoint": "f"}])
    (program,) = load_programs([path])
    assert program.source == "def f(:\n"  # traced: the tracer reports its SyntaxError as a row


def test_duplicate_ids_are_an_error_unless_the_program_is_the_same(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "source": "pass"}])
    same = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "source": "pass"}])
    other = write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "source": "print(1)"}])
    with caplog.at_level(logging.WARNING, logger="harvest.inputs"):
        assert len(load_programs([first, same])) == 1
    # Traced once, and said so: the harvest has one program fewer than the inputs have rows.
    assert f"1 program(s) repeat an earlier one (same id, same program) and are traced once: {same}:1 (as {first}:1)" in caplog.text
    with pytest.raises(InputFormatError, match=r"c.jsonl:1: program id 'x' is already used by .*a.jsonl:1"):
        load_programs([first, other])


def test_an_id_used_with_and_without_an_image_clashes_once_images_are_resolved(tmp_path: Path) -> None:
    # The row naming no image runs in every --image: next to the row naming base-py313 it would
    # be a second, different program with the same id in one unit.
    plain = write_jsonl(tmp_path / "a.jsonl", [{"id": "a", "source": "x = 3"}])
    named = write_jsonl(tmp_path / "b.jsonl", [{"id": "a", "source": "x = 1", "image": "base-py313"}])
    assert len(load_programs([plain, named])) == 2  # different images as written
    from harvest.commands.harvest import _programs

    with pytest.raises(InputFormatError, match=r"program id 'a' is already used by .* for a different program in image 'base-py313'"):
        _programs((plain, named), ("base-py311", "base-py313"), False, "docker", 60.0, 60.0)
    with pytest.raises(InputFormatError, match=r"program id 'a' is already used"):
        _programs((plain, named), ("local",), False, "local", 60.0, 60.0)  # local drops the images
    assert len(_programs((plain, named), ("base-py311",), False, "docker", 60.0, 60.0)) == 2


def test_folders_read_scripts_and_jsonl_only_and_allow_a_bom(tmp_path: Path) -> None:
    folder = tmp_path / "progs"
    folder.mkdir()
    (folder / "bom.py").write_bytes(b"\xef\xbb\xbfprint('hi')\n")
    (folder / "harvest-run.json").write_text("{not programs", encoding="utf-8")  # e.g. a harvest's own record
    write_jsonl(folder / "more.jsonl", [{"id": "m", "source": "pass", "entirepoint": "f"}])
    programs = {p.program_id: p for p in load_programs([folder])}
    assert sorted(programs) == ["bom", "m"]
    assert programs["bom"].source == "print('hi')\n"  # CPython runs a file with a BOM


def test_a_jsonl_file_may_open_with_a_bom_but_not_hold_one_later(tmp_path: Path) -> None:
    # Editors on Windows write a byte order mark at the start of a UTF-8 file.
    row = json.dumps({"id": "a", "source": "pass"}).encode()
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + row + b"\n" + row.replace(b'"a"', b'"b"') + b"\n")
    assert [p.program_id for p in load_programs([tmp_path / "bom.jsonl"])] == ["a", "b"]
    (tmp_path / "late.jsonl").write_bytes(row + b"\n\xef\xbb\xbf" + row.replace(b'"a"', b'"b"') + b"\n")
    with pytest.raises(InputFormatError, match=r"late.jsonl:2: not valid JSON: Unexpected UTF-8 BOM"):
        load_programs([tmp_path / "late.jsonl"])


def test_unreadable_files_and_undecodable_names_are_clear_errors(tmp_path: Path) -> None:
    folder = tmp_path / "progs"
    folder.mkdir()
    odd = folder / "bytes\udce9name.py"  # a file name that is not UTF-8
    odd.write_text("pass\n", encoding="utf-8")
    with pytest.raises(InputFormatError, match=r"bytes\\xe9name.py: the file name is not UTF-8"):
        load_programs([folder])
    odd.unlink()
    locked = folder / "locked.jsonl"
    write_jsonl(locked, [{"id": "x", "source": "pass"}])
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who can read any file (root)")
        with pytest.raises(InputFormatError, match=r"locked.jsonl: cannot read it"):
            load_programs([folder])
    finally:
        locked.chmod(0o644)


def test_empty_inputs_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InputFormatError, match="no programs in this file"):
        load_programs([tmp_path / "empty.jsonl"])
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputFormatError, match="no \\*.py scripts"):
        load_programs([tmp_path / "folder"])
    with pytest.raises(InputFormatError, match="no such file"):
        load_programs([tmp_path / "missing.jsonl"])
    os.mkfifo(tmp_path / "fifo.jsonl")  # exists, but reading it would wait for a writer
    with pytest.raises(InputFormatError, match="fifo.jsonl: not a regular file or folder"):
        load_programs([tmp_path / "fifo.jsonl"])


def test_test_suite_job_runs_in_the_project_folder() -> None:
    """As the image's build ran its suite (`cd /opt/project && python3 -m pytest ARGS`): the
    arguments as the catalog gives them, options included, in the project folder."""
    program = repository_tests_program("idna", ["tests", "--ignore=tests/test_idna_properties.py"], ["idna"])
    assert program.job() == {
        "program_id": "idna:tests",
        "mode": "pytest",
        "file": "tests",
        "argv": ["--ignore=tests/test_idna_properties.py"],
        "package": ["idna"],
        "cwd": "/opt/project",
        "timeout_s": 900.0,
        "test_timeout_s": 60.0,
    }
    assert repository_tests_program("x", ["-q", "t.py"], ["x"]).job()["file"] == "t.py"
    with pytest.raises(ConfigError, match="lists no tests"):
        repository_tests_program("x", ["-q"], ["x"])


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_a_script_carries_the_modules_of_its_folder_that_it_imports(tmp_path: Path) -> None:
    """A folder's main.py doing `from helper import double` ran as ModuleNotFoundError: only its
    own source travelled to the sandbox. Now the folder's modules it imports (transitively) go too."""
    folder = tmp_path / "prog"
    write_tree(folder, {
        "main.py": "import os, missing_module\nimport helper, _private\nfrom pkg import thing\nfrom ns import mod\n"
                   "def f():\n    import late\n",
        "helper.py": "import only_by_helper\nimport main\n",  # main: the script itself, never a module
        "only_by_helper.py": "X = 1\n",
        "_private.py": "Y = 2\n",
        "late.py": "Z = 3\n",
        "pkg/__init__.py": "from .impl import thing\n",
        "pkg/impl.py": "from . import util\nfrom .. import nothing_above\nthing = util.T\n",
        "pkg/util.py": "T = 4\n",
        "pkg/unused.py": "pass\n",
        "ns/mod.py": "from . import sibling\n",  # a namespace package: relative imports work there too
        "ns/sibling.py": "pass\n",
        "unrelated.py": "pass\n",
        "os.py": "pass\n",  # a sibling named like a stdlib module shadows it, as `python main.py` finds it
    })
    programs = {p.program_id: p for p in load_programs([folder])}
    main = programs["main"]
    expected = {"helper.py", "only_by_helper.py", "_private.py", "late.py", "pkg/__init__.py", "pkg/impl.py",
                "pkg/util.py", "ns/mod.py", "ns/sibling.py", "os.py"}
    assert {path for path, _ in main.modules} == expected
    assert dict(main.modules)["pkg/util.py"] == "T = 4\n"
    assert main.job()["modules"] == dict(main.modules)
    assert programs["unrelated"].modules == () and "modules" not in programs["unrelated"].job()
    # helper.py run as a script imports main.py as a module (and so all main imports), never itself
    assert {path for path, _ in programs["helper"].modules} == expected - {"helper.py"} | {"main.py"}
    (single,) = load_programs([folder / "main.py"])  # a script named alone carries them too
    assert single.modules == main.modules


def test_editing_a_module_changes_the_programs_hash_and_no_modules_keeps_it(tmp_path: Path) -> None:
    from harvest.inputs import Program

    write_tree(tmp_path, {"main.py": "import helper\n", "helper.py": "X = 1\n", "alone.py": "print(1)\n"})
    before = {p.program_id: p.content_hash() for p in load_programs([tmp_path])}
    (tmp_path / "helper.py").write_text("X = 2\n", encoding="utf-8")
    after = {p.program_id: p.content_hash() for p in load_programs([tmp_path])}
    assert before["main"] != after["main"]
    assert before["alone"] == after["alone"]
    # the hash of a program without modules is what it was before modules existed
    assert after["alone"] == Program(program_id="alone", mode="script", source="print(1)\n").content_hash()


# A course folder: main.py reads the files next to it by every common means, names things that
# are not files of the folder, and a module of it reads a file next to itself.
COURSE_MAIN = """\
import os
from pathlib import Path
import helper
from pkg import loader
with open("input.txt") as f:
    print(f.read())
print(Path("data.csv").read_text())
print(open(os.path.join(os.path.dirname(__file__), "words.json")).read())
print(open("./pic.bin", "rb").read(), open(b"sub/deep.txt").read())
print("hello", "missing.txt", "sub", "../secret.txt", "sub/../input.txt", "main.py", "helper.py")
print(open(ABSOLUTE).read(), open("link.txt").read(), f"data_{1}.txt")
"""


def test_a_script_carries_the_data_files_of_its_folder_that_it_names(tmp_path: Path) -> None:
    """A folder's main.py doing `open("input.txt")` ended in FileNotFoundError: the file did not
    travel. Now the folder's files that the script and its modules name in string constants do."""
    folder = tmp_path / "course"
    write_tree(folder, {
        "main.py": COURSE_MAIN.replace("ABSOLUTE", repr(str(tmp_path / "outside.txt"))),
        "helper.py": "X = 1\n",
        "pkg/__init__.py": "",
        "pkg/loader.py": "import os\nTABLE = open(os.path.join(os.path.dirname(__file__), 'table.txt')).read()\n",
        "pkg/table.txt": "t\n",
        "input.txt": "3 4\n",
        "data.csv": "a,b\r\n1,2\r\n",
        "words.json": "[\"\u00e9\"]\n",
        "sub/deep.txt": "deep\n",
        "data_1.txt": "computed names are not followed\n",
        "unnamed.txt": "not named anywhere\n",
    })
    (folder / "pic.bin").write_bytes(b"\x89PNG\xff\x00")
    write_tree(tmp_path, {"secret.txt": "outside the folder\n", "outside.txt": "absolute\n"})
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")  # inside by name, outside in fact
    (main,) = load_programs([folder / "main.py"])
    assert dict(main.files) == {
        "input.txt": "3 4\n",
        "data.csv": "a,b\r\n1,2\r\n",  # text as it is, line ends included
        "words.json": "[\"\u00e9\"]\n",
        "pic.bin": b"\x89PNG\xff\x00",  # not UTF-8: its bytes
        "sub/deep.txt": "deep\n",
        "pkg/table.txt": "t\n",  # the module's own folder (its __file__)
    }
    assert [path for path, _ in main.files] == sorted(dict(main.files))
    assert {path for path, _ in main.modules} == {"helper.py", "pkg/__init__.py", "pkg/loader.py"}
    assert main.job()["files"] == {**dict(main.files), "pic.bin": {"base64": "iVBOR/8A"}}
    (by_folder,) = [p for p in load_programs([folder]) if p.program_id == "main"]
    assert by_folder.files == main.files


def test_editing_a_data_file_changes_the_programs_hash(tmp_path: Path) -> None:
    from harvest.inputs import Program

    write_tree(tmp_path, {"main.py": "print(open('input.txt').read())\n", "input.txt": "1\n", "alone.py": "print(1)\n"})
    before = {p.program_id: p.content_hash() for p in load_programs([tmp_path])}
    (tmp_path / "input.txt").write_text("2\n", encoding="utf-8")
    after = {p.program_id: p.content_hash() for p in load_programs([tmp_path])}
    assert before["main"] != after["main"]
    assert before["alone"] == after["alone"]
    assert after["alone"] == Program(program_id="alone", mode="script", source="print(1)\n").content_hash()


def test_a_data_file_that_many_scripts_name_is_held_once(tmp_path: Path) -> None:
    """Each script held its own copy: 1,500 scripts naming one 1 MB file took 1.5 GB."""
    tree = {f"s{i}.py": "print(len(open('data.txt').read()))\n" for i in range(3)}
    write_tree(tmp_path, {**tree, "data.txt": "x" * 100_000, "pic.bin": ""})
    (tmp_path / "pic.bin").write_bytes(b"\xff" * 1000)
    (tmp_path / "b.py").write_text("print(open('pic.bin', 'rb').read()[:1])\nprint(open('data.txt').read()[:1])\n")
    programs = {p.program_id: dict(p.files) for p in load_programs([tmp_path])}
    texts = [files["data.txt"] for files in programs.values()]
    assert len(texts) == 4 and texts[0] == "x" * 100_000 and all(t is texts[0] for t in texts)
    assert programs["b"]["pic.bin"] == b"\xff" * 1000


def test_data_files_over_the_bound_are_an_input_error_naming_the_script_and_the_file(tmp_path: Path) -> None:
    from harvest.script_files import MAX_FILE_BYTES, MAX_FILES, MAX_FILES_BYTES

    write_tree(tmp_path / "big", {"main.py": "open('huge.txt')\n", "huge.txt": "x" * (MAX_FILE_BYTES + 1)})
    with pytest.raises(InputFormatError, match=r"big/main.py: the data file huge.txt that it names is "
                       r"1,048,577 bytes; at most 1,048,576 bytes travel per file"):
        load_programs([tmp_path / "big"])
    count = MAX_FILES_BYTES // MAX_FILE_BYTES + 1
    names = [f"d{i}.txt" for i in range(count)]
    write_tree(tmp_path / "sum", {"main.py": f"NAMES = {names!r}\n", **{n: "x" * MAX_FILE_BYTES for n in names}})
    with pytest.raises(InputFormatError, match=rf"sum/main.py: the data files it names .* with {names[-1]} "
                       rf"\({count * MAX_FILE_BYTES:,} bytes in {count} files\)"):
        load_programs([tmp_path / "sum" / "main.py"])
    names = [f"f{i:03}.txt" for i in range(MAX_FILES + 1)]
    write_tree(tmp_path / "many", {"main.py": f"NAMES = {names!r}\n", **{n: "x" for n in names}})
    with pytest.raises(InputFormatError, match=rf"many/main.py: .* with {names[-1]} \(101 bytes in 101 files\)"):
        load_programs([tmp_path / "many" / "main.py"])
    write_tree(tmp_path / "ok", {"main.py": f"NAMES = {names[:MAX_FILES]!r}\n", **{n: "x" for n in names}})
    (ok,) = load_programs([tmp_path / "ok" / "main.py"])
    assert len(ok.files) == MAX_FILES


def test_modules_over_the_bound_are_an_input_error_naming_the_script(tmp_path: Path) -> None:
    from harvest.script_modules import MAX_MODULE_BYTES, MAX_MODULE_FILES

    write_tree(tmp_path / "big", {"main.py": "import huge\n", "huge.py": "#" * MAX_MODULE_BYTES + "\n"})
    with pytest.raises(InputFormatError, match=r"big/main.py: the modules it imports from its folder come to "
                       r"262,145 bytes in 1 files; at most 262,144 bytes and 100 files travel with a script"):
        load_programs([tmp_path / "big"])
    many = {f"m{i}.py": "pass\n" for i in range(MAX_MODULE_FILES + 1)}
    write_tree(tmp_path / "many", {"main.py": "".join(f"import {name[:-3]}\n" for name in many), **many})
    with pytest.raises(InputFormatError, match=r"many/main.py: .* in 101 files"):
        load_programs([tmp_path / "many" / "main.py"])
    write_tree(tmp_path / "latin", {"main.py": "import old\n"})
    (tmp_path / "latin" / "old.py").write_bytes(b"# \xe9\n")
    with pytest.raises(InputFormatError, match=r"latin/old.py: not UTF-8 text"):
        load_programs([tmp_path / "latin" / "main.py"])


def test_a_units_blobs_are_bounded_and_the_biggest_savings_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch runner keeps a unit's blobs until its end, inside the sandbox's memory limit: past
    SHARED_CONTENT_MAX_BYTES, shared contents stay copies (the ones that save the most are blobs)."""
    import harvest.inputs as inputs
    from harvest.inputs import Program, unit_jobs

    big, mid, small = "b" * 3000, "m" * 2000, "s" * 600

    def script(pid: str, *contents: str) -> Program:
        return Program(program_id=pid, mode="script", source="pass\n", files=tuple((f"f{i}.txt", c) for i, c in enumerate(contents)))

    programs = [script("p0", big, mid, small), script("p1", big, mid, small), script("p2", mid, small), script("p3", small)]
    # savings: big 3000 * 1, mid 2000 * 2 = 4000, small 600 * 3 = 1800
    monkeypatch.setattr(inputs, "SHARED_CONTENT_MAX_BYTES", 2500)  # mid fits, then neither big nor small
    lines = list(unit_jobs(programs))
    assert [len(line["base64"]) for line in lines if "blob" in line] == [len(base64.b64encode(mid.encode()))]
    jobs = [line for line in lines if "program_id" in line]
    assert jobs[0]["files"] == {"f0.txt": big, "f1.txt": {"blob": hashlib.sha256(mid.encode()).hexdigest()}, "f2.txt": small}
    monkeypatch.setattr(inputs, "SHARED_CONTENT_MAX_BYTES", 2700)  # mid, then small in what is left
    assert [line["blob"] for line in unit_jobs(programs) if "blob" in line] == [
        hashlib.sha256(mid.encode()).hexdigest(), hashlib.sha256(small.encode()).hexdigest()
    ]
    monkeypatch.setattr(inputs, "SHARED_CONTENT_MAX_BYTES", 10_000)
    assert sum("blob" in line for line in unit_jobs(programs)) == 3
    monkeypatch.setattr(inputs, "SHARED_CONTENT_MAX_BYTES", 0)
    assert [line for line in unit_jobs(programs)] == [p.job() for p in programs]
