"""
The node side of `concord backup create`: a point-in-time image of the state machine at
the raft worker's applied index (a committed index), streamed to the client in chunks
by the `backup` op (docs/protocol.md, docs/backup.md).

The raft worker must never stall on a big state, so the image is written by a forked
child: fork() gives the child a copy-on-write copy of the state machine exactly as it is
at the applied index, the child serializes it with the machine's own `snapshot()` into
a snapshot file (concord.storage.snapshot: the same checksummed, zlib-compressed
format as the node's snapshots) under `<data_dir>/backup/`, and exits. The child
touches no socket and no zmq object, and leaves through os._exit. The raft worker only
forks, polls the child with waitpid(WNOHANG) and reads the file in chunks.

One backup at a time per node; a file is deleted once its last chunk has been read, when
a newer backup starts, or when the worker starts (stale files of a dead worker).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from concord.errors import ClientError, NotFoundError
# NB: the durable snapshots' helper for their forked child (PR_SET_PDEATHSIG).
from concord.node.snapshot_fork import die_with_parent
from concord.raft.messages import Snapshot, SnapshotMeta
from concord.storage.snapshot import write_snapshot

__all__ = ["BACKUP_CHUNK_BYTES", "BackupJobs"]

logger = logging.getLogger(__name__)

#: Bytes per `backup` reply.
BACKUP_CHUNK_BYTES = 1 << 20


@dataclass
class _Job:
    meta: SnapshotMeta
    path: Path
    pid: int | None  # the writing child; None once reaped
    failed: str | None = None


class BackupJobs:
    """
    The raft worker's backup images.

    Args:
        folder: `<data_dir>/backup` (emptied now).
        snapshot: the state machine's `snapshot()` (runs in the forked child).
        state_hash: the state machine's `state_hash()` (runs in the forked child).
    """

    def __init__(self, folder: Path, snapshot: Callable[[], bytes], state_hash: Callable[[], int]) -> None:
        self.folder = folder
        self._snapshot = snapshot
        self._state_hash = state_hash
        self._job: _Job | None = None
        shutil.rmtree(folder, ignore_errors=True)

    def start(self, meta: SnapshotMeta) -> SnapshotMeta:
        """Begin an image at `meta` (the applied index) unless one is being written."""
        job = self._job
        if job is not None and job.pid is not None:
            self.poll()
            if job.pid is not None:
                return job.meta
        self.discard()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{meta.index:016x}-{meta.term:016x}.snap"
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: serialize, write, leave without running any cleanup
            code = 1
            try:
                die_with_parent(parent)  # no orphan if the raft worker dies meanwhile
                write_snapshot(self.folder, Snapshot(meta, self._snapshot()), self._state_hash(), sync=True)
                code = 0
            finally:
                os._exit(code)
        self._job = _Job(meta, path, pid)
        logger.info("backup image started index=%d term=%d pid=%d", meta.index, meta.term, pid)
        return meta

    def poll(self) -> None:
        """Reap the writing child if it has finished."""
        job = self._job
        if job is None or job.pid is None:
            return
        done, status = os.waitpid(job.pid, os.WNOHANG)
        if done == 0:
            return
        job.pid = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not job.path.is_file():
            job.failed = f"backup image writer exited with code {code}"
            logger.warning("backup image failed index=%d code=%d", job.meta.index, code)
        else:
            logger.info("backup image written index=%d bytes=%d", job.meta.index, job.path.stat().st_size)

    def read(self, index: int, offset: int) -> tuple[SnapshotMeta, int, bytes] | None:
        """
        (meta, file size, chunk at `offset`) of the image at `index`; None while it is
        being written. The file is deleted once its last chunk has been read.

        Raises:
            NotFoundError: no image at `index` (never started, already read, replaced).
            ClientError: the child failed to write it.
        """
        self.poll()
        job = self._job
        if job is None or job.meta.index != index:
            raise NotFoundError(f"no backup image at index {index} on this node; start one "
                                "with a backup request without index")
        if job.failed is not None:
            raise ClientError(job.failed)
        if job.pid is not None:
            return None
        with open(job.path, "rb") as image:
            size = os.fstat(image.fileno()).st_size
            image.seek(offset)
            chunk = image.read(BACKUP_CHUNK_BYTES)
        if offset + len(chunk) >= size:
            self.discard()
        return job.meta, size, chunk

    def discard(self) -> None:
        """Forget the current image (kill a child still writing it) and delete its file."""
        job = self._job
        self._job = None
        if job is None:
            return
        if job.pid is not None:
            try:
                os.kill(job.pid, signal.SIGKILL)
                os.waitpid(job.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        job.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.discard()
