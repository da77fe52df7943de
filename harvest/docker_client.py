"""One Docker SDK client per process and socket timeout, with a clear error when no engine answers.

Two timeouts (harvest-failure-modes #5 and #6). Control calls of the harvest (create, start,
inspect, remove, list, image checks) get `engine_timeout_s()`, 60 s unless
$WORLDTRACE_ENGINE_TIMEOUT_S says otherwise: they take milliseconds to seconds, so an engine that
does not answer one within that is stalled (SIGSTOPped, deadlocked) or too overloaded to use, and
it is an engine error, never a program's failure. Waits on containers pass their own timeout (the
unit's deadline); image builds, loads and saves keep the long `DEFAULT_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from harvest.errors import EngineError

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

# For image builds, loads and saves, which may stream nothing for minutes.
DEFAULT_TIMEOUT_S = 900.0
# For the harvest's control calls (see above); a unit's container wait passes its own timeout.
ENGINE_TIMEOUT_S = 60.0
ENGINE_TIMEOUT_ENV = "WORLDTRACE_ENGINE_TIMEOUT_S"
# A health probe (a ping) gets this long, or the control calls' timeout if that is shorter.
PROBE_TIMEOUT_S = 5.0
# Bounded connection pool (harvest-failure-modes #13).
MAX_POOL_SIZE = 16

_lock = threading.Lock()
_clients: dict[tuple[int, float], docker.DockerClient] = {}


def engine_timeout_s() -> float:
    """The control calls' socket timeout: $WORLDTRACE_ENGINE_TIMEOUT_S, or 60 s."""
    text = os.environ.get(ENGINE_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else ENGINE_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        log.warning("%s=%r is not a positive number of seconds; using %g s", ENGINE_TIMEOUT_ENV, text, ENGINE_TIMEOUT_S)
        return ENGINE_TIMEOUT_S
    return value


def probe_timeout_s() -> float:
    return min(PROBE_TIMEOUT_S, engine_timeout_s())


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

    probe = min(timeout_s, probe_timeout_s())
    try:
        # The first ping is a health probe: a stalled engine is known in seconds, not minutes.
        client = docker.from_env(timeout=probe, max_pool_size=MAX_POOL_SIZE)
        if engine_address().startswith("unix://"):
            # requests looks for proxies, .netrc entries and CA bundles in the environment at
            # every call (a third of a control call's CPU); none of them applies to a Unix socket.
            client.api.trust_env = False
        client.ping()
    except (DockerException, RequestException) as exc:
        if timed_out(exc):
            raise EngineError(
                f"the Docker engine at {engine_address()} does not answer a ping within {probe:g} s "
                "(stalled or overloaded); its socket accepts connections, but nothing replies"
            ) from exc
        raise EngineError(
            f"no Docker engine answers at {engine_address()} ({root_cause(exc)}); "
            "start one with `bash scripts/setup-docker.sh`"
        ) from exc
    client.api.timeout = timeout_s  # every later request's default (a wait passes its own)
    return client


def timed_out(exc: BaseException) -> bool:
    """Whether an SDK or HTTP error is a socket timeout (the engine accepted the request, and then
    said nothing), not a refused connection or an answer."""
    from requests.exceptions import Timeout
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    return any(isinstance(cause, Timeout | Urllib3Timeout | TimeoutError) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error nested in it, once each: requests and urllib3 keep the socket's error
    in their errors' arguments and `reason`, besides the usual cause and context."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(current.args)
        pending.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))


def engine_address() -> str:
    """Where the client looks for the engine: $DOCKER_HOST, or the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def root_cause(exc: BaseException) -> str:
    """The innermost system error behind an SDK or HTTP error ('Connection refused'), else the error.

    requests and urllib3 nest the socket's error in the arguments of their own errors, so their
    text is a tuple of reprs; the system's own words are what tells a user the engine is gone.
    """
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause.strerror)
    return str(exc)


def engine_available(timeout_s: float | None = None) -> bool:
    """Whether a Docker engine answers a ping within `timeout_s` (default: 5 s, or the control
    calls' timeout if shorter): a health probe, False quickly when the daemon stalls."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        get_client(probe_timeout_s() if timeout_s is None else timeout_s).ping()
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
