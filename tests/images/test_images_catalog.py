"""The image catalog: validation, and tags that change exactly when a recipe changes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import images.catalog as catalog_module
from harvest.errors import ConfigError
from images.catalog import CATALOG_PATH, load_catalog

BASE = """
[[image]]
name = "base"
kind = "debootstrap"
recipe = "debian-base"
python = "3.11"
suite = "bookworm"
packages = ["python3"]
description = "a base"
"""

PROJECT = """
[[image]]
name = "proj"
kind = "pypi-project"
recipe = "pypi-project"
base = "base"
project = "toolz"
version = "1.2.0"
requirements = ["toolz==1.2.0", "pytest==9.2.0"]
tests = ["toolz/tests"]
"""


def _load(tmp_path: Path, text: str) -> dict[str, catalog_module.ImageSpec]:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return load_catalog(path)


def test_the_shipped_catalog() -> None:
    specs = load_catalog(CATALOG_PATH)
    bases = [s for s in specs.values() if s.kind == "debootstrap"]
    projects = [s for s in specs.values() if s.kind == "pypi-project"]
    assert {s.python for s in bases} >= {"3.11", "3.13", "3.14", "3.15"}
    assert len(projects) >= 3
    for spec in specs.values():
        assert re.fullmatch(r"worldtrace-[a-z0-9-]+:[0-9a-f]{16}", spec.tag), spec.tag
        assert spec.platform == "linux/amd64" and spec.description
        assert spec.labels()["worldtrace.recipe-hash"] == spec.recipe_hash
    for spec in projects:
        assert spec.base_spec is not None and spec.python == spec.base_spec.python
        assert any(r.startswith(f"{spec.project}=={spec.version}") for r in spec.requirements)
        assert any(r.startswith("pytest==") for r in spec.requirements)
    assert len({s.tag for s in specs.values()}) == len(specs)


def test_tags_are_stable_and_ignore_the_description(tmp_path: Path) -> None:
    first = _load(tmp_path, BASE + PROJECT)
    again = _load(tmp_path, BASE.replace("a base", "another text") + PROJECT)
    assert first["base"].tag == again["base"].tag and first["proj"].tag == again["proj"].tag


def test_changing_an_entry_changes_its_tag_and_its_dependents(tmp_path: Path) -> None:
    first = _load(tmp_path, BASE + PROJECT)
    pinned = _load(tmp_path, BASE + PROJECT.replace("pytest==9.2.0", "pytest==9.1.0"))
    assert pinned["base"].tag == first["base"].tag and pinned["proj"].tag != first["proj"].tag
    more = _load(tmp_path, BASE.replace('["python3"]', '["python3", "procps"]') + PROJECT)
    assert more["base"].tag != first["base"].tag
    assert more["proj"].tag != first["proj"].tag  # a new base means a new project image


def test_changing_a_recipe_file_changes_the_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(catalog_module.RECIPES_DIR, recipes)
    monkeypatch.setattr(catalog_module, "RECIPES_DIR", recipes)
    before = {name: spec.tag for name, spec in _load(tmp_path, BASE + PROJECT).items()}
    with (recipes / "pypi-project" / "Dockerfile").open("a") as f:
        f.write("# changed\n")
    after = _load(tmp_path, BASE + PROJECT)
    assert after["base"].tag == before["base"] and after["proj"].tag != before["proj"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace('kind = "debootstrap"', 'kind = "magic"'), "kind 'magic' is not one of"),
        (BASE.replace('suite = "bookworm"\n', ""), "needs `suite`"),
        (BASE.replace('recipe = "debian-base"', 'recipe = "nope"'), "recipe folder"),
        (BASE + 'colour = "blue"\n', "unknown keys ['colour']"),
        (PROJECT + BASE, "base 'base' must be listed before"),
        (BASE + BASE, "listed twice"),
        (
            BASE + PROJECT.replace('base = "base"', 'base = "base"\npython = "3.12"'),
            "differ from those of its base",
        ),
        ("", "lists no image"),
        ("[[image]\n", "cannot read the image catalog"),
    ],
)
def test_bad_catalogs_are_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, text)


def test_a_suite_newer_than_debootstrap_knows_uses_sids_script(tmp_path: Path) -> None:
    from images.builder import _suite_script

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "sid").write_text("")
    (scripts / "trixie").symlink_to("sid")
    assert _suite_script("forky", scripts) == [str(scripts / "sid")]
    assert _suite_script("trixie", scripts) == []
    (scripts / "sid").unlink()
    assert _suite_script("forky", scripts) == []  # debootstrap itself then names the problem
