"""The node's image cache: when each image was last used, and eviction of the least recently used
project images beyond a byte budget (so that thousands of repository images do not fill the disk)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from images.builder import cache_dir

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

BASE_KIND = "debootstrap"  # bases are shared by many images: never evicted by the budget


def _use_dir() -> Path:
    return cache_dir() / "image-use"


def _use_file(tag: str) -> Path:
    return _use_dir() / tag.replace("/", "_").replace(":", "@")


def record_use(tag: str) -> None:
    """Remember that `tag` was just used (its file's mtime is the last use)."""
    path = _use_file(tag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)
    except OSError as exc:  # the cache is advisory: never fail a unit for it
        log.debug("cannot record the use of %s: %s", tag, exc)


def last_use(tag: str) -> float | None:
    try:
        return _use_file(tag).stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True)
class CachedImage:
    tag: str
    kind: str
    unique_bytes: int  # bytes only this image holds (its layers above the shared base)
    total_bytes: int
    containers: int  # containers using it (running or not)
    last_used: float  # last use recorded here, else the image's creation time


@dataclass
class Eviction:
    budget_bytes: int
    bytes_before: int
    bytes_after: int
    removed: list[str] = field(default_factory=list)


def cached_images(client: docker.DockerClient) -> list[CachedImage]:
    """Every tagged worldtrace image on the engine, with the disk bytes it alone holds."""
    labelled = {
        tag: image.labels.get("worldtrace.kind", "")
        for image in client.images.list(filters={"label": "worldtrace.image"})
        for tag in image.tags
    }
    found = []
    for entry in client.df().get("Images") or []:
        for tag in entry.get("RepoTags") or []:
            if tag not in labelled:
                continue
            size = int(entry.get("Size") or 0)
            shared = max(int(entry.get("SharedSize") or 0), 0)
            kind = labelled[tag]
            found.append(
                CachedImage(
                    tag=tag, kind=kind,
                    unique_bytes=size if kind == BASE_KIND else size - shared,
                    total_bytes=size, containers=max(int(entry.get("Containers") or 0), 0),
                    last_used=last_use(tag) or float(entry.get("Created") or 0),
                )
            )  # fmt: skip
    return found


def evict(
    client: docker.DockerClient, budget_bytes: int, keep: frozenset[str] = frozenset()
) -> Eviction:
    """Remove least recently used project images until worldtrace images fit in `budget_bytes`.

    Base images, images in `keep` and images that a container uses are never removed; a removed
    image is rebuilt from its (cached) wheelhouse when it is needed again.
    """
    from docker.errors import APIError

    images = cached_images(client)
    total = sum(image.unique_bytes for image in images)
    eviction = Eviction(budget_bytes=budget_bytes, bytes_before=total, bytes_after=total)
    candidates = sorted(
        (i for i in images if i.kind != BASE_KIND and i.tag not in keep and i.containers == 0),
        key=lambda i: i.last_used,
    )
    for image in candidates:
        if eviction.bytes_after <= budget_bytes:
            break
        try:
            client.images.remove(image.tag)
        except APIError as exc:  # in use since we looked: skip it
            log.warning("could not evict %s: %s", image.tag, exc)
            continue
        log.info(
            "evicted %s (%d MB, last used %s)",
            image.tag,
            image.unique_bytes >> 20,
            time.ctime(image.last_used),
        )
        eviction.removed.append(image.tag)
        eviction.bytes_after -= image.unique_bytes
    return eviction
