"""
The write-ahead log: segment files of checksummed records, group commit, rotation,
suffix truncation by replay, and removal of segments covered by a snapshot.

Byte layout (full table in concord/storage/format.py and docs/formats/storage.md):

    segment  = header(32: magic "CWAL", version u8=1, 3 reserved, seq u64, first_index u64,
               xxh3_64 u64 of the first 24 bytes) record*
    record   = length u32 | xxh3_64(length, type, payload) u64 | type u8 | payload
    types    = 1 ENTRIES [1, [entry...]] | 2 HARD_STATE [1, hs] | 3 SNAPSHOT [1, meta, installed]

Writing. Records are encoded into an in-memory batch; `flush()` issues ONE write of the
whole batch and ONE fdatasync (group commit: the caller collects everything that arrived
while the previous fdatasync ran, then flushes once). A batch never spans segments: when
the active segment has reached `segment_bytes`, the next flush first starts a new segment
whose first record is the current hard state, so removing old segments never loses it.

Suffix truncation. Appending entries that start at index i means "drop everything from i
on" (Raft §5.3). The WAL never rewrites a file in place for that: it appends, and replay
(`read_wal`) resolves it. That keeps every write an append, so a crash can only tear the
tail.

Reading. `read_wal` (concord.storage.walread) replays every segment in order and cuts a
torn tail; anything else that is damaged raises CorruptionError naming the file and
offset. Nothing is dropped silently.

Must never: acknowledge anything itself (callers do, after `flush()` returns), or modify
a record that `flush()` has returned for.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from concord.errors import CorruptionError, DiskError, ProtocolError, StorageError
from concord.metrics import node as metrics
from concord.raft.messages import Entry, SnapshotMeta
from concord.raft.state import HardState
from concord.storage import faults, fileutil
from concord.storage.fileutil import SyncHook
from concord.storage.format import (
    SEGMENT_HEADER_SIZE,
    RecordType,
    SegmentHeader,
    encode_entries_payload,
    encode_hard_state_payload,
    encode_packed_entries_payload,
    encode_record,
    encode_segment_header,
    encode_snapshot_payload,
    segment_name,
)
from concord.storage.walread import SegmentInfo, WalContents

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WalOptions:
    """
    Attributes:
        segment_bytes: a new segment is started once the active one reaches this size.
        fsync: False skips every fdatasync (tests and benchmarks only; logged as WARNING).
    """

    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.segment_bytes < SEGMENT_HEADER_SIZE + 1:
            raise ValueError(f"segment_bytes {self.segment_bytes} is too small")


class WAL:
    """
    Appends records to the active segment; see the module docstring.

    Not thread-safe: one owner (the log writer loop, or `GroupCommitter`).

    Args:
        wal_dir: the folder of segment files (created if missing).
        options: segment size and fsync switch.
        contents: the replay of `wal_dir` (from `read_wal(..., repair=True)`).
        sync_hook: called with the fd for each data sync (default os.fdatasync); tests
            inject a counting hook.
    """

    def __init__(
        self,
        wal_dir: Path,
        options: WalOptions,
        contents: WalContents,
        sync_hook: SyncHook | None = None,
    ) -> None:
        self._dir = wal_dir
        self._options = options
        self._sync_hook = sync_hook or fileutil.fdatasync
        self._sync: SyncHook | None = self._synced if options.fsync else None
        if not options.fsync:
            fileutil.warn_fsync_disabled("wal", wal_dir)
        self._segments: list[SegmentInfo] = list(contents.segments)
        self._hard_state = contents.hard_state or HardState()
        self._last_index = contents.entries[-1].index if contents.entries else (
            contents.snapshot.index if contents.snapshot else 0
        )
        self._pending: list[bytes] = []
        self._pending_max_index = 0
        self._pending_hard_state: HardState | None = None
        self.sync_count = 0
        self.write_count = 0
        self.failures = 0
        # The active segment's size the last successful fdatasync covered (commit-only
        # hard states written after it are not synced); after a failed flush, that
        # durable end; and whether the retried batch owes an fdatasync.
        self._synced_size = 0
        self._failed_size: int | None = None
        self._sync_owed = False
        self._fd = -1
        try:
            if not wal_dir.is_dir():
                wal_dir.mkdir(parents=True)
                if self._sync is not None:
                    fileutil.fsync_dir(wal_dir.parent)  # the new folder's entry must be durable too
            if self._segments:
                active = self._segments[-1]
                on_disk = active.path.stat().st_size
                if on_disk != active.size:
                    raise StorageError(
                        f"wal file {active.path} is {on_disk} bytes but its valid records end at "
                        f"{active.size}: open the WAL from read_wal(..., repair=True)"
                    )
                self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
                self._synced_size = active.size  # replayed from disk at start
            else:
                self._start_segment()
        except OSError as exc:
            raise StorageError(f"cannot open wal in {wal_dir}: {exc}") from exc

    # --- batching ------------------------------------------------------------------------

    def append_entries(self, entries: Sequence[Entry], entries_obj: Sequence[object] | None = None) -> None:
        """
        Queue entries (consecutive indexes); the first one's index truncates from there on.

        Args:
            entries_obj: their codec objects, if already at hand (equal to
                `codec.entries_to_obj(entries)`), to skip re-building them.

        Raises:
            ValueError: the indexes are not consecutive (nothing is queued).
        """
        if not entries:
            return
        batch = list(entries)
        for prev, nxt in zip(batch, batch[1:]):
            if nxt.index != prev.index + 1:
                raise ValueError(f"entry index {nxt.index} follows {prev.index}")
        self._pending.append(encode_record(RecordType.ENTRIES, encode_entries_payload(batch, entries_obj)))
        self._pending_max_index = max(self._pending_max_index, batch[-1].index)
        self._last_index = batch[-1].index

    def append_packed_entries(self, first: int, count: int, packed: bytes) -> None:
        """
        Like `append_entries`, from the entries' msgpack array as `codec` packs it
        (`packb(entries_to_obj(entries))`, `count` entries from index `first`): the
        writer's hot path, which neither decodes nor re-encodes them. The record is byte
        for byte the one `append_entries` writes; the caller vouches for the array.
        """
        if not count:
            return
        self._pending.append(encode_record(RecordType.ENTRIES, encode_packed_entries_payload(packed)))
        last = first + count - 1
        self._pending_max_index = max(self._pending_max_index, last)
        self._last_index = last

    def set_hard_state(self, hs: HardState) -> None:
        self._pending.append(encode_record(RecordType.HARD_STATE, encode_hard_state_payload(hs)))
        self._pending_hard_state = hs

    def mark_snapshot(self, meta: SnapshotMeta, installed: bool) -> None:
        """Queue a snapshot marker (the snapshot file must already be durable)."""
        self._pending.append(encode_record(RecordType.SNAPSHOT, encode_snapshot_payload(meta, installed)))
        if installed:
            self._last_index = meta.index

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self, sync: bool = True) -> int:
        """
        Write everything queued with one write, then one fdatasync if `sync`.

        After a failed flush the batch stays queued (it was never acknowledged) and the
        next call first seals the segment that failed (`_seal_failed_segment`), so a
        caller can simply call `flush()` again later, e.g. once disk space returns.

        Returns:
            The number of bytes written.

        Raises:
            DiskError: the write or sync failed (ENOSPC, EIO, ...): nothing queued is
                durable; the WAL is left able to retry.
        """
        if not self._pending:
            return 0
        sync = sync or self._sync_owed
        try:
            if self._failed_size is not None:
                self._seal_failed_segment()
            active = self._segments[-1]
            if active.size >= self._options.segment_bytes:
                self._rotate()
                active = self._segments[-1]
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            good_size = active.size
            try:
                started = time.perf_counter()
                self._write(data)
                written = time.perf_counter()
                self.write_count += 1
                active.size += len(data)
                synced = None
                if sync and self._sync is not None:
                    self._sync(self._fd)
                    synced = time.perf_counter() - written
                    self.sync_count += 1
                    self._synced_size = active.size
                metrics.wal_flushed(written - started, synced, len(data), len(self._pending))
            except OSError:
                # NB: what earlier unsynced flushes (commit-only hard states) wrote may
                # have been in the writeback that failed, so the durable end is the last
                # synced size; the hard state is restated at the head of the new segment.
                self._failed_size = self._synced_size if self._sync is not None else good_size
                raise
        except OSError as exc:
            self._sync_owed = self._sync_owed or sync
            self.failures += 1
            metrics.wal_failed()
            raise DiskError(f"wal write failed in {self._dir}: {fileutil.describe_os_error(exc)}") from exc
        self._sync_owed = False
        active.max_index = max(active.max_index, self._pending_max_index)
        if self._pending_hard_state is not None:
            self._hard_state = self._pending_hard_state
        self._pending = []
        self._pending_max_index = 0
        self._pending_hard_state = None
        return len(data)

    def _write(self, data: bytes) -> None:
        code = faults.hit("wal_write")
        if code:  # test-only: a torn append, as a full disk leaves it
            fileutil.write_all(self._fd, data[: len(data) // 2])
            raise OSError(code, f"{os.strerror(code)} (injected disk fault at wal_write)")
        fileutil.write_all(self._fd, data)

    def _synced(self, fd: int) -> None:
        """The data sync of every flush: the configured hook, behind the test-only seam."""
        faults.check("wal_sync")
        assert self._sync_hook is not None
        self._sync_hook(fd)

    def _seal_failed_segment(self) -> None:
        """
        Make the WAL writable again after a failed write or fdatasync.

        NB (fsyncgate): after a failed fdatasync the kernel may have dropped the dirty
        pages or marked them clean, so a second fdatasync of the same file can report
        success for data that never reached the disk. The batch that failed is therefore
        never re-synced in place: the failed segment is cut back to the last offset a
        successful fdatasync covered (ftruncate + fsync: the unknown pages are discarded,
        what precedes them was durable already), closed, and a FRESH segment is started;
        the caller then rewrites the batch from its in-memory copy (it was never
        acknowledged, so memory is its authoritative copy). Replay sees a valid sealed
        segment followed by the new one, never a torn record mid-log.

        Raises:
            OSError: the cut or the new segment failed (still failed: try again later).
        """
        active = self._segments[-1]
        assert self._failed_size is not None
        os.ftruncate(self._fd, self._failed_size)
        if self._sync is not None:
            os.fsync(self._fd)
        active.size = self._failed_size
        # Until the new segment exists the old one is the tail again (a restart replays
        # it); if starting it fails, the next retry cuts again (idempotent) and retries.
        self._start_segment()
        self._failed_size = None
        logger.info("wal continues in a new segment after a failed write sealed=%s size=%d",
                    active.path.name, active.size)

    @property
    def failed(self) -> bool:
        """A write or sync failed and has not been retried successfully yet."""
        return self._failed_size is not None or self._sync_owed

    # --- segments ------------------------------------------------------------------------

    def _start_segment(self) -> None:
        seq = self._segments[-1].seq + 1 if self._segments else 1
        first_index = self._last_index + 1
        path = self._dir / segment_name(seq, first_index)
        data = encode_segment_header(SegmentHeader(seq, first_index))
        if not self._hard_state.is_empty:
            # Each segment restates the hard state, so removing older segments never
            # loses the latest one.
            data += encode_record(RecordType.HARD_STATE, encode_hard_state_payload(self._hard_state))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            faults.check("wal_write")
            fileutil.write_all(fd, data)
            if self._sync is not None:
                os.fsync(fd)
                fileutil.fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            # Nothing in it was ever acknowledged; leaving it would make a retry's
            # O_EXCL create fail (and a restart see a torn new segment).
            path.unlink(missing_ok=True)
            raise
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._segments.append(SegmentInfo(path, seq, first_index, len(data)))
        self._synced_size = len(data)
        logger.info("started wal segment file=%s first_index=%d", path.name, first_index)

    def _rotate(self) -> None:
        # The hard state in flight belongs to the new segment's restatement only once durable.
        self._start_segment()

    @property
    def segments(self) -> list[SegmentInfo]:
        return list(self._segments)

    @property
    def last_index(self) -> int:
        return self._last_index

    def remove_covered(self, index: int) -> list[Path]:
        """
        Delete the oldest segments whose entries all have index <= `index` (covered by a
        durable snapshot at `index`). The active segment is never removed.

        Returns:
            The removed files.
        """
        removed: list[Path] = []
        while len(self._segments) > 1 and self._segments[0].max_index <= index:
            seg = self._segments.pop(0)
            try:
                seg.path.unlink()
            except OSError as exc:
                raise StorageError(f"cannot remove wal segment {seg.path}: {exc}") from exc
            removed.append(seg.path)
        if removed:
            if self._sync is not None:
                try:
                    fileutil.fsync_dir(self._dir)
                except OSError as exc:
                    raise StorageError(f"cannot fsync wal folder {self._dir}: {exc}") from exc
            logger.info(
                "removed wal segments covered by snapshot index=%d count=%d last=%s",
                index,
                len(removed),
                removed[-1].name,
            )
        return removed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GroupCommitter:
    """
    Thread-safe group commit over a WAL (leader/follower).

    Each `submit()` queues its records and blocks until they are durable. The first caller
    to find no flush running becomes the leader: it takes the WHOLE queue, does one write
    and one fdatasync outside the lock, then wakes everyone. Requests that arrive while
    that fdatasync runs wait together and go out in the next single write + fdatasync.
    """

    def __init__(self, wal: WAL) -> None:
        self._wal = wal
        self._cond = threading.Condition()
        self._queue: list[tuple[int, Sequence[Entry], HardState | None, bool]] = []
        self._next_ticket = 1
        self._durable_ticket = 0
        self._flushing = False
        self._failure: StorageError | None = None

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, entries: Sequence[Entry] = (), hard_state: HardState | None = None, must_sync: bool = True) -> None:
        """
        Raises:
            StorageError: the flush carrying this request failed.
        """
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._queue.append((ticket, entries, hard_state, must_sync))
            while self._durable_ticket < ticket:
                if self._failure is not None:
                    raise self._failure
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                batch, self._queue = self._queue, []
                self._cond.release()
                try:
                    failure = self._flush(batch)
                finally:
                    self._cond.acquire()
                self._flushing = False
                if failure is not None:
                    self._failure = failure
                else:
                    self._durable_ticket = batch[-1][0]
                self._cond.notify_all()
            if self._failure is not None and self._durable_ticket < ticket:
                raise self._failure

    def _flush(self, batch: list[tuple[int, Sequence[Entry], HardState | None, bool]]) -> StorageError | None:
        try:
            for _, entries, hs, _ in batch:
                self._wal.append_entries(entries)
                if hs is not None:
                    self._wal.set_hard_state(hs)
            self._wal.flush(sync=any(sync or bool(entries) for _, entries, _, sync in batch))
        except StorageError as exc:
            return exc
        return None
