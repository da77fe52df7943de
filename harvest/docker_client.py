"""One Docker SDK client per process, with a socket timeout and a clear error when no engine answers."""

from __future__ import annotations

import os
import threading
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

    try:
        client = docker.from_env(timeout=int(timeout_s), max_pool_size=MAX_POOL_SIZE)
        client.ping()
    except DockerException as exc:
        raise EngineError(
            f"no Docker engine answers ({exc}); start one with `bash scripts/setup-docker.sh`"
        ) from exc
    return client


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


def engine_platform(client: docker.DockerClient | None = None) -> str:
    """The engine's platform in catalog form, e.g. `linux/amd64`."""
    info = (client or get_client()).version()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info.get("Arch", ""), info.get("Arch", ""))
    return f"{info.get('Os', 'linux')}/{arch}"
