"""
The raft worker's durable snapshots, written by a forked child.

fork() gives the child a copy-on-write view of the worker's state machine exactly at the
applied index; the child serializes it with the machine's own `snapshot()` and
`state_hash()`, writes the snapshot file (concord.storage.snapshot.write_snapshot:
temp file, fsync, rename, folder fsync) and reports the state hash (or its error) on a
pipe, then leaves through os._exit. The worker only forks, polls the pipe and reaps.
When a snapshot is due is decided elsewhere (concord.node.core.snapshots).

What the child must never do, and why it is safe:

- touch zmq (the parent's context and sockets are not fork-safe): it runs only the
  state machine's serialization, zlib, xxhash and file IO, never returns into the
  caller's code (os._exit, even on an exception: no atexit, no finalizers), and runs
  with the cyclic GC off (no finalizer of the parent's garbage runs in it);
- wait on a lock another thread of the worker held at fork(): only the forking thread
  exists in the child. The worker's other threads (the shm compactor's unmap threads,
  tracing exporters) share nothing with this path; the logging module re-creates its
  handlers' locks after a fork (os.register_at_fork), and the child logs nothing anyway;
- outlive the node: PR_SET_PDEATHSIG kills it with its parent, and it leaves the
  supervisor's process tree lock (`leave_tree`) so an orphaned tree's cleanup does not
  wait for it. The worker kills and reaps a running child when it stops.

A failed or killed child leaves at most a temp file, removed here; the snapshot is
retried later by the schedule. Never fatal.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from concord.errors import ProtocolError, StorageError
from concord.raft.messages import Snapshot, SnapshotMeta
from concord.storage import codec
from concord.storage import snapshot as snapfile
from concord.storage.fileutil import TMP_SUFFIX
# NB: imported here, not in the child: importing the package there cost every fork
# snapshot ~35 ms whenever the process did not run under the supervisor.
from supervisor.child import leave_tree

__all__ = ["SnapshotJob", "SnapshotLoader", "SnapshotWriter", "die_with_parent"]

logger = logging.getLogger(__name__)

# NB: loaded in the parent: dlopen() in a child could wait for the loader's lock, held
# at fork() by another thread.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


@dataclass(slots=True)
class SnapshotJob:
    """One running snapshot child."""

    meta: SnapshotMeta
    path: Path
    pid: int
    fd: int  # read end of the result pipe
    started_s: float
    applied_bytes: int  # the schedule's count when it started


@dataclass(frozen=True, slots=True)
class SnapshotOutcome:
    """A finished child: `state_hash` if the file is durable, else `error`."""

    job: SnapshotJob
    state_hash: int | None
    error: str | None


class SnapshotWriter:
    """
    Forks snapshot children of one state machine, one at a time. Not thread-safe.

    Args:
        snap_dir: `<data_dir>/snap`.
        snapshot: the state machine's `snapshot()` (runs in the child).
        state_hash: the state machine's `state_hash()` (runs in the child).
        sync: fsync the file (storage.fsync).
        compress_level: zlib level of the body.
    """

    def __init__(self, snap_dir: Path, snapshot: Callable[[], bytes],
                 state_hash: Callable[[], int], sync: bool = True,
                 compress_level: int = snapfile.DEFAULT_LEVEL) -> None:
        self.snap_dir = snap_dir
        self._snapshot = snapshot
        self._state_hash = state_hash
        self._sync = sync
        self._level = compress_level
        self.job: SnapshotJob | None = None

    def start(self, meta: SnapshotMeta, applied_bytes: int) -> SnapshotJob:
        """
        Fork a child writing the snapshot at `meta` (the state machine must be there now).

        Raises:
            OSError: pipe() or fork() failed (memory, limits): retry later.
        """
        assert self.job is None  # Invariant: one child at a time
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        started = time.monotonic()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child: a copy-on-write view of the state at `meta.index`
            self._child(meta, parent, read_fd, write_fd)
        os.close(write_fd)
        path = self.snap_dir / snapfile.snapshot_name(meta.index, meta.term)
        self.job = SnapshotJob(meta, path, pid, read_fd, started, applied_bytes)
        return self.job

    def _child(self, meta: SnapshotMeta, parent: int, read_fd: int, write_fd: int) -> None:
        status = 1
        try:
            # NB: no cyclic GC in the child: a collection could finalize garbage of the
            # parent's (a zmq socket or context among it), and it would copy every page
            # it walks (copy-on-write) for nothing.
            gc.disable()
            os.close(read_fd)
            leave_tree()  # an orphaned node's cleanup must not wait for a snapshot
            die_with_parent(parent)
            data = self._snapshot()
            state_hash = self._state_hash()
            snapfile.write_snapshot(self.snap_dir, Snapshot(meta, data), state_hash, self._sync,
                                    self._level)
            os.write(write_fd, codec.packb([state_hash]))
            status = 0
        except BaseException as exc:  # noqa: BLE001 -- the child reports, never raises
            try:
                os.write(write_fd, codec.packb([f"{type(exc).__name__}: {exc}"]))
            except OSError:
                pass
        finally:
            os._exit(status)

    def poll(self, block: bool = False) -> SnapshotOutcome | None:
        """The running child's outcome once it finished (waiting for it if `block`)."""
        job = self.job
        if job is None:
            return None
        if not block:
            ready, _, _ = select.select([job.fd], [], [], 0)
            if not ready:
                return None
        chunks = []
        while True:
            chunk = os.read(job.fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(job.fd)
        _, status = os.waitpid(job.pid, 0)
        self.job = None
        try:
            decoded = codec.unpackb(b"".join(chunks), "snapshot result")
            outcome: object = decoded[0] if isinstance(decoded, list) and decoded else f"bad result {decoded!r}"
        except ProtocolError:
            outcome = (f"snapshot child exited with status "
                       f"{os.waitstatus_to_exitcode(status)} and no result")
        if type(outcome) is int:
            return SnapshotOutcome(job, outcome, None)
        discard_temp(job.path)
        return SnapshotOutcome(job, None, str(outcome))

    def abandon(self) -> None:
        """Kill and reap a running child (the worker stops, or its state jumped)."""
        job = self.job
        if job is None:
            return
        self.job = None
        try:
            os.kill(job.pid, signal.SIGKILL)  # our own child, by pid
            os.waitpid(job.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(job.fd)
        discard_temp(job.path)


class SnapshotLoader:
    """
    Reads a written snapshot back on a thread of its own, for the driver to offer to
    followers that fell behind its compacted log: reading and inflating the body of a
    1M-key state takes a few hundred milliseconds (zlib releases the GIL meanwhile),
    which on the raft worker's loop would hold up heartbeats for about an election
    timeout. The loop collects finished loads with `take`.

    Args:
        read: path -> snapshot bytes (concord.storage.snapshot.read_snapshot's data).
    """

    def __init__(self, read: Callable[[Path], bytes]) -> None:
        self._read = read
        self._done: deque[tuple[SnapshotMeta, bytes | str]] = deque()

    def start(self, meta: SnapshotMeta, path: Path) -> None:
        """Read the snapshot at `path` (for `meta`) in the background."""

        def load() -> None:
            try:
                outcome: bytes | str = self._read(path)
            except StorageError as exc:
                outcome = str(exc)
            self._done.append((meta, outcome))

        threading.Thread(target=load, name=f"snapshot-load-{meta.index}", daemon=True).start()

    def take(self) -> list[tuple[SnapshotMeta, bytes | str]]:
        """The loads finished since the last call: (meta, bytes), or (meta, error)."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out


def discard_temp(path: Path) -> None:
    """Remove the temporary file of a snapshot that will not complete."""
    try:
        path.with_name(path.name + TMP_SUFFIX).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove temporary snapshot file path=%s error=%s", path, exc)


def die_with_parent(parent: int) -> None:
    """In a forked child: get SIGKILL when `parent` dies (Linux prctl PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        try:
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except AttributeError:
            pass
    if os.getppid() != parent:
        os._exit(1)
