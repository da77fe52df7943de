"""Image builds against the real engine: cached by recipe hash, failures recorded, a project image
built offline whose own test suite passes in a locked-down container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harvest.cli import cli
from images.builder import ImageBuilder
from images.catalog import CATALOG_PATH, get_spec, load_catalog

pytestmark = pytest.mark.docker

PROJECT_IMAGE = "toolz"


def test_building_an_unchanged_base_is_a_no_op(docker_client: Any, base_image: str) -> None:
    builder = ImageBuilder(docker_client)
    spec = get_spec("base-py311")
    before = builder.status(spec)
    log_mtime = before.log_path.stat().st_mtime_ns if before.log_path else None
    after = builder.build(spec)
    assert before.state == after.state == "built"
    assert after.image_id == before.image_id
    assert (
        after.log_path.stat().st_mtime_ns if after.log_path else None
    ) == log_mtime  # nothing ran
    labels = docker_client.images.get(base_image).labels
    assert (
        labels["worldtrace.recipe-hash"] == spec.recipe_hash
        and labels["worldtrace.python"] == "3.11"
    )
    config = docker_client.api.inspect_image(base_image)["Config"]
    assert config["User"] == "1000:1000" and "PYTHONHASHSEED=0" in config["Env"]


def test_a_failed_build_is_the_images_status(
    docker_client: Any, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        CATALOG_PATH.read_text()
        + '\n[[image]]\nname = "broken"\nkind = "pypi-project"\nrecipe = "pypi-project"\n'
        'base = "base-py311"\nproject = "toolz"\nversion = "1.2.0"\n'
        'requirements = ["toolz==1.2.0", "worldtrace-no-such-package==0.0.1"]\ntests = ["toolz/tests"]\n'
    )
    spec = load_catalog(catalog)["broken"]
    builder = ImageBuilder(docker_client, cache=tmp_path / "cache")
    status = builder.build(spec)  # returns, does not raise
    assert status.state == "failed" and status.error and "pip" in status.error
    assert (
        status.log_path is not None and "worldtrace-no-such-package" in status.log_path.read_text()
    )
    assert builder.status(spec).state == "failed"  # remembered
    assert not docker_client.images.list(name=spec.repository)


@pytest.fixture(scope="module")
def project_image(docker_client: Any, base_image: str) -> str:
    """A repository image, built offline from a host-side wheelhouse (its test suite runs in the build)."""
    builder = ImageBuilder(docker_client)
    status = builder.build(get_spec(PROJECT_IMAGE))
    assert status.state == "built", (
        f"{status.error}\n{status.log_path.read_text() if status.log_path else ''}"
    )
    return get_spec(PROJECT_IMAGE).tag


def test_project_image_runs_its_test_suite_sandboxed(
    docker_client: Any, project_image: str
) -> None:
    spec = get_spec(PROJECT_IMAGE)
    image = docker_client.images.get(project_image)
    assert image.labels["worldtrace.project"] == "toolz==1.2.0"
    assert image.labels["worldtrace.tests"] == "toolz/tests"
    output = docker_client.containers.run(
        project_image,
        ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", *spec.tests],
        network_mode="none", read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],
        user="1000:1000", remove=True,
    ).decode()  # fmt: skip
    assert " passed" in output and "failed" not in output, output


def test_images_cli_lists_and_builds(project_image: str, base_image: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["images", "build", "base-py311", PROJECT_IMAGE])
    assert result.exit_code == 0, result.output
    assert (
        "base-py311: up to date" in result.output
        and f"{PROJECT_IMAGE}: up to date" in result.output
    )
    result = runner.invoke(cli, ["images", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in map(json.loads, result.output.splitlines())}
    assert set(rows) == set(load_catalog())
    assert rows["base-py311"]["state"] == "built" and rows["base-py311"]["size_bytes"] > 10_000_000
    assert rows[PROJECT_IMAGE]["tag"] == project_image and rows[PROJECT_IMAGE]["python"] == "3.11"
    result = runner.invoke(cli, ["images", "build", "no-such-image"])
    assert result.exit_code != 0 and "unknown image 'no-such-image'" in result.output
    result = runner.invoke(cli, ["images", "build"])
    assert result.exit_code != 0 and "--all" in result.output


def test_least_recently_used_project_images_are_evicted_over_budget(
    docker_client: Any, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from images.cache import cached_images, evict, record_use

    monkeypatch.setenv("WORLDTRACE_CACHE", str(tmp_path / "cache"))
    others = frozenset(
        i.tag for i in cached_images(docker_client)
    )  # the machine's real images stay
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY blob /blob\n")
    tags = [f"worldtrace-evict-test-{n}:1" for n in ("old", "new")]
    try:
        for tag in tags:
            (context / "blob").write_bytes(
                tag.encode() * (2_000_000 // len(tag))
            )  # ~2 MB of its own
            docker_client.images.build(
                path=str(context), tag=tag, network_mode="none", rm=True,
                labels={"worldtrace.image": "evict-test", "worldtrace.kind": "pypi-project"},
            )  # fmt: skip
            record_use(tag)
        ours = {i.tag: i for i in cached_images(docker_client) if i.tag in tags}
        assert set(ours) == set(tags) and all(
            1_900_000 < i.unique_bytes < 2_500_000 for i in ours.values()
        )
        record_use(tags[1])  # "new" was used last
        everything = sum(i.unique_bytes for i in cached_images(docker_client))
        eviction = evict(docker_client, everything - 1_000_000, keep=others)
        assert eviction.removed == [tags[0]]
        assert not docker_client.images.list(name=tags[0].split(":")[0])
        assert docker_client.images.list(name=tags[1].split(":")[0])
        assert base_image in {
            i.tag for i in cached_images(docker_client)
        }  # bases are never evicted
    finally:
        for tag in tags:
            if docker_client.images.list(name=tag.split(":")[0]):
                docker_client.images.remove(tag)


def test_save_and_load_an_image_through_an_archive(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    from harvest.errors import ImageError
    from images.archive import load_images, save_image

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nLABEL worldtrace.test=archive\n")
    tag = "worldtrace-archive-test:1"
    image, _ = docker_client.images.build(path=str(context), tag=tag, network_mode="none", rm=True)
    try:
        archive = save_image(docker_client, tag, tmp_path / "out" / "image.tar")
        assert archive.stat().st_size > 10_000_000 and [
            p.name for p in archive.parent.iterdir()
        ] == ["image.tar"]
        docker_client.images.remove(tag)
        assert load_images(docker_client, archive) == [tag]
        assert docker_client.images.get(tag).id == image.id  # the same image, tag and all
    finally:
        if docker_client.images.list(name="worldtrace-archive-test"):
            docker_client.images.remove(tag)
    with pytest.raises(ImageError, match="not on this engine"):
        save_image(docker_client, tag, tmp_path / "gone.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ImageError, match="cannot load"):
        load_images(docker_client, tmp_path / "junk.tar")
