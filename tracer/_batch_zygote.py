"""The batch runner's fork server ("zygote"): a warm process whose only job is to fork programs.

Why a process of its own: `fork()` write-protects every writable page of the process that forks,
so every page that process writes afterwards is copied on its next touch (a page fault of several
microseconds on a VM). The runner does the per-program work (pipes, deadlines, decoding the report,
writing the output); when it also forked, it paid ~300 such faults per program. The zygote is
forked once from the warm runner, touches a few dozen pages per program, and the runner, which
no longer forks, pays none.

Protocol over a socketpair:
- runner -> zygote: one request per program: `!I` length + payload (opaque to the zygote; the
  child decodes it), with the child's three pipe write ends attached as SCM_RIGHTS. The runner
  sends the next request only after the current program is over.
- zygote -> runner: fixed frames `!cidq` (kind, pid, x, n):
  `F` forked (pid, fork seconds; pid -1: fork failed with errno n),
  `X` a child ended (pid, wait status as x, its maxrss in KiB as n),
  `E` the zygote's own CPU seconds (x) and minor faults (n), sent as it exits.
The zygote exits (killing what is left of its children) when the runner closes its end, and is
SIGKILLed when the runner dies (`PR_SET_PDEATHSIG`), which in turn kills the running program.

Scratch directories (`--scratch`, the sandbox's /tmp and /dev/shm): the zygote empties them when it
starts and after each program, once what the program left running is dead and before it forks the
next one, so no program sees what another wrote there.
"""

from __future__ import annotations

import array
import os
import select
import shutil
import socket
import struct
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

from tracer._batch_child import LIBC, close_inherited_fds, prctl, prepare_std_streams
from tracer._immortal import immortalize_heap

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)

FRAME = struct.Struct("!cidq")
REQUEST_HEADER = struct.Struct("!I")
N_FDS = 3  # the child's stdout, stderr and report pipes
FIRST_READ = 1 << 13  # most requests fit; a smaller buffer is fewer pages to touch
FORK_RETRY_S = 5.0  # how long a fork that fails with EAGAIN (pids exhausted) is retried
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_SERVER_FAILED = 71

# child side: (payload, pipe write ends, the zygote's pid) -> never returns
StartChild = Callable[[bytes, List[int], int], None]
Message = Tuple[bytes, int, float, int]


def fast_fork() -> Callable[[], int]:
    """libc's fork() without the interpreter's after-fork work, where that is safe; else os.fork.

    `os.fork()` runs the at-fork hooks of every imported module in the child (threading's
    `_after_fork`, logging's lock re-initialisation, random's reseed) and re-initialises the
    interpreter's thread state: ~80 more pages to copy per program. None of it is needed when the
    forking process has a single thread (no lock can be held by another thread, and the runner
    seeds `random` itself), which the zygote checks; programs that fork still use os.fork.
    """
    import threading

    if threading.active_count() != 1 or not sys.platform.startswith("linux"):
        return os.fork
    try:
        import ctypes

        libc_fork = ctypes.PyDLL(None).fork  # PyDLL: called with the GIL held, no thread switch
        libc_fork.restype = ctypes.c_int
        libc_fork.argtypes = []
    except (ImportError, OSError, AttributeError):
        return os.fork

    def fork() -> int:
        pid = int(libc_fork())
        if pid < 0:
            import ctypes

            err = ctypes.get_errno() or 11  # EAGAIN when libc did not say
            raise OSError(err, os.strerror(err))
        return pid

    return fork


def serve(
    sock: socket.socket,
    runner_pid: int,
    start_child: StartChild,
    scratch: Sequence[str] = (),
    private_ipc: bool = False,
    immortal: bool = False,
) -> None:
    """The zygote's whole life (in the process forked from the runner). Never returns.

    One program at a time: fork it, wait for its end, report, kill what it left behind, empty the
    scratch directories. The loop is kept short on purpose: every page it writes is copied once
    per fork.
    """
    code = EXIT_SERVER_FAILED
    try:
        prctl(PR_SET_PDEATHSIG, 9)  # SIGKILL when the runner dies
        if os.getppid() != runner_pid:
            os._exit(code)
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # what a program's daemons leave behind comes here
        close_inherited_fds([0, 1, 2, sock.fileno()])  # the runner's output file above all
        me = os.getpid()
        fork = fast_fork()
        buf = bytearray(FIRST_READ)
        ancillary = socket.CMSG_SPACE(N_FDS * array.array("i").itemsize)
        for folder in scratch:  # a zygote that replaces a dead one: its program's files go too
            empty_dir(folder)
        if private_ipc:
            remove_sysv_ipc()
        if immortal:  # before the streams: what the programs get as new stays mortal
            try:
                immortalize_heap()
            except Exception:  # e.g. MemoryError half-way: a heap left (partly) mortal is only slower
                pass
        prepare_std_streams()  # once: every child gets them as new (copy-on-write)
        release_free_heap()
        while True:
            request = _recv_request(sock, buf, ancillary)
            if request is None:  # the runner is done (or gone)
                break
            payload, fds = request
            t0 = time.perf_counter()
            try:
                pid = _fork_retrying(fork)
            except OSError as exc:
                _close_all(fds)
                sock.sendall(FRAME.pack(b"F", -1, 0.0, exc.errno or 0))
                continue
            if pid == 0:
                start_child(payload, fds, me)  # never returns
                os._exit(EXIT_SERVER_FAILED)
            forked = time.perf_counter() - t0
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child did it first, or already exited
            _close_all(fds)
            sock.sendall(FRAME.pack(b"F", pid, forked, 0))
            _, status, usage = os.wait4(pid, 0)  # the runner kills it at its deadline
            _kill_group(pid)  # what it left in its process group (before the runner reuses anything)
            sock.sendall(FRAME.pack(b"X", pid, float(status), usage.ru_maxrss))
            _kill_children(me)  # what the program left behind (reparented here)
            for folder in scratch:
                empty_dir(folder)
            if private_ipc:
                remove_sysv_ipc()
        code = 0
    except BaseException:  # SIGTERM's SystemExit, a broken socket: end here, never in the runner's code
        pass
    finally:
        try:
            _kill_children(os.getpid())
            times = os.times()
            import resource

            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            sock.sendall(FRAME.pack(b"E", 0, times[0] + times[1], faults))
        except BaseException:
            pass
        os._exit(code)


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim; nothing elsewhere).

    Each fork copies, and each child's exit tears down, an entry for every page this process
    has mapped: ~1.3 MB fewer on 3.13 (the runner's freed memory) is ~0.5 ms less per program.
    """
    trim = getattr(LIBC, "malloc_trim", None) if LIBC is not None else None
    if trim is not None:
        try:
            trim(0)
        except (OSError, TypeError, ValueError):
            pass


def _fork_retrying(fork: Callable[[], int]) -> int:
    delay = 0.005
    deadline = time.monotonic() + FORK_RETRY_S
    while True:
        try:
            return fork()
        except BlockingIOError:  # EAGAIN: process limit reached (a program's leftovers dying)
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)  # back-off while the kernel releases the killed processes
            delay = min(delay * 2, 0.2)


def _kill_children(me: int) -> None:
    """SIGKILL and reap every child of this process (programs and the orphans reparented here)."""
    path = "/proc/self/task/%d/children" % me
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDONLY)  # no file object: this runs once per program
            try:
                pids = [int(p) for p in os.read(fd, 1 << 16).split()]
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return
        if not pids:
            return
        kill_and_reap(pids)


_IPC_RMID = 0
# /proc/sysvipc file, its id column, and how to remove one object of that kind with libc
_IPC_KINDS = (
    ("shm", "shmid", lambda libc, ipc_id: libc.shmctl(ipc_id, _IPC_RMID, None)),
    ("msg", "msqid", lambda libc, ipc_id: libc.msgctl(ipc_id, _IPC_RMID, None)),
    ("sem", "semid", lambda libc, ipc_id: libc.semctl(ipc_id, 0, _IPC_RMID)),
)


def remove_sysv_ipc() -> None:
    """Remove every System V shared memory segment, message queue and semaphore set (what a
    program left: they outlive it, the next programs would see them, and their memory counts
    against the sandbox). Every one, whatever its owner says (a program can hand an object to
    another uid with IPC_SET; it stays its creator's to remove): so only in an IPC namespace of
    the sandbox's own (`--private-ipc`), never on a shared host. Never raises."""
    libc = None
    for kind, id_column, remove in _IPC_KINDS:
        try:  # raw reads: this runs after every program, and every page the zygote writes is copied
            fd = os.open("/proc/sysvipc/" + kind, os.O_RDONLY)
            try:
                data = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
        except OSError:
            continue
        lines = data.decode("ascii", "replace").splitlines()
        if len(lines) < 2:  # the header alone: the usual case, no libc needed
            continue
        try:
            if libc is None:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
            at_id = lines[0].split().index(id_column)
            for line in lines[1:]:
                remove(libc, int(line.split()[at_id]))
        except (ValueError, IndexError, OSError, AttributeError):
            continue


def empty_dir(path: str) -> None:
    """Remove what is in `path` (not `path` itself), as far as this process may; never raises.

    Directories the program made unreadable or unwritable are opened up first (it owned them);
    symbolic links are removed, never followed.
    """
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = os.path.join(path, name)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                _open_up(full)
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
        except (OSError, RecursionError):
            pass


def _open_up(top: str) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            os.chmod(folder, 0o700)
            with os.scandir(folder) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass


def kill_and_reap(pids) -> None:
    """SIGKILL each of ``pids`` (children of this process), then reap them."""
    for pid in pids:
        try:
            os.kill(pid, 9)  # SIGKILL
        except OSError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)  # SIGKILL
    except OSError:
        pass  # nothing left in it


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _recv_request(
    sock: socket.socket, buf: bytearray, ancillary: int
) -> Optional[Tuple[bytes, List[int]]]:
    """One request: (payload, the attached fds); None when the runner closed its end."""
    fds = array.array("i")
    try:
        n, ancdata, flags, _ = sock.recvmsg_into([buf], ancillary)
    except (ConnectionError, OSError):
        return None
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    if n == 0:
        _close_all(list(fds))
        return None
    data = buf[:n]
    while len(data) < REQUEST_HEADER.size or len(data) < REQUEST_HEADER.size + _length(data):
        more = sock.recv(FIRST_READ)
        if not more:
            _close_all(list(fds))
            return None
        data += more
    if flags & getattr(socket, "MSG_CTRUNC", 0) or len(fds) != N_FDS:
        _close_all(list(fds))
        raise OSError("a request came without its %d pipes" % N_FDS)
    return bytes(data[REQUEST_HEADER.size :]), list(fds)


def _length(buf: bytearray) -> int:
    return int(REQUEST_HEADER.unpack_from(buf)[0])


class Zygote(object):
    """The runner's handle on its zygote: start it, send requests, read its frames."""

    def __init__(
        self, start_child: StartChild, scratch: Sequence[str] = (), private_ipc: bool = False, immortal: bool = False
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        runner = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            serve(theirs, runner, start_child, scratch, private_ipc, immortal)  # never returns
            os._exit(EXIT_SERVER_FAILED)
        theirs.close()
        self.pid = pid
        self.immortal = immortal  # its heap is (or is being made) immortal: tracer/_immortal.py
        self.sock = ours
        self.alive = True
        self.usage: Optional[Tuple[float, int]] = None  # (CPU seconds, faults), from its `E` frame
        self._buf = bytearray()
        # Frames read along with the one `wait_for` waited for (a child that ended at once has
        # its `X` arrive with its `F`): `read` hands them out first.
        self.pending: List[Message] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def request(self, payload: bytes, fds: List[int]) -> None:
        """Ask for one child; raises OSError when the zygote is gone."""
        data = REQUEST_HEADER.pack(len(payload)) + payload
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = self.sock.sendmsg([data], ancillary)
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def read(self, timeout: Optional[float] = 0.0) -> List[Message]:
        """The frames that arrived (waiting up to `timeout` for the first; None: no limit).

        After the zygote has gone (EOF), `alive` is False and the list holds what it sent last.
        """
        if self.pending:
            frames, self.pending = self.pending, []
            return frames
        if not self.alive:
            return []
        if timeout is None or timeout > 0:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return []
        try:
            chunk = self.sock.recv(FIRST_READ)
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            self.alive = False
        self._buf += chunk
        frames: List[Message] = []
        while len(self._buf) >= FRAME.size:
            kind, pid, x, n = FRAME.unpack_from(self._buf)
            del self._buf[: FRAME.size]
            if kind == b"E":
                self.usage = (x, n)
            else:
                frames.append((kind, pid, x, n))
        return frames

    def wait_for(self, kind: bytes, pid: int = 0, timeout: float = 60.0) -> Optional[Message]:
        """Block until a frame of `kind` (for `pid`, if given) arrives; None if the zygote went away."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self.read(timeout=max(0.0, deadline - time.monotonic()))
            for i, frame in enumerate(frames):
                if frame[0] == kind and (not pid or frame[1] == pid):
                    self.pending = frames[i + 1 :]
                    return frame
            if not self.alive or time.monotonic() >= deadline:
                return None

    def close(self, kill: bool = False) -> None:
        """Let it finish (it kills what is left of its children) and reap it."""
        import signal

        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + 10.0
        while self.alive and time.monotonic() < deadline:
            self.read(timeout=deadline - time.monotonic())
        if self.alive:  # it did not answer in time
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        self.sock.close()
        self.alive = False
        while True:
            try:
                os.waitpid(self.pid, 0)
                return
            except InterruptedError:
                continue
            except ChildProcessError:
                return
