"""
The raft worker's durable snapshots: carrying out the node core's TakeSnapshot
(concord.node.core.effects) with a forked child (concord.node.snapshot_fork), and
finishing it when the child reports.

After a child made the file durable: the node core hears it (the schedule moves on),
the log writer hears it (SNAPSHOT_TAKEN: it prunes old snapshot files and deletes the
WAL segments the snapshot covers), and the driver gets it as the InstallSnapshot source
(its in-memory log is compacted below it). A child that could not start, failed or was
killed is logged and retried later by the schedule; never fatal.

Methods of `concord.node.raft_worker.RaftWorker`, kept here by concern: each function
takes the worker as `worker` and is bound in the class body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import zmq

from concord.errors import StorageError
from concord.metrics import node as metrics
from concord.node.core.effects import TakeSnapshot
from concord.node.logwriter.ipc import DiskStatus
from concord.storage import snapshot as snapfile

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["finish_snapshot", "take_snapshot"]


def take_snapshot(worker: RaftWorker, effect: TakeSnapshot) -> None:
    """Fork the child writing the snapshot at `effect.meta` (the applied index now)."""
    meta = effect.meta
    try:
        job = worker.snapshot_writer.start(meta, effect.applied_bytes)
    except OSError as exc:  # fork() failed (memory, limits): the schedule retries later
        worker.core.on_snapshot_done(worker.view(), ok=False)
        worker.log.warning("cannot start snapshot, will retry index=%d error=%s", meta.index, exc)
        return
    worker.poller.register(job.fd, zmq.POLLIN)
    worker.log.info("snapshot started index=%d term=%d pid=%d", meta.index, meta.term, job.pid)


def finish_snapshot(worker: RaftWorker, block: bool = False) -> None:
    """The running child's result, if it has one (or once it has, if `block`)."""
    job = worker.snapshot_writer.job
    if job is None:
        return
    outcome = worker.snapshot_writer.poll(block)
    if outcome is None:
        return
    worker.poller.unregister(job.fd)
    meta = job.meta
    took_s = time.monotonic() - job.started_s
    if outcome.state_hash is None:
        worker.core.on_snapshot_done(worker.view(), ok=False)
        worker.log.warning("snapshot failed, will retry: the wal grows until one succeeds "
                           "index=%d error=%s", meta.index, outcome.error)
        metrics.snapshot_failed()
        worker.disk = DiskStatus(worker.disk.wal_error, outcome.error)
        return
    worker.core.on_snapshot_done(worker.view(), ok=True)
    if worker.disk.snapshot_error is not None:
        worker.log.info("snapshot writes work again")
        worker.disk = DiskStatus(worker.disk.wal_error, None)
    worker.writer.snapshot_taken(meta, outcome.state_hash)
    size = job.path.stat().st_size if job.path.exists() else 0
    metrics.snapshot_saved(took_s, size)
    worker.log.info("snapshot written index=%d term=%d state_hash=%#018x bytes=%d duration_ms=%.1f",
                    meta.index, meta.term, outcome.state_hash, size, took_s * 1000)
    try:
        # NB: read back (not kept from before the fork): the driver sends it to followers
        # that fell behind the compacted log.
        data = snapfile.read_snapshot(job.path).snapshot.data
    except StorageError as exc:
        worker.log.warning("cannot load written snapshot index=%d error=%s", meta.index, exc)
        return
    worker.driver.on_snapshot_written(meta, data)
