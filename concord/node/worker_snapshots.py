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

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Union

import zmq

from concord.errors import StorageError
from concord.metrics import node as metrics
from concord.node.core.effects import TakeSnapshot
from concord.node.logwriter.ipc import DiskStatus, HelloAnswer
from concord.raft.messages import SnapshotMeta
from concord.storage import snapshot as snapfile
from concord.storage.recovery import RecoveredState, snap_dir

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

Log = Union[logging.Logger, "logging.LoggerAdapter[logging.Logger]"]

__all__ = ["check_restored", "finish_snapshot", "load_recovered", "offer_loaded", "take_snapshot"]


def load_recovered(data_dir: Path, answer: HelloAnswer) -> tuple[RecoveredState, int | None]:
    """
    The recovered state from the writer's HELLO answer, with the snapshot read from the
    file it names (the bytes never cross the writer's socket), and the state hash the
    file recorded (None: none recorded, e.g. a snapshot installed from the leader).

    Raises:
        StorageError, CorruptionError: the file is gone or damaged, or it is not the
            snapshot the writer recovered.
    """
    if answer.snapshot is None:
        return RecoveredState(None, answer.hard_state, answer.entries), None
    meta = answer.snapshot
    path = snap_dir(data_dir) / snapfile.snapshot_name(meta.index, meta.term)
    loaded = snapfile.read_snapshot(path)
    if loaded.snapshot.meta != meta:
        raise StorageError(f"snapshot {path} holds {loaded.snapshot.meta}, the log writer recovered {meta}")
    return RecoveredState(loaded.snapshot, answer.hard_state, answer.entries), loaded.state_hash


def check_restored(log: Log, meta: SnapshotMeta, recorded: int | None, restored: int) -> bool:
    """
    Compare the restored state's hash with the one its snapshot file recorded when it was
    taken: a mismatch means snapshot() and restore() do not round-trip (non-determinism,
    or a bug), logged as an ERROR (the node serves on: the state is the snapshot's).

    Returns:
        False on a mismatch; True if they agree or nothing was recorded.
    """
    if recorded is None or recorded == restored:
        return True
    log.error("restored state hash mismatch: the state machine does not restore what its "
              "snapshot recorded index=%d recorded_hash=%#018x restored_hash=%#018x",
              meta.index, recorded, restored)
    return False


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
    # NB: read back (not kept from before the fork), off the loop: the driver sends it to
    # followers that fell behind the compacted log (offer_loaded hands it over).
    worker.snapshot_loader.start(meta, job.path)


def read_snapshot_data(path: Path) -> bytes:
    """The state-machine bytes of the snapshot file at `path` (checked, inflated)."""
    return snapfile.read_snapshot(path).snapshot.data


def offer_loaded(worker: RaftWorker) -> None:
    """Give the driver the written snapshots read back since the last call."""
    for meta, outcome in worker.snapshot_loader.take():
        if isinstance(outcome, str):
            worker.log.warning("cannot load written snapshot index=%d error=%s", meta.index, outcome)
            continue
        worker.driver.on_snapshot_written(meta, outcome)
