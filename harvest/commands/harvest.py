"""`worldtrace harvest`: trace programs in sandboxes, many per container, and write Parquet shards."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from harvest.errors import WorldtraceError
from harvest.inputs import Program, load_programs, repository_tests_program, unique_per_image
from harvest.options import json_option, out_option, ray_address_option, silent_option
from harvest.plan import (
    DEFAULT_IMAGE,
    DEFAULT_PROGRAMS_PER_UNIT,
    HarvestSettings,
    WorkUnit,
    plan_units,
    shard_name,
)
from harvest.run_manifest import RunManifestWriter, RunRecord, images_of, now
from harvest.sandbox import base as sb
from harvest.unit import UnitResult
from schemas.errors import SchemaError

log = logging.getLogger(__name__)

LOCAL_IMAGE = "local"  # what --sandbox local records as the image: the host's own Python
LOCK_FILE = ".worldtrace/harvest.lock"


@click.command(name="harvest")
@click.argument("programs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@out_option(help="Output folder for the shards and the run manifest (created if missing).")
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="NAME",
    help=f"Image to run programs in: a catalog name (see `worldtrace images list`) or any image of your "
    f"own on the Docker engine (its python3 runs the tracer); repeat to run every program in several "
    f"images. Default: {DEFAULT_IMAGE}. Programs may name their own.",
)
@click.option(
    "--sandbox",
    type=click.Choice(["docker", "local"]),
    default="docker",
    show_default=True,
    help="docker: isolated containers. local: host subprocesses, for trusted code only.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "monitoring", "settrace"]),
    default="auto",
    show_default=True,
    help="Tracer backend (auto: sys.monitoring where the image's Python has it).",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=sb.DEFAULT_PROGRAM_TIMEOUT_S, show_default=True, help="Seconds per program.")
@click.option("--max-events", type=click.IntRange(min=1), default=sb.DEFAULT_MAX_EVENTS, show_default=True, help="Events recorded per trace.")
@click.option("--max-value-chars", type=click.IntRange(min=1), default=sb.DEFAULT_MAX_VALUE_CHARS, show_default=True, help="Characters per rendered value.")
@click.option("--memory-mb", type=click.IntRange(min=32), default=sb.DEFAULT_MEMORY_MB, show_default=True, help="Memory limit of a sandbox.")
@click.option(
    "--programs-per-unit",
    type=click.IntRange(min=1),
    default=DEFAULT_PROGRAMS_PER_UNIT,
    show_default=True,
    help="Programs per work unit (one container start and one shard per unit).",
)
@click.option("--tests", is_flag=True, help="Also trace the test suite of each --image (repository images).")
@click.option(
    "--tests-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=900.0,
    show_default=True,
    help="Seconds for a whole test suite (--tests).",
)
@click.option(
    "--test-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds for each test of a suite (--tests): a test past it fails, and one that hangs or "
    "ends the process is left out while the rest of the suite runs.",
)
@click.option(
    "--recheck",
    "recheck_fraction",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    metavar="FRACTION",
    help="Afterwards, run this share of the programs again in new sandboxes and report in "
    "DIR/determinism.json which ones traced differently (clock, addresses, thread timing). 1: all.",
)
@ray_address_option
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of the embedded Ray (default: all).")
@silent_option
@json_option
def command(
    programs: tuple[Path, ...],
    out: Path,
    images: tuple[str, ...],
    sandbox: str,
    backend: str,
    timeout: float,
    max_events: int,
    max_value_chars: int,
    memory_mb: int,
    programs_per_unit: int,
    tests: bool,
    tests_timeout: float,
    test_timeout: float,
    recheck_fraction: float,
    ray_address: str | None,
    num_cpus: int | None,
    silent: bool,
    as_json: bool,
) -> None:
    """Trace PROGRAMS in sandboxes and write the traces as Parquet shards in --out.

    PROGRAMS are JSON Lines files of programs ({"id", "source", "entrypoint"?, "input"?, "argv"?,
    "stdin"?, "timeout_s"?, "image"?, "output"?}),
    CRUXEval files ({"id", "code", "input", "output"}), MBPP files ({"task_id", "code", "test_list"}),
    Python scripts, or folders of these. Units
    of programs run in one container each, on an embedded Ray or on --ray-address. Re-running the
    same command resumes: finished units are skipped, half-done ones are redone, nothing is
    duplicated.

    \b
    Examples:
        worldtrace harvest examples/programs --out harvest-out
        worldtrace harvest cruxeval.jsonl --out crux --image base-py313 --backend monitoring
        worldtrace harvest --tests --image toolz --out toolz-traces
        worldtrace harvest examples/programs --out local-out --sandbox local
    """
    started = time.monotonic()
    if not programs and not tests:
        raise click.UsageError("give PROGRAMS to trace, or --tests with repository --image(s)")
    if tests and sandbox != "docker":
        raise click.UsageError("--tests needs --sandbox docker (the test suites live in repository images)")
    if tests and not images:
        raise click.UsageError("--tests needs --image NAME of a repository image (see `worldtrace images list`)")
    if sandbox == "local" and images:
        raise click.UsageError("--image needs --sandbox docker (--sandbox local runs the host's Python)")
    images = tuple(dict.fromkeys(images))  # an --image given twice: its programs run once in it
    chosen_images = images or ((LOCAL_IMAGE,) if sandbox == "local" else (DEFAULT_IMAGE,))
    try:
        found = _programs(programs, chosen_images, tests, sandbox, tests_timeout, test_timeout)
        settings = HarvestSettings(
            image=chosen_images[0],
            images=chosen_images,
            sandbox=sandbox,
            backend=backend,
            timeout_s=timeout,
            max_events=max_events,
            max_value_chars=max_value_chars,
            memory_mb=memory_mb,
            programs_per_unit=programs_per_unit,
        )
        units = plan_units(found, settings)
        if backend == "monitoring":
            _check_monitoring(sorted({u.image for u in units}))
        record = RunRecord(
            run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
            command=["worldtrace", "harvest", *sys.argv[2:]] if sys.argv[1:2] == ["harvest"] else sys.argv,
            inputs=[str(p) for p in programs],
            settings=settings,
            ray_address=ray_address,
            images=images_of(units),
            units_planned=len(units),
            programs_planned=sum(len(u) for u in units),
        )
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        with _exclusive(out):
            try:
                _harvest(units, settings, out, record, ray_address, num_cpus, silent, started, recheck_fraction)
            except (WorldtraceError, SchemaError):
                # Only while holding the lock: a harvest refused by another's lock must not remove
                # the folder that one is writing to (both may have found it missing).
                if created:
                    _remove_if_untouched(out)
                raise
    except (WorldtraceError, SchemaError) as exc:  # the output folder's shards or manifest, too
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # the output folder: read-only, full, removed while the harvest ran
        where = f": {exc.filename}" if exc.filename else f" (output folder {out})"
        raise click.ClickException(
            f"{exc.strerror or exc}{where}; fix that (free space, permissions) and re-run the same command to resume"
        ) from exc
    data = record.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not silent:
        click.echo(_summary(record, out))
    if not record.complete:
        reason = (
            f"{len(record.failed_units)} of {record.units_planned} units failed"
            if record.failed_units
            else "the harvest did not finish"
        )
        raise click.ClickException(f"{reason}; see {out / 'harvest-run.json'}; re-run the same command to retry them")
    if record.recheck_failed:
        raise click.ClickException(
            f"the harvest is complete, but {len(record.recheck_failed)} unit(s) of its determinism check failed; "
            f"see {out / 'harvest-run.json'}; re-run the same command to retry them"
        )


def _programs(
    paths: tuple[Path, ...],
    images: tuple[str, ...],
    tests: bool,
    sandbox: str,
    tests_timeout: float,
    test_timeout: float,
) -> list[Program]:
    """The programs to run, each with its image: a program naming none runs in every --image."""
    loaded = load_programs(list(paths)) if paths else []
    if sandbox == "local":
        named = sorted({p.image for p in loaded if p.image})
        if named:
            log.warning("--sandbox local runs the host's Python; ignoring the images programs name (%s)", ", ".join(named))
        loaded = [replace(p, image=None) for p in loaded]
    programs = [p for p in loaded if p.image]
    for image in images:
        programs.extend(replace(p, image=image) for p in loaded if not p.image)
    if tests:
        programs.extend(_test_suite(image, tests_timeout, test_timeout) for image in images)
    return unique_per_image(programs)  # now that each program has its image


def _check_monitoring(images: list[str]) -> None:
    """--backend monitoring needs Python 3.12+ in every image (sys.monitoring): refuse up front
    rather than trace every program into an `error` row."""
    from images.catalog import load_catalog

    catalog = load_catalog()
    too_old = []
    for image in images:
        if image == LOCAL_IMAGE:
            where, python = "the host (--sandbox local)", f"{sys.version_info[0]}.{sys.version_info[1]}"
        elif image in catalog:
            where, python = image, catalog[image].python
        else:
            continue  # an image of your own: the engine check runs its Python (check_own_image)
        if tuple(int(part) for part in python.split(".")[:2]) < (3, 12):
            too_old.append(f"{where} has Python {python}")
    if too_old:
        raise click.UsageError(
            f"--backend monitoring needs Python 3.12+ (sys.monitoring), but {', '.join(too_old)}; "
            "use --backend auto (monitoring where the Python has it) or an image such as base-py313"
        )


def _test_suite(image: str, timeout_s: float, test_timeout_s: float) -> Program:
    """The pytest job of a repository image of the catalog."""
    from images.catalog import get_spec

    spec = get_spec(image)
    if not spec.tests or not spec.project:
        raise click.UsageError(f"--tests: image {image!r} is not a repository image (it has no test suite)")
    package = spec.project.replace("-", "_").lower()
    return repository_tests_program(image, spec.tests, [package], timeout_s, test_timeout_s=test_timeout_s)


def _remove_if_untouched(out: Path) -> None:
    """Remove the output folder this harvest created when it holds nothing but its lock (a harvest
    refused before it started, e.g. an image that is not built), so a typo leaves nothing behind."""
    try:
        found = [p for p in out.rglob("*") if not p.is_dir()]
        if found == [out / LOCK_FILE]:
            shutil.rmtree(out)
    except OSError:
        pass


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One harvest per output folder at a time (the lock dies with the process)."""
    path = out / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorldtraceError(f"another harvest is writing to {out} right now") from None
        yield


def _harvest(
    units: list[WorkUnit],
    settings: HarvestSettings,
    out: Path,
    record: RunRecord,
    ray_address: str | None,
    num_cpus: int | None,
    silent: bool,
    started: float,
    recheck_fraction: float = 0.0,
) -> None:
    from harvest import recheck, runner, shard_io

    committed = shard_io.committed_shards(out)
    shard_io.check_no_overlap(out, units, committed)
    todo = [u for u in units if u.shard_name not in committed]
    done_before = [u for u in units if u.shard_name in committed]
    _remove_finished_work(out, committed)
    record.units_done_before = len(done_before)
    record.counts_before = shard_io.status_counts(out / u.shard_name for u in done_before)
    record.mismatches_before = shard_io.expected_output_mismatches(out / u.shard_name for u in done_before)
    # The determinism check: the sampled programs no earlier check of this folder judged.
    earlier = recheck.load_report(out) if recheck_fraction else None
    judged = recheck.verdicts(earlier)
    wanted = recheck.sample(units, recheck_fraction) if recheck_fraction else []
    checks = recheck.plan_recheck(units, settings, recheck.to_run(wanted, judged))
    recheck_dir = out / recheck.RECHECK_DIR
    checked = shard_io.committed_shards(recheck_dir) if checks else set()
    checks_todo = [c for c in checks if c.shard_name not in checked]
    if settings.sandbox == "docker":
        # With the embedded Ray, this engine runs every unit: a missing image is known now.
        images = sorted({u.image for u in todo + checks_todo}) if ray_address is None else []
        current = _prepare_docker(images, settings.backend)
        if todo and done_before:
            _warn_if_images_changed(out, {u.shard_name for u in done_before}, current)
    manifest = RunManifestWriter(out, record)
    manifest.write(force=True)

    def finish_recheck() -> None:
        if not recheck_fraction or not record.complete or record.recheck_failed:
            return
        runs = list(earlier["runs"]) if earlier else []
        if checks:
            judged.update(recheck.compare(out, units, checks))
            runs.append(record.run_id)
        data = recheck.report(judged, recheck_fraction, runs)
        recheck.write_report(out, data)
        record.recheck = recheck.summary(data, new=sum(len(c) for c in checks), sampled=len(wanted))

    if not todo and not checks_todo:
        finish_recheck()
        shard_io.merge_manifest(out)  # units commit only their own entries (a killed run merged none)
        record.finished_at = now()
        record.wall_time_s = time.monotonic() - started
        manifest.write(force=True)
        return

    progress: Any = None
    counts: dict[str, int] = {}

    def on_result(result: UnitResult) -> None:
        record.results.append(result)
        for status, n in result.counts.items():
            counts[status] = counts.get(status, 0) + n
        if progress is not None:
            failed = sum(n for s, n in counts.items() if s != "ok")
            progress.set_postfix(ok=counts.get("ok", 0), failed=failed, refresh=False)
            progress.update(result.n_programs)
        manifest.write()  # skipped while the last write is recent (its cost grows with the units)

    def on_failure(unit: WorkUnit, reason: str) -> None:
        record.failed_units.append({"unit_id": unit.unit_id, "image": unit.image, "error": reason})
        log.error("unit %s (%s, %d programs) failed: %s", unit.unit_id, unit.image, len(unit), reason)
        if progress is not None:
            progress.write(f"unit {unit.unit_id} failed: {reason}")

    # Ctrl-C or SIGTERM while Ray starts (seconds) is held until ray.init returns: raised inside
    # it, it left Ray half started, and the driver crashed on its way out (SIGSEGV). A second one
    # is not held (a start that hangs).
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if held:
            raise KeyboardInterrupt(f"signal {signum}")
        held.append(signum)

    main = _main_thread()
    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        started_ray = runner.start_ray(runner.RayOptions(address=ray_address, num_cpus=num_cpus), settings.sandbox)
    except BaseException as exc:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        # The manifest already says this run started: it says why it ended, too.
        interrupted = isinstance(exc, KeyboardInterrupt)
        record.interrupted = interrupted
        record.error = None if interrupted else str(exc)
        record.finished_at = now()
        record.wall_time_s = time.monotonic() - started
        manifest.write(force=True)
        if not interrupted:
            raise
        runner.stop_ray()
        raise click.ClickException("interrupted; re-run the same command to resume where it stopped") from None
    record.startup_s = time.monotonic() - started
    # SIGTERM (a scheduler, `kill`, `timeout`) ends the harvest as Ctrl-C does: containers removed,
    # the record marked interrupted. Installed after ray.init, which sets its own handler.
    previous_term = previous.get(signal.SIGTERM)
    if main:
        signal.signal(signal.SIGINT, previous[signal.SIGINT])
        signal.signal(signal.SIGTERM, _interrupt)

    checking = False  # in the determinism check: the harvest itself is complete

    def on_interrupt() -> None:
        # Said and saved at once, before the tasks in flight are cancelled and Ray shut down:
        # either can end the process in Ray's own code ("An unexpected system state...").
        if checking:
            if not record.recheck_failed:
                record.recheck_failed.append({"error": "interrupted"})
                click.echo("interrupted: stopping the determinism check; re-run the same command to finish it",
                           err=True)
                manifest.write(force=True)
        elif not record.interrupted:
            record.interrupted = True
            click.echo("interrupted: stopping; re-run the same command to resume where it stopped", err=True)
            manifest.write(force=True)

    def on_recheck_result(result: UnitResult) -> None:
        if progress is not None:
            progress.update(result.n_programs)

    def on_recheck_failure(unit: WorkUnit, reason: str) -> None:
        record.recheck_failed.append({"unit_id": unit.unit_id, "image": unit.image, "error": reason})
        log.error("unit %s of the determinism check (%d programs) failed: %s", unit.unit_id, len(unit), reason)
        if progress is not None:
            progress.write(f"unit {unit.unit_id} of the determinism check failed: {reason}")

    try:
        if settings.sandbox == "docker" and ray_address is not None:
            # On a cluster every node with Docker slots may run any unit: check their engines now.
            runner.check_docker_nodes(sorted({u.image for u in todo + checks_todo}), settings.backend)
        if held:
            raise KeyboardInterrupt(f"signal {held[0]}")  # held while Ray started
        progress = _progress_bar(sum(len(u) for u in todo + checks_todo), silent)
        if todo:
            runner.run_units(todo, settings, out, record.run_id, on_result, on_failure, on_interrupt=on_interrupt)
        if checks_todo and record.complete:  # the harvest's own traces first: they are compared against
            checking = True
            recheck_dir.mkdir(parents=True, exist_ok=True)
            runner.run_units(checks_todo, settings, recheck_dir, record.run_id, on_recheck_result,
                             on_recheck_failure, on_interrupt=on_interrupt)
        finish_recheck()
    except KeyboardInterrupt:
        on_interrupt()
        if settings.sandbox == "docker":
            _reap_run(record.run_id)
        raise click.ClickException("interrupted; re-run the same command to resume where it stopped") from None
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, WorldtraceError) else str(exc)
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if progress is not None:
            progress.close()
        record.finished_at = now()
        record.wall_time_s = time.monotonic() - started
        try:
            shard_io.merge_manifest(out)  # the units committed only their own entries
            manifest.write(force=True)  # a full or removed --out fails here too: still clean up
        finally:
            if started_ray:
                runner.stop_ray()
            if settings.sandbox == "docker":
                # Once no task of the run is left: containers whose owner could not remove them
                # (the engine was lost and came back, the worker was killed or cancelled).
                _reap_run(record.run_id)


def _remove_finished_work(out: Path, committed: set[str]) -> None:
    """Remove the work folders of units whose shards are committed: a unit whose worker was killed
    (Ctrl-C cancels the units in flight; a killed driver takes its workers) between committing its
    shard and removing its folder left it, a copy of its traces, and no later run redoes the unit."""
    from harvest.unit import WORK_DIR

    work = out / WORK_DIR
    try:
        names = [p.name for p in work.iterdir()]  # the units in flight or left: not all units
    except FileNotFoundError:
        return
    for name in names:
        if shard_name(name) in committed:
            shutil.rmtree(work / name, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _progress_bar(total: int, silent: bool) -> Any:
    """A tqdm bar on stderr, or None when silent or stderr is not a terminal."""
    if silent or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    width = shutil.get_terminal_size((100, 20)).columns  # falls back when the tty reports 0
    return tqdm(total=total, unit="program", desc="harvest", file=sys.stderr, ncols=min(width, 120))


def _prepare_docker(images: list[str], backend: str) -> dict[str, str]:
    """Remove containers of dead harvests; check that `images` are on this engine and that the
    images of your own among them can run the tracer. Returns the image id of each."""
    from harvest.sandbox.docker import DockerSandbox

    docker = DockerSandbox(reap_on_start=False)
    try:
        removed = docker.reap()
        problems = docker.image_problems(images, backend)
        ids = {} if problems else docker.image_ids(images)
    finally:
        docker.close()
    if removed:
        log.warning("removed %d containers left behind by dead harvests", removed)
    if problems:
        raise WorldtraceError("; ".join(problems))
    return ids


def _warn_if_images_changed(out: Path, done_shards: set[str], current: dict[str, str]) -> None:
    """Say so when an image is other content now than the units done before in `out` ran in (a tag
    of your own moved to a rebuilt image; a catalog image rebuilt from a changed recipe): resuming
    mixes traces of both under one name."""
    from harvest.run_manifest import recorded_image_ids
    from images.catalog import load_catalog

    recorded = recorded_image_ids(out, done_shards)
    catalog = load_catalog()
    for image, image_id in sorted(current.items()):
        earlier = recorded.get(image, set())
        if not earlier or image_id in earlier:
            continue
        if image in catalog:
            cause, advice = f"catalog image {image!r} is {image_id} now (its recipe changed since)", ""
        else:
            cause = f"image {image!r} is {image_id} now"
            advice = f", or name the image the earlier units ran in (--image {sorted(earlier)[0]})"
        log.warning(
            "%s, but the units done before in %s ran in %s: the traces this run adds under that name come "
            "from other content. To keep one image per folder, harvest into another --out%s",
            cause, out, ", ".join(sorted(earlier)), advice,
        )  # fmt: skip


def _reap_run(run_id: str) -> None:
    """Remove every container of the run on this engine: what a lost engine, a killed Ray worker or
    a cancelled task left behind. An engine that does not answer is left to the next harvest's
    start (it removes containers whose owner process is gone): a health probe first, so that a
    stalled engine holds the end of a harvest for seconds, and each call then has the control
    calls' timeout (`WORLDTRACE_ENGINE_TIMEOUT_S`)."""
    from harvest.docker_client import engine_address, engine_available, probe_timeout_s
    from harvest.sandbox.docker import DockerSandbox

    if not engine_available():
        log.warning(
            "could not remove the containers of run %s (the next harvest here will): the Docker engine at %s "
            "does not answer a ping within %g s", run_id, engine_address(), probe_timeout_s(),
        )  # fmt: skip
        return
    try:
        removed = DockerSandbox(reap_on_start=False).reap(run_id)
    except WorldtraceError as exc:
        log.warning("could not remove the containers of run %s (the next harvest here will): %s", run_id, exc)
        return
    if removed:
        log.warning("removed %d container(s) of this run that its units left behind", removed)


def _summary(record: RunRecord, out: Path) -> str:
    data = record.to_json()
    lines = []
    counts = data["counts"]
    total = sum(counts.values())
    lines.append("")
    lines.append(f"{'status':<12}{'traces':>10}")
    for status, n in counts.items():
        lines.append(f"{status:<12}{n:>10}")
    lines.append(f"{'total':<12}{total:>10}")
    lines.append("")
    units = data["units"]
    timing = data["timing"]
    lines.append(
        f"units: {units['planned']} planned, {units['done_before']} done before, {units['ran']} ran, "
        f"{units['failed']} failed; images: {', '.join(f'{k} ({v})' for k, v in data['images'].items())}"
    )
    if record.results:
        traces, programs = record.traces_this_run, record.programs_this_run
        of = f" of {programs} program{'s' if programs != 1 else ''}" if traces != programs else ""
        lines.append(
            f"this run: {traces} traces{of} in {timing['wall_time_s']:.1f} s "
            f"({timing['traces_per_s']:.1f} traces/s after {timing['startup_s']:.1f} s start-up) "
            f"on {len(data['nodes'])} node(s)"
        )
    confinement = data["confinement"]
    if confinement["units_unconfined"]:
        lines.append(
            f"WARNING: in {confinement['units_unconfined']} unit(s) the programs ran without Landlock confinement "
            f"({'; '.join(confinement['why_unconfined'])}): they could write the unit's stream and signal its runner"
        )
    turned_off = data["immortal_heap"]["turned_off"]
    if turned_off:
        images = sorted({off["image"] for off in turned_off})
        lines.append(
            f"WARNING: in {len(turned_off)} unit(s) a program crashed on the batch runner's immortal heap and not on "
            f"a mortal one ({turned_off[0]['why']}); those runners went on with a mortal heap and the rows are "
            f"the mortal runs'. The immortal heap does not fit the Python of {', '.join(images)}: please report it "
            f"(WORLDTRACE_IMMORTAL_HEAP=0 in the image's environment turns it off)"
        )
    if record.recheck is not None:
        check = record.recheck
        if not check["sampled"]:
            lines.append(f"determinism: no program of this harvest is in the --recheck sample ({check['fraction']:g})")
        lines.append(
            f"determinism: {check['identical']} of {check['rechecked']} programs run again traced identically, "
            f"{check['nondeterministic']} differently, {check['not_compared']} not compared "
            f"({check['rechecked_this_run']} checked by this run; {out}/{check['report']})"
        )
    if data["expected_output_mismatches"]:
        lines.append(f"results differing from the expected output (a call's return value, a script's stdout): {data['expected_output_mismatches']}")
    lines.append("")
    lines.append(f"shards are in {out}/ (manifest: {out}/_manifest.json, run: {out}/harvest-run.json)")
    lines.append("look at them with:")
    worldtrace = _invocation()
    lines.append(f"  {worldtrace} inspect {out}")
    lines.append(f"  {worldtrace} query {out} \"SELECT status, count(*) FROM traces GROUP BY status\"")
    lines.append(f"  {worldtrace} validate {out}")
    return "\n".join(lines)


def _invocation() -> str:
    """How to run worldtrace again from here: its name, or the path this run was started by when
    the name is not on PATH (the README runs `.venv/bin/worldtrace`)."""
    started_as = sys.argv[0]
    if shutil.which("worldtrace") or Path(started_as).name != "worldtrace":
        return "worldtrace"
    return started_as
