"""A Docker engine of the test's own (a second dockerd), to kill, restart, pause and starve at will.

The system engine is shared: a test never stops or reconfigures it. `PrivateEngine` starts another
dockerd with its own socket, data root, exec root (and so its own containerd), no bridge network and
no iptables rules, in a short folder under /tmp; `close()` stops it and removes the folder. Tests
that use it skip (with the reason) where a second daemon cannot start: not root, no dockerd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0


class PrivateEngine:
    """A dockerd we started; `host` is its DOCKER_HOST."""

    def __init__(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            pytest.skip("a private Docker engine needs root and dockerd")
        self.dockerd = dockerd
        # Short: the exec root holds containerd's socket (a unix socket path has ~100 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="wt-engine-", dir="/tmp"))
        self.host = f"unix://{self.root}/docker.sock"
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("a private Docker engine needs `unshare` (util-linux) for a network namespace of its own")
        self.netns = [unshare, "--net", "--"]

    def start(self) -> None:
        """Start the daemon (again) and wait until it answers; skip the test if it cannot."""
        if not self._launch():
            pytest.skip(f"a private Docker engine did not start:\n{self.log.read_text(errors='replace')[-6000:]}")

    def _launch(self) -> bool:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    # In a network namespace of its own: a dockerd started with --bridge=none
                    # deletes the host's docker0, which broke the system engine's default
                    # network (`docker run`, `docker build` with RUN) until it was restarted.
                    *self.netns,
                    self.dockerd,
                    f"--host={self.host}",
                    f"--data-root={self.root / 'data'}",
                    f"--exec-root={self.root / 'x'}",
                    f"--pidfile={self.root / 'dockerd.pid'}",
                    "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                    f"--cgroup-parent=/{self.root.name}",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)  # polling the new daemon's socket until it answers
        return True

    def answers(self) -> bool:
        done = subprocess.run(["docker", "-H", self.host, "version"], capture_output=True, timeout=30)
        return done.returncode == 0

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would (its containers' shims live on)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        # Its containerd dies with it (a parent-death signal), a moment later. Until then, and while
        # it is a zombie nobody reaped, a new daemon would take it for alive and wait on it in vain.
        pidfile = self.root / "x" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            _wait_until_dead(int(pidfile.read_text().strip()))
        pidfile.unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP the daemon and its containerd, as a deadlock would: their sockets still accept
        connections, and nothing answers (the containers, children of their shims, run on)."""
        for pid in self._daemon_pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        for pid in reversed(self._daemon_pids()):
            os.kill(pid, signal.SIGCONT)

    def _daemon_pids(self) -> list[int]:
        assert self.proc is not None and self.proc.poll() is None
        pids = [self.proc.pid]
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((self.root / "x" / "containerd" / "containerd.pid").read_text().strip()))
        return pids

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(["docker", "-H", self.host, *args], input=stdin, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    def load_from_system_engine(self, tag: str) -> None:
        """Copy an image of the system engine into this one (`docker save | docker load`)."""
        image = subprocess.run(["docker", "save", tag], capture_output=True, check=True, timeout=300).stdout
        self.docker("load", stdin=image)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), "DOCKER_HOST": self.host}

    def close(self) -> None:
        """Stop the daemon (started once more if it was killed: it removes what its containers
        left), then remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused daemon would not stop
        if self.proc is not None and self.proc.returncode == -signal.SIGKILL:
            self._launch()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # What a killed daemon can leave that a new one does not clean: container shims (holding our
        # exec root in their command line) and a container caught half-created ('runc init', in
        # our --cgroup-parent). All were started by this engine; they are ended by their pids.
        ours = set(_pids_in_cgroups(self.root.name)) | set(_pids_naming(str(self.root)))
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount in reversed(_mounts_under(self.root)):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        for cgroup in Path("/sys/fs/cgroup").glob(f"*/{self.root.name}"):
            for folder in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):  # a process just killed may not have left yet
                    folder.rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(root))]


def _pids_in_cgroups(name: str) -> list[int]:
    """Processes in the cgroup folders named `name` (the engine's --cgroup-parent) and below."""
    pids = []
    for procs in Path("/sys/fs/cgroup").glob(f"*/{name}/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.extend(int(pid) for pid in procs.read_text().split())
    return pids


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (a folder only this engine uses)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def _wait_until_dead(pid: int, timeout_s: float = 30.0) -> None:
    """Until `pid` has exited (gone, or a zombie)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.05)  # polling the dying process's state
