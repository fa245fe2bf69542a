"""
The log/snapshot writer process, and the raft worker's client for it.

The writer owns `<data_dir>`: it recovers it at start, appends what the raft worker asks
it to persist to the WAL with group commit, answers "persisted up to N" only after the
fdatasync covering N has returned, keeps a replica of the state machine by applying
committed entries (`concord.storage.replica.apply_entry`, the raft worker's code), and
writes a snapshot every `snapshot_entries` applied entries or `snapshot_bytes` bytes of
applied entry data, whichever comes first, without stalling the WAL path (the replica is
serialized in a forked child; see WriterSettings.snapshot_mode).

Start-up order matters for restart time: the writer answers the raft worker's HELLO
first, and restores its own replica from the snapshot and applies the recovered log only
once the worker reported (COMMITTED) applying an entry committed after the start (the
cluster is serving again: a leader committed at least its no-op), so neither this
worker's start-up (restore, replay, shared-memory publish) nor the election, nor on a
shared host the other members' start-up, competes with the replica for the CPU. The
replica only feeds snapshots; it may lag.

Wire protocol (ZeroMQ PAIR over ipc, one msgpack array per message, LINGER=0):

    every message      [PROTOCOL_VERSION=1, kind:uint, ...fields]
    worker -> writer
      HELLO       1    []                                  -> READY
      PERSIST     2    [number, [entry...], hard_state|nil, snapshot|nil, must_sync:bool]
                       snapshot = [snapshot_meta, data:bin] (installed from the leader)
      COMMITTED   3    [index, conf_state|nil]   entries <= index are committed and applied
                       by the worker; conf_state is the membership after applying them, nil
                       if unchanged since the previous COMMITTED (the writer takes no
                       snapshot until one COMMITTED of its life carried a conf_state)
      STATS       4    []                                  -> STATS_REPLY
      STOP        5    []    flush, answer STOPPED, exit 0
    writer -> worker
      READY       101  [snapshot|nil, hard_state, [entry...]]   the recovered state
      PERSISTED   102  [number]   every PERSIST up to `number` is durable (cumulative)
      SNAPSHOT_WRITTEN 103 [index, term, conf_state, state_hash, path]  path: the
                       snapshot file (read it with concord.storage.snapshot.read_snapshot)
      STATS_REPLY 104  [{name: int}]
      STOPPED     105  []
      FAILED      106  [message]  sent just before the writer exits non-zero
      DISK        107  [wal_error|nil, snapshot_error|nil]  the disk's health changed:
                       a message per failing path (WAL append/sync, snapshot write), nil
                       once it works again; sent on every change

Entries, hard states, conf states and snapshot metas use concord.codec (version 1).

Durability rule (STYLE §0.3): PERSISTED(n) leaves only after the WAL flush holding every
request <= n returned, including its fdatasync whenever any of them had must_sync set or
carried entries or a snapshot. A batch of commit-only hard-state updates (must_sync
false, the Raft rule for "only the commit index moved") is written but not synced.

A failing disk (ENOSPC, EIO on a WAL write or fdatasync) does not stop the writer: the
batch stays in memory, unacknowledged (no PERSISTED), the writer reports DISK with the
error, and retries every RETRY_INTERVAL_S; WAL.flush seals the segment that failed at its
last durable offset and rewrites the batch into a fresh segment (fsyncgate: a failed
fdatasync is never retried on the same file; see WAL._seal_failed_segment). Requests that
arrive meanwhile join the batch. The first successful flush sends the PERSISTED owed and
DISK with wal_error nil: recovery needs no restart. A failed snapshot write is retried
later (the WAL keeps everything meanwhile) and reported the same way.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Iterator, Sequence, cast

import zmq

import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from concord.storage import codec
from concord.errors import DiskError, ProtocolError, RemoteProtocolError, StorageError
from concord.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.raft.statemachine import StateMachine
from concord.storage import snapshot as snapfile
from concord.storage.fileutil import TMP_SUFFIX, SyncHook
from concord.storage.membership import SnapshotMembership
from concord.storage.recovery import RecoveredState, recover, recover_for_writing, snap_dir, wal_dir
from concord.storage.replica import (
    StateMachineFactory,
    apply_entry,
    load_factory,
    restore_steps,
)
from concord.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, WalOptions
# NB: imported here, not in the snapshot child: importing the package there cost every
# fork snapshot ~35 ms whenever the writer did not run under the supervisor.
from supervisor.child import leave_tree

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

HELLO = 1
PERSIST = 2
COMMITTED = 3
STATS = 4
STOP = 5
READY = 101
PERSISTED = 102
SNAPSHOT_WRITTEN = 103
STATS_REPLY = 104
STOPPED = 105
FAILED = 106
DISK = 107

#: While the WAL is failing, the writer retries its flush this often.
RETRY_INTERVAL_S = 0.25
#: A WAL flush slower than this is logged (a stalling disk delays every write).
SLOW_FLUSH_S = 1.0

#: Committed entries applied to the replica per loop turn when requests wait / when idle.
APPLY_SLICE_BUSY = 64
APPLY_SLICE_IDLE = 1000
#: ... and at most this many bytes of entry data (a put_many entry holds 500 keys).
APPLY_SLICE_BUSY_BYTES = 256 * 1024
APPLY_SLICE_IDLE_BYTES = 4 * 1024 * 1024
#: Default of WriterSettings.snapshot_bytes (and of the config's storage.snapshot_bytes).
DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024

#: The default state machine the writer replicates: concord.kv, the same one the raft
#: worker applies (tests inject their own through WriterSettings.state_machine).
DEFAULT_STATE_MACHINE: str | None = "concord.kv.machine:KvStateMachine"


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """
    Attributes:
        fsync: False disables every fdatasync (tests/benchmarks only; logged as WARNING).
        segment_bytes: WAL segment size at which a new segment starts.
        snapshot_entries: write a snapshot every this many applied entries (0: never).
        snapshot_bytes: ... or once this many bytes of entry data were applied since the
            last snapshot, whichever comes first (0: no size trigger). Entries alone
            miss bulk writes: 1,000,000 keys put 500 at a time are only 2,000 entries.
        keep_snapshots: snapshot files kept (the newest ones; at least 2 is safest).
        snapshot_mode: "fork" serializes the replica in a forked child (copy-on-write
            view; the WAL path only pays for fork()); "thread" serializes on the writer's
            loop and compresses/writes/fsyncs in a thread.
        snapshot_compress_level: zlib level of snapshot bodies.
        state_machine: "module:callable" building the replica; None uses
            DEFAULT_STATE_MACHINE; if both are None there is no replica (no snapshots).
        replica: False runs without a replica (WAL only: no apply, no snapshots).
        max_batch_requests: most requests drained into one group commit.
    """

    fsync: bool = True
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    snapshot_entries: int = 10_000
    snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES
    keep_snapshots: int = 2
    snapshot_mode: str = "fork"
    snapshot_compress_level: int = 6
    state_machine: str | None = None
    replica: bool = True
    max_batch_requests: int = 4096

    def __post_init__(self) -> None:
        if self.snapshot_mode not in ("fork", "thread"):
            raise ValueError(f"snapshot_mode must be 'fork' or 'thread', got {self.snapshot_mode!r}")
        if (self.snapshot_entries < 0 or self.snapshot_bytes < 0 or self.keep_snapshots < 1
                or self.max_batch_requests < 1):
            raise ValueError("snapshot_entries >= 0, snapshot_bytes >= 0, keep_snapshots >= 1, "
                             "max_batch_requests >= 1")


# --- protocol encoding ---------------------------------------------------------------------


def _msg(kind: int, *fields: object) -> bytes:
    return codec.packb([PROTOCOL_VERSION, kind, *fields])


def _parse(frame: bytes) -> tuple[int, list[object]]:
    obj = codec.unpackb(frame, "writer message")
    if not isinstance(obj, list) or len(obj) < 2 or type(obj[1]) is not int:
        raise RemoteProtocolError("malformed writer message: expected [version, kind, ...]")
    if obj[0] != PROTOCOL_VERSION:
        raise RemoteProtocolError(f"unsupported writer protocol version {obj[0]!r} (this build speaks {PROTOCOL_VERSION})")
    return obj[1], obj[2:]


def _fields(args: list[object], count: int, kind: str) -> list[object]:
    if len(args) != count:
        raise RemoteProtocolError(f"malformed {kind} message: expected {count} fields, got {len(args)}")
    return args


def _int(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise RemoteProtocolError(f"malformed writer message: {name} is {value!r}, not a uint")
    return value


def _snapshot_to_obj(snap: Snapshot | None) -> object:
    return None if snap is None else [codec.snapshot_meta_to_obj(snap.meta), snap.data]


def _snapshot_from_obj(obj: object) -> Snapshot | None:
    if obj is None:
        return None
    if not isinstance(obj, list) or len(obj) != 2 or type(obj[1]) is not bytes:
        raise RemoteProtocolError("malformed snapshot: expected [meta, data]")
    return Snapshot(codec.snapshot_meta_from_obj(obj[0]), obj[1])


def encode_persist(
    number: int,
    entries: Sequence[Entry],
    hard_state: HardState | None,
    snapshot: Snapshot | None,
    must_sync: bool,
    packer: codec.EntryPacker | None = None,
) -> bytes:
    """
    A PERSIST request. With `packer`, the entries' bytes are spliced in (each entry packed
    once for this request and every AppendEntries carrying it); the bytes are identical.
    """
    hs = None if hard_state is None else codec.hard_state_to_obj(hard_state)
    snap = _snapshot_to_obj(snapshot)
    if packer is None or not entries:
        return _msg(PERSIST, number, codec.entries_to_obj(entries), hs, snap, must_sync)
    return codec.splice_array(
        (PROTOCOL_VERSION, PERSIST, number), packer.pack_entries(entries), (hs, snap, must_sync)
    )


def encode_recovered(state: RecoveredState) -> bytes:
    return _msg(
        READY, _snapshot_to_obj(state.snapshot), codec.hard_state_to_obj(state.hard_state), codec.entries_to_obj(state.entries)
    )


# --- events seen by the raft worker ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persisted:
    """Every PERSIST request up to `number` is durable."""

    number: int


@dataclass(frozen=True, slots=True)
class SnapshotWritten:
    """The writer made a snapshot durable at (index, term) with this membership and hash."""

    index: int
    term: int
    conf_state: ConfState
    state_hash: int
    path: str

    def load(self) -> Snapshot:
        """
        Read the snapshot file (e.g. to give the driver its bytes for InstallSnapshot).
        Valid until `keep_snapshots` newer snapshots have been written.

        Raises:
            CorruptionError, StorageError: the file is damaged or gone.
        """
        return snapfile.read_snapshot(Path(self.path)).snapshot


@dataclass(frozen=True, slots=True)
class WriterStats:
    values: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiskStatus:
    """The writer's disk health: an error message per failing path, None when it works."""

    wal_error: str | None
    snapshot_error: str | None

    @property
    def ok(self) -> bool:
        return self.wal_error is None and self.snapshot_error is None


WriterEvent = Persisted | SnapshotWritten | WriterStats | DiskStatus

_DONE = object()  # next()'s default: the iterator is exhausted


# --- the writer -------------------------------------------------------------------------------


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
        self._applied = 0
        self._applied_term = 0
        self._snapshot_index = 0
        # The replica is restored from the snapshot lazily, by the first apply_some(): the
        # serve loop calls it only after answering the raft worker's HELLO, so the worker
        # rebuilds its state while this process rebuilds the replica.
        self._restore_pending: bytes | None = None
        self._restoring: Iterator[None] | None = None
        self._restore_started = 0.0
        if snap is not None:
            self._applied = self._snapshot_index = snap.meta.index
            self._applied_term = snap.meta.term
            if self._sm is not None:
                self._restore_pending = snap.data
        # Bytes of entry data applied in this life, and their count when the last
        # snapshot (written or installed) was taken: the snapshot_bytes trigger.
        self._applied_bytes = 0
        self._snapshot_bytes_mark = 0
        # The replica's unapplied tail of the log (applied+1 .. last persisted), kept as
        # codec entry objects: Entry objects are built only when applied.
        self._unapplied: collections.deque[list[object]] = collections.deque(
            codec.entries_to_obj(recovery.state.entries)
        )
        # The commit index and the membership at it, from the worker's COMMITTED reports.
        self._membership = SnapshotMembership(
            snap.meta if snap is not None else None, recovery.state.hard_state.commit)
        # The replica waits until the worker applied an entry committed after the start.
        self._replica_waits_for = self._membership.commit
        self._worker_applied = 0
        self._job: _SnapshotJob | None = None
        self._next_retry = 0.0
        self._persisted_number = 0
        self._owed_number = 0  # the last PERSIST number handled (acknowledged once flushed)
        self._wal_error: str | None = None
        self._wal_failed_at = 0.0
        self._snapshot_error: str | None = None
        self._reported_disk = DiskStatus(None, None)
        self._last_number = 0
        self._hellos = 0
        self._next_snapshot_attempt = 0
        self._next_snapshot_attempt_bytes = 0
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
        return self._applied

    @property
    def snapshot_job(self) -> _SnapshotJob | None:
        return self._job

    @property
    def replica_may_run(self) -> bool:
        """
        Whether the serve loop may restore and apply the replica: once a raft worker's
        HELLO was answered and it reported applying an entry committed after the start.
        """
        return self._hellos > 0 and self._worker_applied > self._replica_waits_for

    def _hello_state(self) -> RecoveredState:
        """
        The state to answer HELLO with. The first HELLO gets what start-up recovered; a
        later one comes from a restarted raft worker (the supervisor restarts the raft
        worker alone, rest_for_one), which needs the state durable NOW: everything
        written so far is flushed, so it is re-read from disk (read only), and the new
        worker's PERSIST numbering starts afresh.
        """
        self._hellos += 1
        if self._hellos == 1:
            return self.recovered
        self._last_number = self._owed_number = self._persisted_number = 0
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
            if kind == PERSIST:
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
        if persisted is not None:
            self._owed_number = persisted
        self.flush(need_sync)
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
            if self._wal_error is None:
                self._wal_failed_at = time.monotonic()
                logger.warning("wal write failed: nothing more is acknowledged until a retry "
                               "succeeds retry_every_s=%.2f error=%s", RETRY_INTERVAL_S, exc)
            self._wal_error = str(exc)
            self._next_retry = time.monotonic() + RETRY_INTERVAL_S
            self._report_disk()
            return False
        took = time.monotonic() - started
        if took >= SLOW_FLUSH_S:
            logger.warning("slow wal flush: every write waits for it duration_ms=%.0f", took * 1000)
        if self._wal_error is not None:
            logger.info("wal writable again, unacknowledged batch rewritten outage_ms=%.0f",
                        (time.monotonic() - self._wal_failed_at) * 1000)
            self._wal_error = None
            self._report_disk()
        if self._owed_number > self._persisted_number:
            self._persisted_number = self._owed_number
            self.outbox.append(_msg(PERSISTED, self._owed_number))
        return True

    @property
    def retry_due(self) -> float | None:
        """When the failed WAL flush is to be retried (monotonic seconds), None if healthy."""
        return None if self._wal_error is None else self._next_retry

    def _report_disk(self) -> None:
        status = DiskStatus(self._wal_error, self._snapshot_error)
        if status != self._reported_disk:
            self._reported_disk = status
            self.outbox.append(_msg(DISK, status.wal_error, status.snapshot_error))

    def _persist(self, args: list[object]) -> tuple[int, bool]:
        number, entries_obj, hs_obj, snap_obj, must_sync = _fields(args, 5, "persist")
        number = _int(number, "number")
        if type(must_sync) is not bool:
            raise RemoteProtocolError("malformed persist message: must_sync is not a bool")
        if number <= self._last_number:
            raise RemoteProtocolError(f"persist number {number} is not above {self._last_number}")
        self._last_number = number
        objs = codec.check_entries_obj(entries_obj)
        hs = None if hs_obj is None else codec.hard_state_from_obj(hs_obj)
        snap = _snapshot_from_obj(snap_obj)
        if snap is not None:
            self._install_snapshot(snap)
        if objs:
            first = cast(int, objs[0][2])
            next_index = max(self._wal.last_index, self._snapshot_index, self._applied) + 1
            if first > next_index:
                raise RemoteProtocolError(f"persist appends index {first} but the log ends at {next_index - 1} (gap)")
            if first <= self._applied:
                raise StorageError(f"persist rewrites entry {first} but the writer already applied up to {self._applied}")
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
        self._replica_waits_for = -1  # the replica is current from here on
        self._snapshot_bytes_mark = self._applied_bytes
        if self._sm is not None:
            self._sm.restore(snap.data)
            state_hash = self._sm.state_hash()
        snapfile.write_snapshot(self._snap_dir, snap, state_hash, self._settings.fsync, self._settings.snapshot_compress_level)
        self._wal.mark_snapshot(snap.meta, installed=True)
        self._applied = self._snapshot_index = snap.meta.index
        self._applied_term = snap.meta.term
        self._membership.installed(snap.meta)
        self._unapplied.clear()
        snapfile.prune(self._snap_dir, self._settings.keep_snapshots, self._settings.fsync)
        logger.info("installed snapshot from leader index=%d term=%d", snap.meta.index, snap.meta.term)

    def _committed(self, index: int, conf_state: ConfState | None) -> None:
        self._worker_applied = max(self._worker_applied, index)
        self._membership.committed(index, conf_state)

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
            logger.info("replica restored index=%d duration_ms=%.1f", self._snapshot_index,
                        (time.monotonic() - self._restore_started) * 1000)
        tail = self._unapplied
        commit = self._membership.commit
        done = 0
        size = 0
        while done < limit and size < limit_bytes and tail and cast(int, tail[0][2]) <= commit:
            entry = codec.entry_from_obj(tail.popleft())
            if self._sm is not None:
                apply_entry(self._sm, entry)
            self._applied = entry.index
            self._applied_term = entry.term
            size += len(entry.data)
            done += 1
        self._applied_bytes += size
        self._maybe_start_snapshot()
        return bool(tail) and cast(int, tail[0][2]) <= commit

    def _maybe_start_snapshot(self) -> None:
        every = self._settings.snapshot_entries
        every_bytes = self._settings.snapshot_bytes
        if self._sm is None or (every == 0 and every_bytes == 0) or self._job is not None:
            return
        due_entries = every > 0 and self._applied - self._snapshot_index >= every
        due_bytes = (
            every_bytes > 0
            and self._applied > self._snapshot_index
            and self._applied_bytes - self._snapshot_bytes_mark >= every_bytes
        )
        if not (due_entries or due_bytes):
            return
        conf_state = self._membership.at(self._applied)
        if conf_state is None:
            return  # NB: the membership is only known exactly at a COMMITTED point
        if (self._applied < self._next_snapshot_attempt
                and self._applied_bytes < self._next_snapshot_attempt_bytes):
            return
        meta = SnapshotMeta(self._applied, self._applied_term, conf_state)
        try:
            if self._settings.snapshot_mode == "fork":
                self._job = self._fork_snapshot(self._sm, meta)
            else:
                self._job = self._thread_snapshot(self._sm, meta)
            self._job.applied_bytes = self._applied_bytes
        except OSError as exc:  # fork() or thread start failed (memory, limits): retry later
            self._defer_snapshot()
            logger.warning(
                "cannot start snapshot, will retry index=%d retry_at=%d error=%s",
                meta.index,
                self._next_snapshot_attempt,
                exc,
            )

    def _defer_snapshot(self) -> None:
        """After a failed snapshot: retry once a quarter of either trigger has passed."""
        every, every_bytes = self._settings.snapshot_entries, self._settings.snapshot_bytes
        self._next_snapshot_attempt = self._applied + max(1, every // 4 if every else 1 << 62)
        self._next_snapshot_attempt_bytes = self._applied_bytes + max(
            1, every_bytes // 4 if every_bytes else 1 << 62)

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
            self._defer_snapshot()
            logger.warning(
                "snapshot failed, will retry index=%d retry_at=%d error=%s",
                job.meta.index,
                self._next_snapshot_attempt,
                outcome,
            )
            self._snapshot_error = str(outcome)
            self._report_disk()
            return True
        self._finish_snapshot(job, outcome)
        if self._snapshot_error is not None:
            self._snapshot_error = None
            self._report_disk()
        return True

    def _finish_snapshot(self, job: _SnapshotJob, state_hash: int) -> None:
        meta = job.meta
        self._snapshot_index = max(self._snapshot_index, meta.index)
        self._snapshot_bytes_mark = max(self._snapshot_bytes_mark, job.applied_bytes)
        self.snapshots_written += 1
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
            "applied_index": self._applied,
            "last_index": self._wal.last_index,
            "persisted_number": self._persisted_number,
            "snapshots_written": self.snapshots_written,
            "snapshot_index": self._snapshot_index,
            "segments": len(self._wal.segments),
            "disk_failures": self._wal.failures,
        }

    def close(self) -> None:
        self._abandon_job()
        self._wal.close()


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


# --- the process --------------------------------------------------------------------------------


def serve(writer: LogWriter, endpoint: str, stop: threading.Event | None = None) -> None:
    """
    The writer's loop: drain requests, group-commit, reply, apply, snapshot.

    Runs until a STOP request, `stop` being set, or SIGTERM (when run as a process).
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        running = True
        # NB: nothing is applied (nor the replica restored) before the raft worker has
        # recovered (replica_may_run): the worker's start-up must not wait for the replica.
        more_to_apply = False
        max_batch = writer.settings.max_batch_requests
        while running and not (stop is not None and stop.is_set()):
            job = writer.snapshot_job
            job_fd = job.fd if job is not None and job.fd >= 0 else None
            if job_fd is not None:
                poller.register(job_fd, zmq.POLLIN)
            timeout = 0 if more_to_apply else (20 if job is not None and job_fd is None else 200)
            retry_at = writer.retry_due
            if retry_at is not None:
                timeout = min(timeout, max(0, int((retry_at - time.monotonic()) * 1000)))
            events = dict(poller.poll(timeout))
            if job_fd is not None:
                poller.unregister(job_fd)
            if sock in events:
                frames: list[bytes] = []
                while len(frames) < max_batch:
                    try:
                        frames.append(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                running = writer.handle_batch(frames)
                for reply in writer.outbox:
                    sock.send(reply)
                writer.outbox.clear()
            retry_at = writer.retry_due
            if retry_at is not None and time.monotonic() >= retry_at:
                writer.flush()
            if writer.snapshot_job is not None:
                writer.poll_snapshot()
            # The replica is off the WAL path: while requests wait, apply only a small
            # slice (so it never starves), otherwise a larger one.
            if writer.replica_may_run:
                busy = bool(sock.poll(0, zmq.POLLIN))
                more_to_apply = writer.apply_some(
                    APPLY_SLICE_BUSY if busy else APPLY_SLICE_IDLE,
                    APPLY_SLICE_BUSY_BYTES if busy else APPLY_SLICE_IDLE_BYTES,
                )
            if writer.outbox:
                for reply in writer.outbox:
                    sock.send(reply)
                writer.outbox.clear()
    except (StorageError, ProtocolError) as exc:
        # NB: logged once, by the process's top level (run_log_writer)
        try:
            sock.send(_msg(FAILED, str(exc)), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        raise
    finally:
        writer.close()
        sock.close(0)
        ctx.term()


def run_log_writer(
    data_dir: str,
    endpoint: str,
    settings: WriterSettings | None = None,
    state_machine: StateMachineFactory | None = None,
) -> None:
    """
    Process entry point (a multiprocessing target): recover `data_dir`, then serve
    `endpoint` (e.g. "ipc:///run/concord/n1-writer.sock") until STOP, SIGTERM or SIGINT
    (graceful: everything handled so far is already flushed).

    Exits non-zero (after one ERROR line) if recovery finds corruption or the disk fails.
    """
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        writer = LogWriter(Path(data_dir), settings or WriterSettings(), state_machine)
        serve(writer, endpoint, stop)
    except (StorageError, ProtocolError, ValueError) as exc:
        logger.error("log writer failed data_dir=%s error=%s", data_dir, exc)
        raise SystemExit(1) from exc
    except Exception as exc:  # the process's top level: log once, exit non-zero
        logger.exception("log writer crashed data_dir=%s", data_dir)
        raise SystemExit(1) from exc


# --- the raft worker's side -----------------------------------------------------------------------


class LogWriterClient:
    """
    The raft worker's handle on the writer: implements the driver's LogSink protocol.

    `persist()` only sends; acknowledgements arrive later through `recv()`. Register
    `socket` with a zmq.Poller (POLLIN) to wake up when the writer replies.

    Wiring in the raft worker (sketch):

        client = LogWriterClient(endpoint)
        recovered = client.handshake(timeout_s=30)     # load into MemoryStorage
        driver = Driver(..., log_sink=client)          # persist() goes to the writer
        checker = ReplicaChecker()
        # after applying committed entries up to `applied`:
        checker.record(applied, state_machine.state_hash())
        client.committed(applied, conf_state)          # conf_state may be None if unchanged
        # when poller says client.socket is readable:
        for event in client.recv():
            if isinstance(event, Persisted):
                driver.on_persisted(event.number)
            elif isinstance(event, SnapshotWritten):
                checker.check(event.index, event.state_hash)
                meta = SnapshotMeta(event.index, event.term, event.conf_state)
                driver.on_snapshot_written(meta, event.load().data)
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,  # type: ignore[type-arg]
        packer: codec.EntryPacker | None = None,
    ) -> None:
        """
        Args:
            packer: shared with the peer transport's encoder so an entry is packed once
                for the writer and every peer (None: pack per request).
        """
        self._ctx = context or zmq.Context.instance()
        self._packer = packer
        self.socket: zmq.Socket = self._ctx.socket(zmq.PAIR)  # type: ignore[type-arg]
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self._endpoint = endpoint

    def fileno(self) -> int:
        """The zmq notification fd (edge-triggered: drain `recv()` when it fires)."""
        fd = self.socket.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        return fd

    def handshake(self, timeout_s: float) -> RecoveredState:
        """
        Ask the writer for the state it recovered.

        Raises:
            StorageError: no answer within `timeout_s`, or the writer failed.
        """
        self.socket.send(_msg(HELLO))
        reply = self._wait_for(READY, timeout_s)
        snap_obj, hs_obj, entries_obj = _fields(reply, 3, "ready")
        return RecoveredState(
            _snapshot_from_obj(snap_obj), codec.hard_state_from_obj(hs_obj), codec.entries_from_obj(entries_obj)
        )

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None:
        """Send one Ready's durable part; `Persisted(number)` comes back through recv()."""
        self.socket.send(encode_persist(number, entries, hard_state, snapshot, must_sync, self._packer))

    def committed(self, index: int, conf_state: ConfState | None = None) -> None:
        """
        Entries up to `index` are committed and applied by the worker; `conf_state` is the
        membership in force after them (None: unchanged since the last call). Send it
        at least once after connecting, and whenever it changes.
        """
        self.socket.send(_msg(COMMITTED, index, None if conf_state is None else codec.conf_state_to_obj(conf_state)))

    def request_stats(self) -> None:
        self.socket.send(_msg(STATS))

    def stop(self) -> None:
        """Ask the writer to flush and exit 0 (it answers STOPPED)."""
        self.socket.send(_msg(STOP))

    def recv(self, timeout_ms: int = 0) -> list[WriterEvent]:
        """
        Every event available now (waiting up to `timeout_ms` for the first).

        Raises:
            StorageError: the writer reported a failure (FAILED), or spoke nonsense.
        """
        events: list[WriterEvent] = []
        if timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return events
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return events
            event = self._decode(frame)
            if event is not None:
                events.append(event)

    def _decode(self, frame: bytes) -> WriterEvent | None:
        try:
            kind, args = _parse(frame)
            if kind == PERSISTED:
                (number,) = _fields(args, 1, "persisted")
                return Persisted(_int(number, "number"))
            if kind == SNAPSHOT_WRITTEN:
                index, term, cs, state_hash, path = _fields(args, 5, "snapshot written")
                if type(state_hash) is not int or type(path) is not str:
                    raise RemoteProtocolError("malformed snapshot written message: state_hash or path")
                return SnapshotWritten(
                    _int(index, "index"), _int(term, "term"), codec.conf_state_from_obj(cs), state_hash, path
                )
            if kind == STATS_REPLY:
                (values,) = _fields(args, 1, "stats")
                if not isinstance(values, dict):
                    raise RemoteProtocolError("malformed stats message")
                return WriterStats({str(k): int(v) for k, v in values.items()})
            if kind == STOPPED:
                return None
            if kind == DISK:
                wal_error, snapshot_error = _fields(args, 2, "disk")
                for value in (wal_error, snapshot_error):
                    if value is not None and type(value) is not str:
                        raise RemoteProtocolError("malformed disk message: errors are str or nil")
                return DiskStatus(cast("str | None", wal_error), cast("str | None", snapshot_error))
            if kind == FAILED:
                raise StorageError(f"log writer failed: {args[0] if args else 'no reason given'}")
            if kind == READY:
                return None
            raise RemoteProtocolError(f"unknown writer reply kind {kind}")
        except ProtocolError as exc:
            raise StorageError(f"log writer at {self._endpoint} sent a malformed reply: {exc}") from exc

    def _wait_for(self, kind: int, timeout_s: float) -> list[object]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.socket.poll(remaining_ms, zmq.POLLIN):
                raise StorageError(f"log writer at {self._endpoint} did not answer within {timeout_s}s")
            frame = self.socket.recv()
            got, args = _parse(frame)
            if got == kind:
                return args
            if got == FAILED:
                raise StorageError(f"log writer failed: {args[0] if args else 'no reason given'}")

    def close(self) -> None:
        self.socket.close(0)
