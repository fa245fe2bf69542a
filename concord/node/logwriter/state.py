"""
The log writer's state: the WAL, the snapshot files, the requests of one batch.

`LogWriter` carries out what the writer core (concord.node.core.writer.WriterCore)
decides: it appends and flushes the WAL, writes the snapshots installed from the leader,
and, when the raft worker reports a durable snapshot of its own (SNAPSHOT_TAKEN), prunes
old snapshots and the WAL segments it covers; it queues its replies in `outbox` for the
serve loop (concord.node.logwriter.loop) to send. It holds no state machine.
Independent of the socket loop: tests drive it directly.
"""

from __future__ import annotations

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
import logging
import time
from pathlib import Path
from typing import Sequence

from concord.errors import DiskError, RemoteProtocolError, StorageError
from concord.metrics import node as metrics
from concord.node.core.writer import (
    RETRY_INTERVAL_S,
    ReportPersisted,
    WriterCore,
    WriterEffect,
)
from concord.node.logwriter.ipc import (
    DISK,
    HELLO,
    PERSIST,
    PERSISTED,
    SNAPSHOT_TAKEN,
    STATS,
    STATS_REPLY,
    STOP,
    TRACE,
    STOPPED,
    _fields,
    _int,
    _msg,
    _parse,
    decode_persist,
    decode_snapshot_taken,
    encode_recovered,
)
from concord.node.logwriter.settings import WriterSettings
from concord.node.tracing import WriterTracing
from concord.raft.messages import Snapshot, SnapshotMeta
from concord.storage import snapshot as snapfile
from concord.storage.fileutil import SyncHook
from concord.storage.recovery import RecoveredState, recover, recover_for_writing, snap_dir, wal_dir
from concord.storage.wal import WAL, WalOptions

__all__ = ["LogWriter", "WriterSettings"]

logger = logging.getLogger("concord.node.log_writer")

#: A WAL flush slower than this is logged (a stalling disk delays every write).
SLOW_FLUSH_S = 1.0


class LogWriter:
    """
    The writer's state and logic, independent of the socket loop (tests drive it directly).

    Args:
        data_dir: the node's data folder (wal/ and snap/ inside).
        settings: see WriterSettings.
        sync_hook: WAL data-sync hook (tests count fdatasyncs with it).
    """

    def __init__(
        self,
        data_dir: Path,
        settings: WriterSettings,
        sync_hook: SyncHook | None = None,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._settings = settings
        #: spans of traced PERSISTs (set by the process's main when tracing is on)
        self.tracing: WriterTracing | None = None
        # NB: the snapshot's body is not decompressed here: the raft worker reads the
        # file itself (the HELLO answer names it); this process needs only its meta.
        recovery = recover_for_writing(self._data_dir, snapshot_body=False)
        self.recovered = recovery.state
        self._wal = WAL(wal_dir(self._data_dir), WalOptions(settings.segment_bytes, settings.fsync), recovery.wal, sync_hook)
        self._snap_dir = snap_dir(self._data_dir)
        snap = recovery.state.snapshot
        # The decisions (concord.node.core.writer): acknowledgements, disk reports, retries.
        self.core = WriterCore(snap.meta if snap is not None else None)
        self.snapshots_taken = 0
        self.outbox: list[bytes] = []

    @property
    def settings(self) -> WriterSettings:
        return self._settings

    @property
    def wal(self) -> WAL:
        return self._wal

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
        return recover(self._data_dir, repair=False, snapshot_body=False)

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
            elif kind == SNAPSHOT_TAKEN:
                self._snapshot_taken(decode_snapshot_taken(args))
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
        req = decode_persist(args)
        self.core.on_persist(req.number)
        if req.snapshot is not None:
            self._install_snapshot(req.snapshot)
        if req.count:
            next_index = max(self._wal.last_index, self.core.snapshot_index) + 1
            if req.first_index > next_index:
                raise RemoteProtocolError(f"persist appends index {req.first_index} but the log ends at {next_index - 1} (gap)")
            # NB: the worker's packed array goes into the record as it is: no entry is
            # decoded or re-encoded on this path.
            self._wal.append_packed_entries(req.first_index, req.count, req.entries)
        if req.hard_state is not None:
            self._wal.set_hard_state(req.hard_state)
        return req.number, req.must_sync or bool(req.count) or req.snapshot is not None

    def _install_snapshot(self, snap: Snapshot) -> None:
        """A snapshot received from the leader: durable file first, then the WAL marker."""
        # NB: no state hash: this process holds no state machine to compute it from (the
        # raft worker restores the snapshot and takes its own snapshots later).
        snapfile.write_snapshot(self._snap_dir, snap, None, self._settings.fsync, self._settings.snapshot_compress_level)
        self._wal.mark_snapshot(snap.meta, installed=True)
        self.core.on_snapshot(snap.meta)
        snapfile.prune(self._snap_dir, self._settings.keep_snapshots, self._settings.fsync)
        logger.info("installed snapshot from leader index=%d term=%d", snap.meta.index, snap.meta.term)
        metrics.snapshot_installed()

    def _snapshot_taken(self, meta: SnapshotMeta) -> None:
        """
        The raft worker made the snapshot at `meta` durable (SNAPSHOT_TAKEN): keep the
        newest `keep_snapshots` files and delete the WAL segments it covers.

        Raises:
            RemoteProtocolError: the file it names is not there (the worker has a bug).
        """
        path = self._snap_dir / snapfile.snapshot_name(meta.index, meta.term)
        if not path.is_file():
            raise RemoteProtocolError(f"snapshot taken at index {meta.index} term {meta.term} but {path} does not exist")
        self.snapshots_taken += 1
        if not self.core.on_snapshot(meta):
            return  # an older one than installed meanwhile: nothing more it covers
        snapfile.prune(self._snap_dir, self._settings.keep_snapshots, self._settings.fsync)
        # NB: the worker snapshots only entries it knows durable here (its log's
        # persisted part, concord.node.core.snapshots), so the WAL holds `meta.index`.
        removed = self._wal.remove_covered(meta.index)
        logger.info("snapshot taken index=%d term=%d wal_segments_removed=%d",
                    meta.index, meta.term, len(removed))

    def stats(self) -> dict[str, int]:
        return {
            "syncs": self._wal.sync_count,
            "writes": self._wal.write_count,
            "last_index": self._wal.last_index,
            "persisted_number": self.core.persisted_number,
            "snapshots_taken": self.snapshots_taken,
            "snapshot_index": self.core.snapshot_index,
            "segments": len(self._wal.segments),
            "disk_failures": self._wal.failures,
        }

    def close(self) -> None:
        self._wal.close()


