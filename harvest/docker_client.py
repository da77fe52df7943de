"""One Docker SDK client per process, with a socket timeout and a clear error when no engine answers."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from harvest.errors import EngineError

if TYPE_CHECKING:
    import docker

# Longer than any unit deadline: a client timeout shorter than the run silently turns slow units
# into failures (harvest-failure-modes #6). Waits on containers pass their own, longer, timeout.
DEFAULT_TIMEOUT_S = 900.0
# Bounded connection pool (harvest-failure-modes #13).
MAX_POOL_SIZE = 16

_lock = threading.Lock()
_clients: dict[tuple[int, float], docker.DockerClient] = {}


def get_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> docker.DockerClient:
    """This process's Docker client (created on first use; forked children get their own)."""
    key = (os.getpid(), float(timeout_s))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _connect(timeout_s)
            _clients[key] = client
        return client


def _connect(timeout_s: float) -> docker.DockerClient:
    import docker
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        client = docker.from_env(timeout=int(timeout_s), max_pool_size=MAX_POOL_SIZE)
        client.ping()
    except (DockerException, RequestException) as exc:
        raise EngineError(
            f"no Docker engine answers at {engine_address()} ({root_cause(exc)}); "
            "start one with `bash scripts/setup-docker.sh`"
        ) from exc
    return client


def engine_address() -> str:
    """Where the client looks for the engine: $DOCKER_HOST, or the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def root_cause(exc: BaseException) -> str:
    """The innermost system error behind an SDK or HTTP error ('Connection refused'), else the error.

    requests and urllib3 nest the socket's error in the arguments of their own errors, so their
    text is a tuple of reprs; the system's own words are what tells a user the engine is gone.
    """
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return str(current.strerror)
        pending.extend(current.args)
        pending.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))
    return str(exc)


PROBE_TIMEOUT_S = 5.0


def engine_available(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a Docker engine answers a ping within `timeout_s` (a health probe: a stalled daemon
    answers False quickly instead of hanging the caller)."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        get_client(timeout_s).ping()
    except (EngineError, DockerException, RequestException):
        return False
    return True


def wait_for_engine(timeout_s: float, interval_s: float = 1.0) -> bool:
    """Probe the engine until it answers or `timeout_s` have passed; whether it answers."""
    deadline = time.monotonic() + timeout_s
    while not engine_available():
        if time.monotonic() + interval_s > deadline:
            return False
        time.sleep(interval_s)  # a health probe's pace, not a synchronisation
    return True


def engine_platform(client: docker.DockerClient | None = None) -> str:
    """The engine's platform in catalog form, e.g. `linux/amd64`."""
    info = (client or get_client()).version()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info.get("Arch", ""), info.get("Arch", ""))
    return f"{info.get('Os', 'linux')}/{arch}"
