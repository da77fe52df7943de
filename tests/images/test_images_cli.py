"""`worldtrace images`: every command has help with an example; option parsing needs no engine."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from harvest.cli import cli
from harvest.commands.images import ByteSize, command


@pytest.mark.parametrize("name", sorted(command.commands))
def test_every_images_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(cli, ["images", name, "-h"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output and f"worldtrace images {name}" in result.output


def test_the_group_lists_its_commands() -> None:
    result = CliRunner().invoke(cli, ["images", "--help"])
    assert result.exit_code == 0
    for name in ("build", "list", "prune", "save", "load"):
        assert name in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500MB", 500_000_000), ("20GB", 20 * 10**9), ("1.5 gb", 1_500_000_000), ("123", 123)],
)
def test_byte_sizes(text: str, expected: int) -> None:
    assert ByteSize().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["lots", "10XB", "GB", ""])
def test_bad_byte_sizes(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a size"):
        ByteSize().convert(text, None, None)


def test_usage_errors_need_no_engine() -> None:
    runner = CliRunner()
    for args in (["images", "build"], ["images", "save", "--out", "x"], ["images", "load"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)


def test_saving_an_image_that_is_not_built_names_it_and_the_build_command(
    tmp_path, monkeypatch: pytest.MonkeyPatch, base_image: str
) -> None:
    import dataclasses

    import images.catalog as catalog_module

    shipped = catalog_module.load_catalog()
    never = dataclasses.replace(shipped["base-py311"], name="never-built-base")
    monkeypatch.setattr(catalog_module, "load_catalog", lambda *a, **k: {**shipped, never.name: never})
    result = CliRunner().invoke(cli, ["images", "save", "never-built-base", "base-py311", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "not built on this engine: never-built-base; build with `worldtrace images build never-built-base`" in result.output
    assert not (tmp_path / "a").exists()  # nothing saved of a request that cannot be met whole
