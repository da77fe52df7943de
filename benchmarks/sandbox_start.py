"""What one sandbox costs before any program runs: a DockerSandbox unit with an empty jobs file
(create + start + the batch runner's start-up + wait + remove), side by side with a bare
`docker run true` (the engine's floor) and a LocalSandbox unit (a host subprocess).

    python benchmarks/sandbox_start.py [--repeat 10] [--image base-py311]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from harvest.docker_client import get_client
from harvest.sandbox import UnitRequest
from harvest.sandbox.docker import DockerSandbox
from harvest.sandbox.local import LocalSandbox


def _measure(repeat: int, fn: Callable[[int], object]) -> list[float]:
    fn(-1)  # warm-up: page cache, image layers
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--image", default="base-py311")
    args = parser.parse_args()

    client = get_client()
    docker_sandbox = DockerSandbox(client)
    tag = docker_sandbox.resolve_image(args.image)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        jobs = Path(tmp) / "jobs.jsonl"
        jobs.write_text("")

        def request(i: int) -> UnitRequest:
            return UnitRequest(
                run_id, f"u{i + 1}", 0, args.image, jobs, Path(tmp) / f"out{i + 1}" / "s.jsonl"
            )

        rows = {
            "docker run true (engine floor)": _measure(
                args.repeat,
                lambda i: client.containers.run(tag, ["true"], network_mode="none", remove=True),
            ),
            "DockerSandbox unit, no programs": _measure(
                args.repeat, lambda i: docker_sandbox.run_unit(request(i))
            ),
            "LocalSandbox unit, no programs": _measure(
                args.repeat, lambda i: LocalSandbox().run_unit(request(i))
            ),
        }
    print(
        f"{'what':36} {'median ms':>10} {'mean ms':>10} {'min ms':>8}   (n={args.repeat}, {args.image})"
    )
    for name, times in rows.items():
        print(
            f"{name:36} {statistics.median(times) * 1e3:10.0f} {statistics.mean(times) * 1e3:10.0f}"
            f" {min(times) * 1e3:8.0f}"
        )
    floor = statistics.median(rows["docker run true (engine floor)"])
    unit = statistics.median(rows["DockerSandbox unit, no programs"])
    print(f"DockerSandbox / docker run true: {unit / floor:.2f}x")


if __name__ == "__main__":
    main()
