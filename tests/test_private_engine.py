"""The tests' private Docker engine leaves the host's own engine as it found it."""

from __future__ import annotations

import os

import pytest

from tests.private_engine import PrivateEngine

pytestmark = [pytest.mark.docker]


def _interfaces() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_a_private_engine_keeps_the_hosts_network_interfaces(docker_engine: None) -> None:
    """A dockerd started with --bridge=none deleted the host's docker0: afterwards the system
    engine's default network was gone (`docker build` with a RUN step: "could not find bridge
    docker0") until it was restarted."""
    before = _interfaces()
    engine = PrivateEngine()
    try:
        engine.start()
        assert engine.answers()
        assert _interfaces() >= before
    finally:
        engine.close()
    assert _interfaces() >= before
