"""`worldtrace images`: build and list the sandbox images of images/catalog.toml."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from harvest.errors import WorldtraceError


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.0f} MB"


def _ago(timestamp: float) -> str:
    seconds = max(time.time() - timestamp, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


@click.group(name="images", context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Build and list the sandbox images (catalog: images/catalog.toml).

    Images are tagged by the hash of their recipe, so building an unchanged image does nothing.

    \b
    Example:
        worldtrace images build base-py311
        worldtrace images build --all
        worldtrace images list
    """


@command.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def list_images(as_json: bool) -> None:
    """List every catalog image: built or not, size, Python version, tag.

    \b
    Example:
        worldtrace images list --json
    """
    from images.builder import ImageBuilder
    from images.cache import last_use
    from images.catalog import load_catalog

    try:
        catalog = load_catalog()
        builder = ImageBuilder()
        statuses = [builder.status(spec) for spec in catalog.values()]
    except WorldtraceError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for status in statuses:
            click.echo(json.dumps({**status.as_dict(), "last_used": last_use(status.spec.tag)}))
        return
    rows = [("NAME", "STATE", "PYTHON", "KIND", "SIZE", "LAST USED", "TAG")]
    for s in statuses:
        used = last_use(s.spec.tag)
        rows.append(
            (
                s.spec.name,
                s.state,
                s.spec.python,
                s.spec.kind,
                _size(s.size_bytes),
                _ago(used) if used else "-",
                s.spec.tag,
            )  # fmt: skip
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for s in statuses:
        if s.state == "failed":
            click.echo(f"{s.spec.name}: build failed: {s.error} (log: {s.log_path})", err=True)


@command.command(name="build")
@click.argument("names", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every image of the catalog.")
@click.option("--force", is_flag=True, help="Rebuild even if the image's tag exists.")
def build_images(names: tuple[str, ...], build_all: bool, force: bool) -> None:
    """Build images by catalog NAME (their base images first); exits 1 if any failed.

    \b
    Example:
        worldtrace images build base-py311 toolz
        worldtrace images build --all
    """
    from images.builder import ImageBuilder
    from images.catalog import get_spec, load_catalog

    if not names and not build_all:
        raise click.UsageError("name images to build, or pass --all")
    try:
        catalog = load_catalog()
        specs = list(catalog.values()) if build_all else [get_spec(n, catalog) for n in names]
        builder = ImageBuilder()
        failed = 0
        for spec in specs:
            before = builder.status(spec)
            if before.state == "built" and not force:
                click.echo(f"{spec.name}: up to date ({spec.tag})")
                continue
            click.echo(f"{spec.name}: building {spec.tag} ...")
            status = builder.build(spec, force=force)
            if status.state == "built":
                took = f" in {status.build_time_s:.0f} s" if status.build_time_s is not None else ""
                click.echo(f"{spec.name}: built{took}, {_size(status.size_bytes)}")
            else:
                failed += 1
                click.echo(
                    f"{spec.name}: FAILED: {status.error}\n  build log: {status.log_path}", err=True
                )
    except WorldtraceError as exc:
        raise click.ClickException(str(exc)) from exc
    if failed:
        raise click.ClickException(f"{failed} image(s) failed to build")


class ByteSize(click.ParamType):
    """A size such as 500MB, 20GB or 1500000 (bytes)."""

    name = "size"
    UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace(" ", "")
        digits = text.rstrip("KMGTB")
        unit = text[len(digits) :]
        try:
            if unit not in self.UNITS:
                raise ValueError(unit)
            return int(float(digits) * self.UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a size like 500MB or 20GB", param, ctx)


@command.command(name="prune")
@click.option(
    "--max-bytes", type=ByteSize(), default=None,
    help="Also evict least recently used project images until worldtrace images fit (e.g. 20GB).",
)  # fmt: skip
def prune_images(max_bytes: int | None) -> None:
    """Remove images built from recipes that changed since (old recipe-hash tags), and with
    --max-bytes the least recently used project images beyond that budget (bases are kept).

    \b
    Example:
        worldtrace images prune
        worldtrace images prune --max-bytes 20GB
    """
    from images.builder import ImageBuilder
    from images.cache import evict
    from images.catalog import load_catalog

    try:
        builder = ImageBuilder()
        removed = builder.prune(load_catalog())
        if max_bytes is not None:
            eviction = evict(builder.client, max_bytes)
            removed += eviction.removed
    except WorldtraceError as exc:
        raise click.ClickException(str(exc)) from exc
    for tag in removed:
        click.echo(f"removed {tag}")
    click.echo(f"{len(removed)} image(s) removed")
    if max_bytes is not None:
        click.echo(
            f"worldtrace images now hold {_size(eviction.bytes_after)} (budget {_size(max_bytes)})"
        )


@command.command(name="save")
@click.argument("names", nargs=-1)
@click.option("--all", "save_all", is_flag=True, help="Save every built image of the catalog.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Folder for the archives (one NAME-HASH.tar per image).",
)  # fmt: skip
def save_images(names: tuple[str, ...], save_all: bool, out_dir: Path) -> None:
    """Save built images to tar archives, to load them on machines that cannot build them.

    \b
    Example:
        worldtrace images save base-py311 toolz --out image-archives
        worldtrace images load image-archives/*.tar      # on another node
    """
    from images.archive import save_image
    from images.builder import ImageBuilder
    from images.catalog import get_spec, load_catalog

    if not names and not save_all:
        raise click.UsageError("name images to save, or pass --all")
    try:
        catalog = load_catalog()
        builder = ImageBuilder()
        specs = [get_spec(n, catalog) for n in names] if names else list(catalog.values())
        if save_all:
            specs = [spec for spec in specs if builder.status(spec).state == "built"]
        missing = [spec.name for spec in specs if builder.status(spec).state != "built"]
        if missing:
            raise WorldtraceError(
                f"not built on this engine: {', '.join(missing)}; build with `worldtrace images build {' '.join(missing)}`"
            )
        for spec in specs:
            path = save_image(
                builder.client, spec.tag, out_dir / f"{spec.name}-{spec.recipe_hash}.tar"
            )
            click.echo(f"{spec.name}: saved to {path} ({_size(path.stat().st_size)})")
    except WorldtraceError as exc:
        raise click.ClickException(str(exc)) from exc


@command.command(name="load")
@click.argument(
    "archives",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
def load_archives(archives: tuple[Path, ...]) -> None:
    """Load images from tar archives made by `worldtrace images save` (or `docker save`).

    \b
    Example:
        worldtrace images load image-archives/*.tar
    """
    from harvest.docker_client import get_client
    from images.archive import load_images

    try:
        client = get_client()
        for archive in archives:
            for tag in load_images(client, archive):
                click.echo(f"loaded {tag} from {archive}")
    except WorldtraceError as exc:
        raise click.ClickException(str(exc)) from exc
