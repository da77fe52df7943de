"""Move built images between machines without a registry: `docker save` to a tar file, `docker load`
from it (the tags, hence the recipe hashes, travel with the image)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from harvest.errors import ImageError

if TYPE_CHECKING:
    import docker


def save_image(client: docker.DockerClient, tag: str, path: Path) -> Path:
    """Write image `tag` (with its tag) to the tar file `path`, atomically."""
    from docker.errors import APIError, ImageNotFound

    try:
        image = client.images.get(tag)
    except ImageNotFound:
        raise ImageError(f"image {tag} is not on this engine; build it first") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as f:
            for chunk in image.save(named=tag):
                f.write(chunk)
        os.replace(partial, path)
    except (APIError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ImageError(f"cannot save {tag} to {path}: {exc}") from exc
    return path


def load_images(client: docker.DockerClient, path: Path) -> list[str]:
    """Load the images of the tar file `path` (from `save_image` or `docker save`); return their tags."""
    from docker.errors import DockerException

    try:
        with path.open("rb") as f:
            loaded = client.images.load(f)
    except (DockerException, OSError) as exc:
        raise ImageError(f"cannot load images from {path}: {exc}") from exc
    return [tag for image in loaded for tag in image.tags]
