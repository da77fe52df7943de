"""Build catalog images through the Docker SDK: debootstrap + import for bases, an offline build for projects.

An image is tagged by its recipe hash, so `build` is a no-op when that tag exists. A failed build is
recorded as the image's status (a marker plus the build log under the cache folder), never a crash.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harvest.docker_client import engine_platform
from harvest.errors import EngineError, ImageBuildError
from images.catalog import INSTALLER_PIP, ImageSpec

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "WORLDTRACE_APT_MIRROR"
CACHE_ENV = "WORLDTRACE_CACHE"
STEP_TIMEOUT_S = 1800
# The environment every image starts with (the sandbox sets it again at run time).
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONHASHSEED": "0",
    "TZ": "UTC",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_PIP_PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def cache_dir() -> Path:
    """$WORLDTRACE_CACHE, else $XDG_CACHE_HOME/worldtrace, else ~/.cache/worldtrace."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "worldtrace"


@dataclass(frozen=True)
class ImageStatus:
    """What the engine and the build records say about one catalog image."""

    spec: ImageSpec
    state: str  # "built", "missing" or "failed"
    image_id: str | None = None
    size_bytes: int | None = None
    created: str | None = None
    error: str | None = None
    log_path: Path | None = None
    build_time_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "state": self.state,
            "tag": self.spec.tag,
            "python": self.spec.python,
            "kind": self.spec.kind,
            "platform": self.spec.platform,
            "image_id": self.image_id,
            "size_bytes": self.size_bytes,
            "created": self.created,
            "error": self.error,
            "log": str(self.log_path) if self.log_path else None,
            "build_time_s": self.build_time_s,
            "description": self.spec.description,
        }


class ImageBuilder:
    """Builds and inspects catalog images on one engine."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        cache: Path | None = None,
        mirror: str | None = None,
    ) -> None:
        if client is None:
            from harvest.docker_client import get_client

            client = get_client()
        self.client = client
        self.cache = cache or cache_dir()
        self.mirror = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR

    # -- status ---------------------------------------------------------------------------------
    def _marker(self, spec: ImageSpec) -> Path:
        return self.cache / "build-status" / f"{spec.name}-{spec.recipe_hash}.json"

    def log_path(self, spec: ImageSpec) -> Path:
        return self.cache / "build-logs" / f"{spec.name}-{spec.recipe_hash}.log"

    def status(self, spec: ImageSpec) -> ImageStatus:
        from docker.errors import APIError, ImageNotFound

        record: dict[str, Any] = {}
        marker = self._marker(spec)
        if marker.is_file():
            record = json.loads(marker.read_text(encoding="utf-8"))
        try:
            attrs = self.client.api.inspect_image(spec.tag)
        except ImageNotFound:
            attrs = None
        except APIError as exc:
            raise EngineError(f"cannot inspect image {spec.tag}: {exc}") from exc
        log_path = self.log_path(spec)
        logged = log_path if log_path.exists() else None
        took = record.get("build_time_s")
        if attrs is not None:
            return ImageStatus(
                spec, "built", image_id=attrs["Id"], size_bytes=attrs.get("Size"),
                created=attrs.get("Created"), log_path=logged, build_time_s=took,
            )  # fmt: skip
        if record.get("state") == "failed":
            return ImageStatus(
                spec, "failed", error=record.get("error"), log_path=logged, build_time_s=took
            )
        return ImageStatus(spec, "missing", log_path=logged)

    def prune(self, catalog: dict[str, ImageSpec]) -> list[str]:
        """Remove worldtrace images whose tag no current catalog entry has; return their tags."""
        from docker.errors import APIError

        current = {spec.tag for spec in catalog.values()}
        removed: list[str] = []
        for image in self.client.images.list(filters={"label": "worldtrace.image"}):
            for tag in image.tags:
                if tag in current:
                    continue
                try:
                    self.client.images.remove(tag, noprune=False)
                except APIError as exc:  # in use by a container, say: keep it for now
                    log.warning("could not remove old image %s: %s", tag, exc)
                    continue
                removed.append(tag)
        return removed

    # -- building -------------------------------------------------------------------------------
    def build(self, spec: ImageSpec, force: bool = False) -> ImageStatus:
        """Build `spec` (and its base) unless its tag exists; a failure is returned, not raised."""
        try:
            self.ensure(spec, force=force)
        except ImageBuildError as exc:
            log.warning("image %s failed to build: %s", spec.name, exc)
        return self.status(spec)

    def ensure(self, spec: ImageSpec, force: bool = False) -> str:
        """The tag of `spec`, built first if needed; raises ImageBuildError when the build fails."""
        if spec.base_spec is not None:
            try:
                self.ensure(spec.base_spec)
            except ImageBuildError as exc:
                raise ImageBuildError(
                    f"base image {spec.base_spec.name} failed: {exc}", exc.log_path
                ) from exc
        with self._lock(spec):
            if not force and self.status(spec).state == "built":
                return spec.tag
            platform_here = engine_platform(self.client)
            if spec.platform != platform_here:
                # No emulation: an image is built (and run) only on engines of its platform.
                raise ImageBuildError(
                    f"image {spec.name} is for {spec.platform}; this engine is {platform_here}"
                )
            log_path = self.log_path(spec)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            marker = self._marker(spec)
            marker.parent.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            log.info("building image %s (%s)", spec.name, spec.tag)
            with log_path.open("w", encoding="utf-8") as out:
                out.write(f"# worldtrace image build: {spec.name} -> {spec.tag}\n")
                try:
                    if spec.kind == "debootstrap":
                        self._build_debootstrap(spec, out)
                    else:
                        self._build_pypi_project(spec, out)
                except ImageBuildError as exc:
                    out.write(f"\n# FAILED: {exc}\n")
                    self._record(marker, "failed", time.monotonic() - started, str(exc))
                    raise ImageBuildError(f"{exc} (build log: {log_path})", str(log_path)) from exc
                except Exception as exc:  # an engine or tool failure is still this image's status
                    out.write(f"\n# FAILED: {type(exc).__name__}: {exc}\n")
                    self._record(
                        marker, "failed", time.monotonic() - started, f"{type(exc).__name__}: {exc}"
                    )
                    raise ImageBuildError(
                        f"{type(exc).__name__}: {exc} (build log: {log_path})", str(log_path)
                    ) from exc
                elapsed = time.monotonic() - started
                out.write(f"\n# built {spec.tag} in {elapsed:.1f} s\n")
            self._record(marker, "built", elapsed, None)
            log.info("built image %s in %.1f s", spec.name, elapsed)
            return spec.tag

    def _record(self, marker: Path, state: str, elapsed: float, error: str | None) -> None:
        record = {
            "state": state,
            "build_time_s": round(elapsed, 2),
            "error": error,
            "time": time.time(),
        }
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, marker)

    @contextmanager
    def _lock(self, spec: ImageSpec) -> Iterator[None]:
        """One build of an image at a time on this machine (tests and harvests may race)."""
        path = self.cache / "locks" / f"{spec.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _run(self, cmd: list[str], out: IO[str], **kwargs: Any) -> None:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=STEP_TIMEOUT_S, check=False, **kwargs,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImageBuildError(f"`{cmd[0]}` failed: {exc}") from exc
        if proc.returncode != 0:
            raise ImageBuildError(f"`{' '.join(cmd[:3])} ...` exited with code {proc.returncode}")

    # -- debootstrap + import -------------------------------------------------------------------
    def _build_debootstrap(self, spec: ImageSpec, out: IO[str]) -> None:
        assert spec.suite is not None
        tarball = self.cache / "rootfs" / f"{spec.name}-{spec.recipe_hash}.tar"
        if tarball.is_file():
            out.write(f"# reusing the cached root filesystem {tarball}\n")
        else:
            self._debootstrap(spec, tarball, out)
        out.write(f"# docker import {tarball} as {spec.tag}\n")
        changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()]
        changes += [f'LABEL {k}="{v}"' for k, v in spec.labels().items()]
        changes += ["USER 1000:1000", "WORKDIR /work", 'CMD ["python3"]']
        result = self.client.api.import_image(
            src=str(tarball), repository=spec.repository, tag=spec.recipe_hash, changes=changes
        )
        out.write(f"{result}\n")
        self._check_python(spec, out)
        # Old root filesystems of this image are dead weight once the new one is imported.
        for old in tarball.parent.glob(f"{spec.name}-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)

    def _debootstrap(self, spec: ImageSpec, tarball: Path, out: IO[str]) -> None:
        assert spec.suite is not None
        if os.geteuid() != 0:
            raise ImageBuildError("debootstrap needs root: run `worldtrace images build` as root")
        debootstrap = shutil.which("debootstrap") or (
            "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
        )
        if debootstrap is None:
            raise ImageBuildError(
                "debootstrap is not installed (Debian/Ubuntu: apt-get install debootstrap)"
            )
        tarball.parent.mkdir(parents=True, exist_ok=True)
        debs = self.cache / "debs" / f"{spec.suite}-{platform.machine()}"
        debs.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=tarball.parent))
        try:
            rootfs = work / "rootfs"
            self._run(
                [
                    debootstrap, "--variant=minbase", f"--include={','.join(spec.packages)}",
                    "--components=main", f"--cache-dir={debs}", spec.suite, str(rootfs), self.mirror,
                    *_suite_script(spec.suite),
                ],
                out,
            )  # fmt: skip
            self._run(["sh", str(spec.recipe_dir / "finish-rootfs.sh"), str(rootfs)], out)
            partial = work / "rootfs.tar"
            self._run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], out)
            os.replace(partial, tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_python(self, spec: ImageSpec, out: IO[str]) -> None:
        """The image's python3 must be the catalog's version."""
        text = self.client.containers.run(
            spec.tag, ["python3", "-c", "import platform; print(platform.python_version())"],
            network_mode="none", remove=True,
        )  # fmt: skip
        version = text.decode().strip()
        out.write(f"# python3 in the image: {version}\n")
        if not (version == spec.python or version.startswith(spec.python + ".")):
            self.client.api.remove_image(spec.tag)
            raise ImageBuildError(
                f"the image's python3 is {version}, the catalog says {spec.python}"
            )

    # -- PyPI project on a base -----------------------------------------------------------------
    def _build_pypi_project(self, spec: ImageSpec, out: IO[str]) -> None:
        assert spec.base_spec is not None and spec.project and spec.version
        wheelhouse = self._wheelhouse(spec, out)
        sdist = self._sdist(spec, out)
        with tempfile.TemporaryDirectory(prefix=f"worldtrace-build-{spec.name}-") as tmp:
            ctx = Path(tmp)
            shutil.copy2(spec.recipe_dir / "Dockerfile", ctx / "Dockerfile")
            shutil.copytree(wheelhouse, ctx / "wheelhouse")
            _extract_sdist(sdist, ctx / "project")
            buildargs = {
                "BASE": spec.base_spec.tag,
                "REQUIREMENTS": " ".join(spec.requirements),
                "TESTS": " ".join(spec.tests),
            }
            out.write(f"# docker build (network none) with {buildargs}\n")
            error = None
            for chunk in self.client.api.build(
                path=str(ctx), tag=spec.tag, buildargs=buildargs, labels=spec.labels(),
                network_mode="none", pull=False, rm=True, forcerm=True, decode=True,
            ):  # fmt: skip
                if "stream" in chunk:
                    out.write(chunk["stream"])
                if "error" in chunk:
                    error = chunk["error"]
                    out.write(f"{error}\n")
            out.flush()
            if error is not None:
                raise ImageBuildError(f"docker build failed: {error.strip().splitlines()[-1]}")

    def _pip(self, args: list[str], out: IO[str]) -> None:
        self._run(
            [sys.executable, "-m", "pip", *args], out, env={**os.environ, "PIP_NO_INPUT": "1"}
        )

    def _wheelhouse(self, spec: ImageSpec, out: IO[str]) -> Path:
        """Wheels of every requirement (and the installer pip) for the image's Python and platform."""
        target = self.cache / "wheelhouse" / f"{spec.name}-{spec.recipe_hash}"
        if (target / ".complete").is_file():
            out.write(f"# reusing the wheelhouse {target}\n")
            return target
        machine = _PIP_PLATFORMS.get(spec.platform)
        if machine is None:
            raise ImageBuildError(f"no pip platform known for {spec.platform}")
        abi = "cp" + spec.python.replace(".", "")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        self._pip(
            [
                "download", "--quiet", "--dest", str(partial), "--only-binary=:all:",
                "--python-version", spec.python, "--implementation", "cp", "--abi", abi,
                "--platform", f"manylinux2014_{machine}", "--platform", "any",
                *spec.requirements, INSTALLER_PIP,
            ],
            out,
        )  # fmt: skip
        (partial / ".complete").write_text(
            "\n".join(sorted(p.name for p in partial.iterdir())) + "\n"
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
        return target

    def _sdist(self, spec: ImageSpec, out: IO[str]) -> Path:
        """The project's source distribution (where its test suite lives)."""
        folder = self.cache / "sdists" / f"{spec.project}-{spec.version}"
        found = sorted(folder.glob("*.tar.gz")) if folder.is_dir() else []
        if not found:
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            self._pip(
                ["download", "--quiet", "--no-deps", "--no-binary=:all:", "--dest", str(partial),
                 f"{spec.project}=={spec.version}"],
                out,
            )  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
            found = sorted(folder.glob("*.tar.gz"))
        if len(found) != 1:
            raise ImageBuildError(
                f"expected one sdist of {spec.project}=={spec.version} in {folder}"
            )
        return found[0]


def ensure_image(name: str) -> str:
    """The tag of catalog image `name`, building it (and its base) first if it is missing.

    Raises ConfigError for an unknown name and ImageBuildError (with the log path) when a build fails.
    """
    from images.catalog import get_spec

    return ImageBuilder().ensure(get_spec(name))


def _extract_sdist(sdist: Path, dest: Path) -> None:
    """Unpack an sdist without its top-level folder, refusing unsafe members."""
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1:
            raise ImageBuildError(
                f"{sdist.name}: expected one top-level folder, found {sorted(tops)}"
            )
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            tar.extractall(tmp, filter="data")
            os.replace(Path(tmp) / tops.pop(), dest)


def _suite_script(suite: str, scripts: Path = Path("/usr/share/debootstrap/scripts")) -> list[str]:
    """debootstrap's script argument for a suite newer than the installed debootstrap knows (e.g.
    Debian testing's "forky" with bookworm's debootstrap): sid's script, which every Debian suite
    since bookworm shares; none for a suite it has a script of."""
    if (scripts / suite).exists() or not (scripts / "sid").exists():
        return []
    return [str(scripts / "sid")]
