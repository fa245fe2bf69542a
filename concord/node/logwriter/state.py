"""
The log writer's state: the WAL, the replica and its snapshots, the requests of one batch.

`LogWriter` carries out what the writer core (concord.node.core.writer.WriterCore)
decides: it appends and flushes the WAL, applies committed entries to its replica,
forks (or threads) snapshot jobs, prunes old snapshots and covered segments, and queues
its replies in `outbox` for the serve loop (concord.node.logwriter.loop) to send.
Independent of the socket loop: tests drive it directly.
"""

from __future__ import annotations

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
import collections
import ctypes
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, cast

from concord.storage import codec
from concord.errors import DiskError, ProtocolError, RemoteProtocolError, StorageError
from concord.metrics import node as metrics
from concord.node.core.writer import (
    RETRY_INTERVAL_S,
    ReportPersisted,
    SnapshotPolicy,
    WriterCore,
    WriterEffect,
)
from concord.node.logwriter.ipc import (
    COMMITTED,
    DISK,
    HELLO,
    PERSIST,
    PERSISTED,
    SNAPSHOT_WRITTEN,
    STATS,
    STATS_REPLY,
    STOP,
    TRACE,
    STOPPED,
    _fields,
    _int,
    _msg,
    _parse,
    _snapshot_from_obj,
    encode_recovered,
)
from concord.node.logwriter.settings import (
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_STATE_MACHINE,
    WriterSettings,
)
from concord.node.tracing import WriterTracing
from concord.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from concord.raft.statemachine import StateMachine
from concord.storage import snapshot as snapfile
from concord.storage.fileutil import TMP_SUFFIX, SyncHook
from concord.storage.recovery import RecoveredState, recover, recover_for_writing, snap_dir, wal_dir
from concord.storage.replica import (
    StateMachineFactory,
    apply_entry,
    load_factory,
    restore_steps,
)
from concord.storage.wal import WAL, WalOptions
# NB: imported here, not in the snapshot child: importing the package there cost every
# fork snapshot ~35 ms whenever the writer did not run under the supervisor.
from supervisor.child import leave_tree

__all__ = ["DEFAULT_SNAPSHOT_BYTES", "DEFAULT_STATE_MACHINE", "LogWriter", "WriterSettings"]

logger = logging.getLogger("concord.node.log_writer")

#: A WAL flush slower than this is logged (a stalling disk delays every write).
SLOW_FLUSH_S = 1.0

#: Committed entries applied to the replica per loop turn when requests wait / when idle.
APPLY_SLICE_BUSY = 64
APPLY_SLICE_IDLE = 1000
#: ... and at most this many bytes of entry data (a put_many entry holds 500 keys).
APPLY_SLICE_BUSY_BYTES = 256 * 1024
APPLY_SLICE_IDLE_BYTES = 4 * 1024 * 1024
_DONE = object()  # next()'s default: the iterator is exhausted


@dataclass(slots=True)
class _SnapshotJob:
    meta: SnapshotMeta
    started_s: float
    path: Path
    pid: int = 0  # fork mode
    fd: int = -1  # fork mode: read end of the result pipe
    thread: threading.Thread | None = None
    result: list[object] = field(default_factory=list)  # thread mode: [state_hash] or [error]
    state_hash: int = 0
    applied_bytes: int = 0  # LogWriter._applied_bytes when the job started


class LogWriter:
    """
    The writer's state and logic, independent of the socket loop (tests drive it directly).

    Args:
        data_dir: the node's data folder (wal/ and snap/ inside).
        settings: see WriterSettings.
        state_machine: replica factory; overrides settings.state_machine (tests inject).
        sync_hook: WAL data-sync hook (tests count fdatasyncs with it).
    """

    def __init__(
        self,
        data_dir: Path,
        settings: WriterSettings,
        state_machine: StateMachineFactory | None = None,
        sync_hook: SyncHook | None = None,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._settings = settings
        #: spans of traced PERSISTs (set by the process's main when tracing is on)
        self.tracing: WriterTracing | None = None
        recovery = recover_for_writing(self._data_dir)
        self.recovered = recovery.state
        self._wal = WAL(wal_dir(self._data_dir), WalOptions(settings.segment_bytes, settings.fsync), recovery.wal, sync_hook)
        self._snap_dir = snap_dir(self._data_dir)
        spec = settings.state_machine or DEFAULT_STATE_MACHINE
        factory = None
        if settings.replica:
            factory = state_machine or (load_factory(spec) if spec else None)
        self._sm: StateMachine | None = factory() if factory is not None else None
        snap = recovery.state.snapshot
        # The decisions (concord.node.core.writer): acknowledgements, disk reports,
        # retries, the replica's start and the snapshot schedule.
        self.core = WriterCore(
            SnapshotPolicy(settings.snapshot_entries, settings.snapshot_bytes, self._sm is not None),
            snap.meta if snap is not None else None, recovery.state.hard_state.commit)
        # The replica is restored from the snapshot lazily, by the first apply_some(): the
        # serve loop calls it only after answering the raft worker's HELLO, so the worker
        # rebuilds its state while this process rebuilds the replica.
        self._restore_pending: bytes | None = None
        self._restoring: Iterator[None] | None = None
        self._restore_started = 0.0
        if snap is not None and self._sm is not None:
            self._restore_pending = snap.data
        # The replica's unapplied tail of the log (applied+1 .. last persisted), kept as
        # codec entry objects: Entry objects are built only when applied.
        self._unapplied: collections.deque[list[object]] = collections.deque(
            codec.entries_to_obj(recovery.state.entries)
        )
        self._job: _SnapshotJob | None = None
        self.snapshots_written = 0
        self.outbox: list[bytes] = []

    @property
    def settings(self) -> WriterSettings:
        return self._settings

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def applied_index(self) -> int:
        return self.core.applied

    @property
    def snapshot_job(self) -> _SnapshotJob | None:
        return self._job

    @property
    def replica_may_run(self) -> bool:
        """
        Whether the serve loop may restore and apply the replica: once a raft worker's
        HELLO was answered and it reported applying an entry committed after the start.
        """
        return self.core.replica_may_run

    def _hello_state(self) -> RecoveredState:
        """
        The state to answer HELLO with. The first HELLO gets what start-up recovered; a
        later one comes from a restarted raft worker (the supervisor restarts the raft
        worker alone, rest_for_one), which needs the state durable NOW: everything
        written so far is flushed, so it is re-read from disk (read only), and the new
        worker's PERSIST numbering starts afresh.
        """
        if self.core.on_hello():
            return self.recovered
        return recover(self._data_dir, repair=False)

    # --- one group commit ---------------------------------------------------------------

    def handle_batch(self, frames: Sequence[bytes]) -> bool:
        """
        Handle every request drained from the socket as ONE group commit: one WAL write
        and at most one fdatasync, then the cumulative PERSISTED reply. Replies go to
        `outbox`.

        Returns:
            False once a STOP request was handled.

        Raises:
            ProtocolError: a malformed request (the worker has a bug; the writer stops).
            StorageError: the disk failed.
        """
        need_sync = False
        persisted: int | None = None
        after_flush: list[bytes] = []
        running = True
        for frame in frames:
            kind, args = _parse(frame)
            if kind == TRACE:
                self._trace(args)
            elif kind == PERSIST:
                number, sync = self._persist(args)
                need_sync = need_sync or sync
                persisted = number
            elif kind == COMMITTED:
                index, cs = _fields(args, 2, "committed")
                self._committed(_int(index, "index"), None if cs is None else codec.conf_state_from_obj(cs))
            elif kind == HELLO:
                self.outbox.append(encode_recovered(self._hello_state()))
            elif kind == STATS:
                after_flush.append(b"")
            elif kind == STOP:
                running = False
                break
            else:
                raise RemoteProtocolError(f"unknown writer request kind {kind}")
        self.core.on_batch(persisted)
        started_ns = time.time_ns()
        if self.flush(need_sync) and self.tracing is not None:
            self.tracing.on_flushed(self.core.persisted_number, need_sync, started_ns)
        for _ in after_flush:
            self.outbox.append(_msg(STATS_REPLY, self.stats()))
        if not running:
            self.outbox.append(_msg(STOPPED))
        return running

    def flush(self, sync: bool = False) -> bool:
        """
        Flush the WAL and send the PERSISTED owed; on a disk failure keep the batch,
        send nothing but the DISK report, and let the serve loop call again later
        (`retry_due`). Returns whether the WAL is healthy now.
        """
        started = time.monotonic()
        try:
            self._wal.flush(sync=sync)
        except DiskError as exc:
            effects, first = self.core.on_flush_failed(str(exc), time.monotonic())
            if first:
                logger.warning("wal write failed: nothing more is acknowledged until a retry "
                               "succeeds retry_every_s=%.2f error=%s", RETRY_INTERVAL_S, exc)
            self._emit(effects)
            return False
        took = time.monotonic() - started
        if took >= SLOW_FLUSH_S:
            logger.warning("slow wal flush: every write waits for it duration_ms=%.0f", took * 1000)
        effects, outage = self.core.on_flushed(time.monotonic())
        if outage is not None:
            logger.info("wal writable again, unacknowledged batch rewritten outage_ms=%.0f",
                        outage * 1000)
        self._emit(effects)
        return True

    @property
    def retry_due(self) -> float | None:
        """When the failed WAL flush is to be retried (monotonic seconds), None if healthy."""
        return self.core.retry_due

    def _emit(self, effects: Sequence[WriterEffect]) -> None:
        """Carry out the writer core's effects: its reports to the raft worker."""
        for effect in effects:
            if isinstance(effect, ReportPersisted):
                self.outbox.append(_msg(PERSISTED, effect.number))
            else:
                self.outbox.append(_msg(DISK, effect.wal_error, effect.snapshot_error))

    def _trace(self, args: list[object]) -> None:
        number, traceparents = _fields(args, 2, "trace")
        if not isinstance(traceparents, list) or not all(isinstance(t, str) for t in traceparents):
            raise RemoteProtocolError("malformed trace message: expected [number, [str...]]")
        if self.tracing is not None:
            self.tracing.on_trace(_int(number, "number"), traceparents)

    def _persist(self, args: list[object]) -> tuple[int, bool]:
        number, entries_obj, hs_obj, snap_obj, must_sync = _fields(args, 5, "persist")
        number = _int(number, "number")
        if type(must_sync) is not bool:
            raise RemoteProtocolError("malformed persist message: must_sync is not a bool")
        self.core.on_persist(number)
        objs = codec.check_entries_obj(entries_obj)
        hs = None if hs_obj is None else codec.hard_state_from_obj(hs_obj)
        snap = _snapshot_from_obj(snap_obj)
        if snap is not None:
            self._install_snapshot(snap)
        if objs:
            first = cast(int, objs[0][2])
            next_index = max(self._wal.last_index, self.core.snapshot_index, self.core.applied) + 1
            if first > next_index:
                raise RemoteProtocolError(f"persist appends index {first} but the log ends at {next_index - 1} (gap)")
            if first <= self.core.applied:
                raise StorageError(f"persist rewrites entry {first} but the writer already applied up to {self.core.applied}")
            try:
                # NB: the objects were just validated, so they are written as they are:
                # no Entry is built on this path (the replica builds them when it applies).
                self._wal.append_entry_objs(objs)
            except ValueError as exc:
                raise RemoteProtocolError(f"malformed persist message: {exc}") from exc
            tail = self._unapplied
            while tail and cast(int, tail[-1][2]) >= first:
                tail.pop()
            tail.extend(objs)
        if hs is not None:
            self._wal.set_hard_state(hs)
        return number, must_sync or bool(objs) or snap is not None

    def _install_snapshot(self, snap: Snapshot) -> None:
        """A snapshot received from the leader: durable file first, then the WAL marker."""
        self._abandon_job()
        state_hash = None
        self._restore_pending = self._restoring = None
        if self._sm is not None:
            self._sm.restore(snap.data)
            state_hash = self._sm.state_hash()
        snapfile.write_snapshot(self._snap_dir, snap, state_hash, self._settings.fsync, self._settings.snapshot_compress_level)
        self._wal.mark_snapshot(snap.meta, installed=True)
        self.core.on_installed(snap.meta)  # the replica is current from here on
        self._unapplied.clear()
        snapfile.prune(self._snap_dir, self._settings.keep_snapshots, self._settings.fsync)
        logger.info("installed snapshot from leader index=%d term=%d", snap.meta.index, snap.meta.term)
        metrics.snapshot_installed()

    def _committed(self, index: int, conf_state: ConfState | None) -> None:
        self.core.on_committed(index, conf_state)

    # --- the replica ----------------------------------------------------------------------

    def apply_some(self, limit: int = APPLY_SLICE_IDLE, limit_bytes: int = 1 << 62) -> bool:
        """
        Apply up to `limit` committed entries (and about `limit_bytes` bytes of entry
        data: at least one entry) to the replica; maybe start a snapshot. The first call
        restores the replica from the recovered snapshot.

        Returns:
            True if committed entries the writer holds remain to be applied.
        """
        if self._restore_pending is not None:
            # One bounded step per call (the serve loop keeps answering in between).
            assert self._sm is not None  # Invariant: set only with a replica
            if self._restoring is None:
                self._restoring = restore_steps(self._sm, self._restore_pending)
                self._restore_started = time.monotonic()
            if next(self._restoring, _DONE) is not _DONE:
                return True
            self._restore_pending = self._restoring = None
            logger.info("replica restored index=%d duration_ms=%.1f", self.core.snapshot_index,
                        (time.monotonic() - self._restore_started) * 1000)
        tail = self._unapplied
        commit = self.core.membership.commit
        done = 0
        size = 0
        entry: Entry | None = None
        while done < limit and size < limit_bytes and tail and cast(int, tail[0][2]) <= commit:
            entry = codec.entry_from_obj(tail.popleft())
            if self._sm is not None:
                apply_entry(self._sm, entry)
            size += len(entry.data)
            done += 1
        if entry is not None:
            self.core.on_applied(entry.index, entry.term, size)
        self._maybe_start_snapshot()
        return bool(tail) and cast(int, tail[0][2]) <= commit

    def _maybe_start_snapshot(self) -> None:
        if self._job is not None or self._sm is None:
            return
        meta = self.core.snapshot_due()
        if meta is None:
            return
        try:
            if self._settings.snapshot_mode == "fork":
                self._job = self._fork_snapshot(self._sm, meta)
            else:
                self._job = self._thread_snapshot(self._sm, meta)
            self._job.applied_bytes = self.core.applied_bytes
        except OSError as exc:  # fork() or thread start failed (memory, limits): retry later
            self.core.on_snapshot_failed(None)
            logger.warning(
                "cannot start snapshot, will retry index=%d retry_at=%d error=%s",
                meta.index,
                self.core.next_attempt_index,
                exc,
            )

    def _fork_snapshot(self, sm: StateMachine, meta: SnapshotMeta) -> _SnapshotJob:
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: a copy-on-write view of the replica at `meta.index`
            status = 1
            try:
                os.close(read_fd)
                leave_tree()  # an orphaned node's cleanup must not wait for a snapshot
                _die_with_parent(parent)
                data = sm.snapshot()
                state_hash = sm.state_hash()
                snapfile.write_snapshot(
                    self._snap_dir, Snapshot(meta, data), state_hash, self._settings.fsync, self._settings.snapshot_compress_level
                )
                os.write(write_fd, codec.packb([state_hash]))
                status = 0
            except BaseException as exc:  # noqa: BLE001 -- the child reports, never raises
                try:
                    os.write(write_fd, codec.packb([f"{type(exc).__name__}: {exc}"]))
                except OSError:
                    pass
            finally:
                os._exit(status)
        os.close(write_fd)
        logger.info("snapshot started mode=fork index=%d term=%d pid=%d", meta.index, meta.term, pid)
        return _SnapshotJob(meta, started, self._snap_path(meta), pid=pid, fd=read_fd)

    def _thread_snapshot(self, sm: StateMachine, meta: SnapshotMeta) -> _SnapshotJob:
        started = time.monotonic()
        data = sm.snapshot()  # NB: on the loop: the replica must not change while serialized
        state_hash = sm.state_hash()
        job = _SnapshotJob(meta, started, self._snap_path(meta), state_hash=state_hash)

        def write() -> None:
            try:
                snapfile.write_snapshot(
                    self._snap_dir, Snapshot(meta, data), state_hash, self._settings.fsync, self._settings.snapshot_compress_level
                )
                job.result.append(state_hash)
            except StorageError as exc:
                job.result.append(str(exc))

        job.thread = threading.Thread(target=write, name="snapshot-writer", daemon=True)
        job.thread.start()
        logger.info("snapshot started mode=thread index=%d term=%d", meta.index, meta.term)
        return job

    def _snap_path(self, meta: SnapshotMeta) -> Path:
        return self._snap_dir / snapfile.snapshot_name(meta.index, meta.term)

    def poll_snapshot(self, block: bool = False) -> bool:
        """
        Finish the running snapshot job if it is done (or wait for it if `block`).

        Returns:
            True if a job finished (successfully or not).
        """
        job = self._job
        if job is None:
            return False
        if job.thread is not None:
            if block:
                job.thread.join()
            if job.thread.is_alive():
                return False
            outcome = job.result[0] if job.result else "snapshot thread ended without a result"
        else:
            if not block and not _readable(job.fd):
                return False
            chunks = []
            while True:
                chunk = os.read(job.fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(job.fd)
            _, status = os.waitpid(job.pid, 0)
            try:
                decoded = codec.unpackb(b"".join(chunks), "snapshot result")
                outcome = decoded[0] if isinstance(decoded, list) and decoded else f"bad result {decoded!r}"
            except ProtocolError:
                outcome = f"snapshot child exited with status {status} and no result"
        self._job = None
        if type(outcome) is not int:
            _discard_temp(job.path)
            effects = self.core.on_snapshot_failed(str(outcome))
            logger.warning(
                "snapshot failed, will retry index=%d retry_at=%d error=%s",
                job.meta.index,
                self.core.next_attempt_index,
                outcome,
            )
            self._emit(effects)
            metrics.snapshot_failed()
            return True
        self._finish_snapshot(job, outcome)
        return True

    def _finish_snapshot(self, job: _SnapshotJob, state_hash: int) -> None:
        meta = job.meta
        effects = self.core.on_snapshot_written(meta, job.applied_bytes)
        self.snapshots_written += 1
        metrics.snapshot_saved(time.monotonic() - job.started_s, _file_size(job.path))
        snapfile.prune(self._snap_dir, self._settings.keep_snapshots, self._settings.fsync)
        self._wal.remove_covered(meta.index)
        logger.info(
            "snapshot written index=%d term=%d state_hash=%#018x duration_ms=%.1f",
            meta.index,
            meta.term,
            state_hash,
            (time.monotonic() - job.started_s) * 1000,
        )
        self.outbox.append(
            _msg(SNAPSHOT_WRITTEN, meta.index, meta.term, codec.conf_state_to_obj(meta.conf_state), state_hash, str(job.path))
        )
        self._emit(effects)

    def _abandon_job(self) -> None:
        job = self._job
        if job is None:
            return
        if job.thread is not None:
            job.thread.join()
        else:
            os.kill(job.pid, signal.SIGKILL)  # our own child, by pid
            os.waitpid(job.pid, 0)
            os.close(job.fd)
            _discard_temp(job.path)
        self._job = None

    def stats(self) -> dict[str, int]:
        return {
            "syncs": self._wal.sync_count,
            "writes": self._wal.write_count,
            "applied_index": self.core.applied,
            "last_index": self._wal.last_index,
            "persisted_number": self.core.persisted_number,
            "snapshots_written": self.snapshots_written,
            "snapshot_index": self.core.snapshot_index,
            "segments": len(self._wal.segments),
            "disk_failures": self._wal.failures,
        }

    def close(self) -> None:
        self._abandon_job()
        self._wal.close()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _discard_temp(path: Path) -> None:
    """Remove the temporary file of a snapshot that will not complete."""
    try:
        path.with_name(path.name + TMP_SUFFIX).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove temporary snapshot file path=%s error=%s", path, exc)


def _readable(fd: int) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _die_with_parent(parent: int) -> None:
    """In a forked snapshot child: get SIGKILL when the writer dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
