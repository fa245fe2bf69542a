"""
Every process the benchmark starts, and its clean-up.

`Procs` starts servers with subprocess.Popen (each its own session), remembers every pid
it ever saw in their trees, and `stop_all()` sends SIGTERM to each by pid, waits, then
SIGKILLs stragglers. It is used as a context manager; `install_signal_handlers()` turns
SIGTERM/SIGINT into KeyboardInterrupt so the `finally` always runs. Nothing is ever
signalled by name. Also: free loopback ports, a temp root for data dirs, and the sweep of
/dev/shm segments left by a Concord supervisor the benchmark SIGKILLed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

import psutil
from concord.chaos.procs import free_ports as free_ports  # re-exported for bench

log = logging.getLogger(__name__)

DEV_SHM = Path("/dev/shm")


def wait_for(predicate: object, timeout_s: float, what: str, poll_s: float = 0.02) -> None:
    """Poll `predicate()` (a callable returning truthy) until true, or raise TimeoutError."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    delay = poll_s
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


class Procs:
    """The set of server processes of one benchmark run."""

    def __init__(self) -> None:
        self.popens: dict[int, subprocess.Popen[bytes]] = {}
        self.tree: dict[int, set[int]] = {}  # popen pid -> every pid seen in its tree
        self.killed_pids: list[int] = []  # supervisors we SIGKILLed (for the shm sweep)

    def start(self, argv: Sequence[str], log_path: Path, cwd: Path | None = None,
              env: dict[str, str] | None = None, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        """Start one server; stderr (and stdout unless piped) go to `log_path`."""
        out = open(log_path, "ab")
        try:
            p = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else out, stderr=out,
                start_new_session=True,
            )
        finally:
            out.close()
        self.popens[p.pid] = p
        self.tree[p.pid] = {p.pid}
        log.debug("started pid=%d argv=%s", p.pid, " ".join(argv))
        return p

    def remember(self, pid: int) -> None:
        """Record the current children of a started process (so they are stopped too)."""
        try:
            for c in psutil.Process(pid).children(recursive=True):
                self.tree.setdefault(pid, {pid}).add(c.pid)
        except psutil.NoSuchProcess:
            pass

    def pids_of(self, pid: int) -> list[int]:
        """The live pids of a started process's tree (itself first)."""
        self.remember(pid)
        out = []
        for q in sorted(self.tree.get(pid, {pid}), key=lambda x: x != pid):
            if _alive(q):
                out.append(q)
        return out

    def kill(self, pid: int) -> None:
        """SIGKILL a started process and its whole tree at once (the failover fault)."""
        pids = self.pids_of(pid)
        for q in pids:
            _signal(q, signal.SIGKILL)
        self.killed_pids.append(pid)
        self._reap(pid, 10.0)

    def terminate(self, pid: int, timeout_s: float = 15.0) -> None:
        """SIGTERM a started process, wait, then SIGKILL its tree if it hangs."""
        self.remember(pid)
        _signal(pid, signal.SIGTERM)
        if not self._reap(pid, timeout_s):
            for q in self.pids_of(pid):
                _signal(q, signal.SIGKILL)
            self._reap(pid, 10.0)
        # children that outlived their parent (should not happen): kill by pid
        stragglers = [q for q in self.tree.get(pid, set()) if q != pid and _alive(q)]
        if stragglers:
            wait_for(lambda: not any(_alive(q) for q in stragglers), 5.0, "children to exit")

    def _reap(self, pid: int, timeout_s: float) -> bool:
        p = self.popens.get(pid)
        if p is None:
            return True
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if p.stdout is not None:
            p.stdout.close()
        del self.popens[pid]
        return True

    def stop_all(self) -> None:
        """SIGTERM every running process we started, wait for each, SIGKILL stragglers."""
        live = list(self.popens)
        for pid in live:
            self.remember(pid)
            _signal(pid, signal.SIGTERM)
        for pid in live:
            self.terminate(pid)
        for pid, tree in self.tree.items():
            for q in tree:
                if _alive(q):
                    _signal(q, signal.SIGKILL)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def sweep_concord_shm(node_id: str, supervisor_pid: int) -> list[str]:
    """Unlink the /dev/shm segments of a Concord supervisor we SIGKILLed; their names."""
    safe = "".join(c if c.isalnum() or c in "_." else "_" for c in node_id)[:32]
    prefix = f"concord-{safe}-{supervisor_pid}x"
    gone = []
    for name in os.listdir(DEV_SHM):
        if name.startswith(prefix):
            (DEV_SHM / name).unlink(missing_ok=True)
            gone.append(name)
    return gone


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT raise KeyboardInterrupt in the main thread, so clean-up runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
