"""`worldtrace harvest` at its boundary: help, usage errors and input errors (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from harvest.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["harvest", *args])
    return result.exit_code, result.output


def test_help_has_an_example() -> None:
    code, output = invoke("--help")
    assert code == 0
    assert "worldtrace harvest examples/programs --out harvest-out" in output
    for option in ("--image", "--sandbox", "--backend", "--timeout", "--max-events", "--programs-per-unit", "--ray-address", "--silent", "--tests"):
        assert option in output


def test_usage_errors(tmp_path: Path) -> None:
    code, output = invoke("--out", str(tmp_path / "o"))
    assert code == 2 and "give PROGRAMS to trace" in output
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--sandbox", "local", "--image", "base-py311")
    assert code == 2 and "--image needs --sandbox docker" in output
    code, output = invoke(str(script), "--out", str(tmp_path / "o"), "--programs-per-unit", "0")
    assert code == 2 and "--programs-per-unit" in output


def test_a_bad_programs_file_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "source": "pass"}\n{"id": "b", "source": }\n')
    code, output = invoke(str(bad), "--out", str(tmp_path / "o"), "--sandbox", "local")
    assert code == 1
    assert f"Error: {bad}:2: not valid JSON" in output
    assert not (tmp_path / "o").exists()  # nothing written for a harvest that never started


def test_tests_needs_a_repository_image(tmp_path: Path) -> None:
    code, output = invoke("--tests", "--image", "base-py311", "--out", str(tmp_path / "o"))
    assert code == 2 and "not a repository image" in output
