"""Harvests in images of your own: any image on the engine that the catalog does not describe
(`--image myorg/app:1`). The runner runs whatever ENTRYPOINT the image has, with the image's
PYTHONPATH and other variables; an image whose `python3` cannot run the tracer is refused before
any unit runs, naming the image and why."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.harvest.conftest import harvest_cmd, run_harvest, shard_files

pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow]

# An application image: its entrypoint runs the application (which would take the runner's
# arguments as its own and print something else), its project's modules are on its PYTHONPATH,
# and it sets a variable of its own.
APP_DOCKERFILE = """\
FROM {base}
USER root
RUN mkdir -p /opt/lib /data && chmod 777 /data && printf 'def triple(x):\\n    return 3 * x\\n' > /opt/lib/mylib.py \\
 && printf 'import sys\\nprint("the app, not the runner", sys.argv)\\n' > /app.py
ENV PYTHONPATH=/opt/lib GREETING=hello
ENTRYPOINT ["python3", "/app.py"]
HEALTHCHECK --interval=1s --timeout=1s CMD sh -c "echo checked >> /tmp/health.log"
VOLUME /data
USER runner
"""
NO_PYTHON_DOCKERFILE = "FROM {base}\nUSER root\nRUN rm /usr/bin/python3 /usr/bin/python3.11\nUSER runner\n"
# Stand-ins for interpreters the tracer cannot run under: a `python3` first on the PATH that says
# it is an old version, and one whose tracer import fails.
FAKE_PYTHON_DOCKERFILE = """\
FROM {base}
USER root
RUN printf '#!/bin/sh\\n{script}\\n' > /usr/local/bin/python3 && chmod 755 /usr/local/bin/python3
USER runner
"""
OLD_PYTHON = "echo 3.7.3"
BROKEN_TRACER = "echo 3.11.2; echo Traceback; echo SyntaxError: invalid syntax; exit 1"
# A real Python behind a wrapper that warns first (on stderr, as interpreters do).
WARNING_PYTHON = 'echo "warning: could not set the locale" >&2; exec /usr/bin/python3 "$@"'

PROGRAM = """\
import os

def f(x):
    import mylib
    return mylib.triple(x), os.environ.get("GREETING")
"""


def _build(engine: Any, tmp: Path, dockerfile: str) -> str:
    context = tmp / uuid.uuid4().hex[:8]
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    tag = f"worldtrace-own-image-test-{context.name}:1"
    engine.images.build(path=str(context), tag=tag, network_mode="none", rm=True)
    return tag


@pytest.fixture(scope="module")
def own_images(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import docker

    from images.builder import ImageBuilder
    from images.catalog import get_spec

    engine = docker.from_env()
    base = ImageBuilder(engine).ensure(get_spec("base-py311"))
    tmp = tmp_path_factory.mktemp("own-images")
    tags: dict[str, str] = {}
    try:
        tags["app"] = _build(engine, tmp, APP_DOCKERFILE.format(base=base))
        tags["no-python"] = _build(engine, tmp, NO_PYTHON_DOCKERFILE.format(base=base))
        tags["old-python"] = _build(engine, tmp, FAKE_PYTHON_DOCKERFILE.format(base=base, script=OLD_PYTHON))
        tags["broken-tracer"] = _build(engine, tmp, FAKE_PYTHON_DOCKERFILE.format(base=base, script=BROKEN_TRACER))
        tags["warning-python"] = _build(engine, tmp, FAKE_PYTHON_DOCKERFILE.format(base=base, script=WARNING_PYTHON))
        yield tags
    finally:
        for tag in tags.values():
            engine.images.remove(tag, force=True)
        engine.close()


def _programs(tmp: Path) -> Path:
    path = tmp / "programs.jsonl"
    path.write_text(json.dumps({"id": "p1", "source": PROGRAM, "entrypoint": "f", "input": "4"}) + "\n")
    return path


def test_a_harvest_runs_in_an_image_of_your_own_with_its_entrypoint_and_environment(
    own_images: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_harvest(_programs(tmp_path), "--out", out, "--image", own_images["app"], "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pq.read_table(shard_files(out)).to_pylist()
    assert [(r["status"], r["return_value"], r["image"]) for r in rows] == [
        ("ok", "(12, 'hello')", own_images["app"])
    ], rows
    record = json.loads(done.stdout)
    assert record["images"] == {own_images["app"]: 1}
    import docker

    engine = docker.from_env()
    try:  # which image content the name stood for, should the tag move later
        assert [r["image_id"] for r in record["unit_results"]] == [engine.images.get(own_images["app"]).id]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("image", "backend", "says"),
    [
        ("no-python", "auto", "has no `python3` on its PATH"),
        ("old-python", "auto", "has Python 3.7.3; the tracer needs 3.8 or newer"),
        ("broken-tracer", "auto", "the tracer does not import under its Python 3.11.2: SyntaxError: invalid syntax"),
        ("app", "monitoring", "has Python 3.11.2; --backend monitoring needs 3.12+"),
    ],
)
def test_an_image_whose_python_cannot_run_the_tracer_is_refused_before_any_unit_runs(
    own_images: dict[str, str], tmp_path: Path, image: str, backend: str, says: str
) -> None:
    import docker

    out = tmp_path / "out"
    done = run_harvest(_programs(tmp_path), "--out", out, "--image", own_images[image], "--backend", backend)
    assert done.returncode == 1
    assert f"image {own_images[image]!r} {says}" in done.stderr or f"image {own_images[image]!r}: {says}" in done.stderr, (
        done.stderr[-2000:]
    )
    assert not out.exists()  # refused before anything was written
    engine = docker.from_env()
    try:  # the check's own container is gone too
        assert not engine.containers.list(all=True, filters={"label": "worldtrace.run=image-check"})
    finally:
        engine.close()


def test_a_python_that_warns_on_stderr_first_is_still_understood(own_images: dict[str, str]) -> None:
    from harvest.sandbox.docker import DockerSandbox

    sandbox = DockerSandbox(reap_on_start=False)
    try:
        assert sandbox.image_problems([own_images["warning-python"], own_images["app"]]) == []
        assert sandbox.image_problems([own_images["warning-python"]], backend="monitoring") == [
            f"image {own_images['warning-python']!r} has Python 3.11.2; --backend monitoring needs 3.12+ (sys.monitoring)"
        ]
    finally:
        sandbox.close()


def test_the_image_healthcheck_does_not_run_beside_the_programs(own_images: dict[str, str], tmp_path: Path) -> None:
    """The engine ran an image's HEALTHCHECK inside the sandbox while the programs ran (its file
    appeared in their /tmp). The running container is looked at while its program waits."""
    import docker

    programs = tmp_path / "programs.jsonl"
    programs.write_text(json.dumps({"id": "w", "source": "import time\ntime.sleep(20)\n"}) + "\n")
    engine = docker.from_env()
    harvest = subprocess.Popen(
        harvest_cmd(programs, "--out", tmp_path / "out", "--image", own_images["app"], "-s"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        found: list[Any] = []
        while not found and harvest.poll() is None and time.monotonic() < deadline:
            found = engine.containers.list(  # a unit's, not the image check's
                filters={"label": ["worldtrace.image=" + own_images["app"], "worldtrace.unit"]}
            )
            time.sleep(0.1)  # polling for the container to exist, not synchronising
        assert found, harvest.communicate()[1][-2000:] if harvest.poll() is not None else "no container"
        container = found[0]
        assert container.attrs["Config"]["Healthcheck"]["Test"] == ["NONE"]
        assert "Health" not in container.attrs["State"]
    finally:
        harvest.terminate()
        harvest.communicate(timeout=120)
        engine.close()


VOLUME_PROGRAM = """\
import errno, os

def f():
    try:
        open("/data/left-behind.txt", "w").write("for the next program")
    except OSError as exc:
        return errno.errorcode[exc.errno], os.listdir("/data")
"""


def test_an_image_volume_is_no_writable_place_shared_by_the_programs(own_images: dict[str, str], tmp_path: Path) -> None:
    """The engine made the image's VOLUME a writable anonymous volume: a place besides /tmp where
    what one program wrote stayed for the next (where Landlock does not confine the programs),
    with no size cap. It is an empty read-only file system in the sandbox now."""
    programs = tmp_path / "programs.jsonl"
    programs.write_text(json.dumps({"id": "v", "source": VOLUME_PROGRAM, "entrypoint": "f"}) + "\n")
    out = tmp_path / "out"
    done = run_harvest(programs, "--out", out, "--image", own_images["app"], "-s")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pq.read_table(shard_files(out)).to_pylist()
    assert [(r["status"], r["return_value"]) for r in rows] == [("ok", "('EROFS', [])")], rows


def test_resuming_after_the_tag_moved_to_other_content_says_so(own_images: dict[str, str], tmp_path: Path) -> None:
    """Unit ids name the image, not its content: a tag rebuilt between two runs into one --out
    made the second run add traces of other content under the same name, silently."""
    import docker

    engine = docker.from_env()
    tag = f"worldtrace-own-image-test-moved-{uuid.uuid4().hex[:8]}:1"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    rows = [json.dumps({"id": f"p{i}", "source": f"print({i})\n"}) for i in range(2)]
    first.write_text(rows[0] + "\n")
    second.write_text(rows[0] + "\n" + rows[1] + "\n")
    out = tmp_path / "out"
    try:
        engine.images.get(own_images["app"]).tag(tag)
        old_id = engine.images.get(tag).id
        done = run_harvest(first, "--out", out, "--image", tag, "--programs-per-unit", "1", "-s")
        assert done.returncode == 0, done.stderr[-2000:]
        engine.images.get(own_images["warning-python"]).tag(tag)  # the tag moves to other content
        new_id = engine.images.get(tag).id
        assert new_id != old_id
        done = run_harvest(second, "--out", out, "--image", tag, "--programs-per-unit", "1", "-s")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"image {tag!r} is {new_id} now, but the units done before in {out} ran in {old_id}" in done.stderr
        again = run_harvest(second, "--out", out, "--image", tag, "--programs-per-unit", "1", "-s")
        assert again.returncode == 0 and "ran in" not in again.stderr  # nothing left to run: nothing to say
    finally:
        engine.images.remove(tag, force=True)
        engine.close()
