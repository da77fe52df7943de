"""The image catalog (images/catalog.toml): validated image specs whose tags derive from their recipes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import tomllib

from harvest.errors import ConfigError

IMAGES_DIR = Path(__file__).resolve().parent
CATALOG_PATH = IMAGES_DIR / "catalog.toml"
RECIPES_DIR = IMAGES_DIR / "recipes"
# Bump when the builder's own behaviour changes in a way that changes images.
BUILDER_VERSION = 1
KINDS = ("debootstrap", "pypi-project")
HASH_CHARS = 16
# The pip that installs a pypi-project image's wheelhouse (run from its wheel; not installed).
INSTALLER_PIP = "pip==26.3"


@dataclass(frozen=True)
class ImageSpec:
    """One catalog entry."""

    name: str
    kind: str
    recipe: str
    python: str
    platform: str = "linux/amd64"
    description: str = ""
    suite: str | None = None  # debootstrap
    packages: tuple[str, ...] = ()  # debootstrap --include
    base: str | None = None  # pypi-project: the catalog name of the base image
    project: str | None = None
    version: str | None = None
    requirements: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()
    base_spec: ImageSpec | None = field(default=None, compare=False, repr=False)
    builder_version: int = BUILDER_VERSION

    @property
    def recipe_dir(self) -> Path:
        return RECIPES_DIR / self.recipe

    @property
    def repository(self) -> str:
        """The Docker repository name, e.g. `worldtrace-base-py311`."""
        return f"worldtrace-{self.name}"

    @cached_property
    def recipe_hash(self) -> str:
        """Hash of everything that determines the image (not the description)."""
        digest = hashlib.sha256()
        fields = {
            "builder_version": self.builder_version,
            "installer": INSTALLER_PIP if self.kind == "pypi-project" else None,
            "name": self.name,
            "kind": self.kind,
            "python": self.python,
            "platform": self.platform,
            "suite": self.suite,
            "packages": list(self.packages),
            "project": self.project,
            "version": self.version,
            "requirements": list(self.requirements),
            "tests": list(self.tests),
            "base": self.base_spec.recipe_hash if self.base_spec else None,
        }
        digest.update(json.dumps(fields, sort_keys=True).encode())
        for path in sorted(p for p in self.recipe_dir.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(self.recipe_dir)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
        return digest.hexdigest()[:HASH_CHARS]

    @property
    def tag(self) -> str:
        """The full image reference, e.g. `worldtrace-base-py311:3f2a...`."""
        return f"{self.repository}:{self.recipe_hash}"

    def labels(self) -> dict[str, str]:
        """Labels that every built image carries (provenance)."""
        labels = {
            "worldtrace.image": self.name,
            "worldtrace.recipe-hash": self.recipe_hash,
            "worldtrace.python": self.python,
            "worldtrace.platform": self.platform,
            "worldtrace.kind": self.kind,
        }
        if self.project:
            labels["worldtrace.project"] = f"{self.project}=={self.version}"
            labels["worldtrace.tests"] = " ".join(self.tests)
        return labels


_REQUIRED = {
    "debootstrap": ("suite", "packages"),
    "pypi-project": ("base", "project", "version", "requirements", "tests"),
}
_ALLOWED = {f for f in ImageSpec.__dataclass_fields__ if f not in ("base_spec", "builder_version")}


def _spec(
    entry: dict[str, Any], builder_version: int, where: str, specs: dict[str, ImageSpec]
) -> ImageSpec:
    base: ImageSpec | None = None
    if entry.get("base") is not None:
        base = specs.get(entry["base"])
        if base is None:
            raise ConfigError(f"{where}: base {entry['base']!r} must be listed before this image")
        entry = {"python": base.python, "platform": base.platform, **entry}
    unknown = set(entry) - _ALLOWED
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "kind", "recipe", "python"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: `{key}` must be a non-empty string")
    if entry["kind"] not in KINDS:
        raise ConfigError(f"{where}: kind {entry['kind']!r} is not one of {', '.join(KINDS)}")
    for key in _REQUIRED[entry["kind"]]:
        if not entry.get(key):
            raise ConfigError(f"{where}: a {entry['kind']} image needs `{key}`")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
    spec = ImageSpec(**values, base_spec=base, builder_version=builder_version)
    if base is not None and (spec.python, spec.platform) != (base.python, base.platform):
        raise ConfigError(f"{where}: python/platform differ from those of its base {base.name!r}")
    if not spec.recipe_dir.is_dir():
        raise ConfigError(f"{where}: recipe folder {spec.recipe_dir} does not exist")
    return spec


def load_catalog(path: Path = CATALOG_PATH) -> dict[str, ImageSpec]:
    """Every image of the catalog by name, in file order, bases resolved."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the image catalog {path}: {exc}") from exc
    builder_version = int(data.get("builder_version", BUILDER_VERSION))
    specs: dict[str, ImageSpec] = {}
    for i, entry in enumerate(data.get("image", [])):
        spec = _spec(entry, builder_version, f"{path.name} image #{i + 1}", specs)
        if spec.name in specs:
            raise ConfigError(f"{path.name}: image {spec.name!r} is listed twice")
        specs[spec.name] = spec
    if not specs:
        raise ConfigError(f"{path}: the catalog lists no image")
    return specs


def get_spec(name: str, catalog: dict[str, ImageSpec] | None = None) -> ImageSpec:
    """The catalog entry `name`, or a ConfigError listing the known names."""
    catalog = catalog if catalog is not None else load_catalog()
    try:
        return catalog[name]
    except KeyError:
        raise ConfigError(
            f"unknown image {name!r}; the catalog has: {', '.join(catalog)}"
        ) from None
