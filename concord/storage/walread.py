"""
Reading the write-ahead log: replay every segment in order, resolve suffix truncations
and snapshot markers, and cut a torn tail (concord.storage.wal writes it).

A record that fails its checksum or framing at the tail of the LAST segment, with nothing
valid after it, is a torn write: it is cut off (the file truncated) with a WARNING naming
the file, offset and bytes dropped. Anything else (a bad record followed by valid ones, a
bad record in an earlier segment, a checksum-valid record that does not decode, a gap in
the indexes) raises CorruptionError naming the file and offset. Nothing is dropped
silently. Byte layout: concord/storage/format.py and docs/formats/storage.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from concord.errors import CorruptionError, ProtocolError, StorageError
from concord.raft.messages import Entry, SnapshotMeta
from concord.raft.state import HardState
from concord.storage import fileutil
from concord.storage.format import (
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    WAY_FORWARD,
    RawRecord,
    RecordType,
    decode_entries_payload,
    decode_hard_state_payload,
    decode_segment_header,
    decode_snapshot_payload,
    find_valid_record_after,
    parse_segment_name,
    read_record,
)

__all__ = ["SegmentInfo", "WalContents", "list_segments", "read_wal"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SegmentInfo:
    """One segment file as the WAL knows it (mutable: the active one grows)."""

    path: Path
    seq: int
    first_index: int
    size: int
    max_index: int = 0  # largest entry index recorded in the segment, 0 if none


@dataclass(slots=True)
class WalContents:
    """
    The result of replaying the WAL.

    Attributes:
        segments: the segment files, oldest first.
        entries: the log after resolving truncations and snapshot markers (consecutive).
        hard_state: the last hard state recorded, if any.
        snapshot: the last snapshot marker recorded, if any.
        torn_bytes_dropped: bytes cut from the tail of the last segment.
    """

    segments: list[SegmentInfo] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    snapshot: SnapshotMeta | None = None
    torn_bytes_dropped: int = 0


def _corrupt(path: Path, offset: int, reason: str) -> CorruptionError:
    return CorruptionError(f"wal file {path} is corrupt at offset {offset}: {reason}; {WAY_FORWARD}")


def list_segments(wal_dir: Path) -> list[tuple[int, int, Path]]:
    """(seq, first_index, path) of every segment file in `wal_dir`, by seq."""
    found = []
    if not wal_dir.is_dir():
        return []
    for path in wal_dir.iterdir():
        parsed = parse_segment_name(path.name)
        if parsed is not None:
            found.append((parsed[0], parsed[1], path))
    found.sort()
    return found


class _LogReplay:
    """Applies ENTRIES and SNAPSHOT records in order to an in-memory log."""

    def __init__(self) -> None:
        self.log: list[Entry] = []

    def append(self, batch: list[Entry], path: Path, offset: int) -> None:
        if not batch:
            return
        log = self.log
        start = batch[0].index
        if not log or start < log[0].index:
            self.log = list(batch)
            return
        last = log[-1].index
        if start > last + 1:
            raise _corrupt(path, offset, f"entries start at index {start} but the log ends at {last} (gap)")
        del log[start - log[0].index :]
        log.extend(batch)

    def snapshot(self, meta: SnapshotMeta, installed: bool) -> None:
        if installed:
            self.log = []
        else:
            self.log = [e for e in self.log if e.index > meta.index]


def _scan_segment(
    path: Path, data: bytes, is_last: bool, repair: bool, contents: WalContents, replay: _LogReplay
) -> SegmentInfo | None:
    header_ok = len(data) >= SEGMENT_HEADER_SIZE
    if header_ok:
        try:
            header = decode_segment_header(data)
        except ValueError as exc:
            # A bad header on the last segment with no valid record in it is a crash while
            # the segment was being created (e.g. its size reached the disk, its bytes did
            # not); with valid records after it, it is corruption.
            if not is_last or find_valid_record_after(memoryview(data), SEGMENT_HEADER_SIZE - 1) is not None:
                raise _corrupt(path, 0, str(exc)) from exc
            header_ok = False
    if not header_ok:
        if not is_last:
            raise _corrupt(path, 0, f"segment is {len(data)} bytes, shorter than its header")
        # A crash while the segment was being created: nothing was ever acknowledged in it.
        logger.warning(
            "removing torn segment left by a crash during creation file=%s offset=0 bytes_dropped=%d",
            path,
            len(data),
        )
        contents.torn_bytes_dropped += len(data)
        if repair:
            path.unlink()
            fileutil.fsync_dir(path.parent)
        return None
    parsed = parse_segment_name(path.name)
    if parsed is None or parsed[0] != header.seq:
        raise _corrupt(path, 0, f"segment header says seq {header.seq} but the file name disagrees")
    info = SegmentInfo(path, header.seq, header.first_index, len(data))
    view = memoryview(data)
    offset = SEGMENT_HEADER_SIZE
    while offset < len(data):
        rec = read_record(view, offset)
        if isinstance(rec, str):
            if not is_last:
                raise _corrupt(path, offset, f"{rec} (not the last segment)")
            following = find_valid_record_after(view, offset)
            if following is not None:
                raise _corrupt(path, offset, f"{rec}, and a valid record follows at offset {following}")
            dropped = len(data) - offset
            logger.warning(
                "cutting torn tail of the last wal segment file=%s offset=%d bytes_dropped=%d reason=%s",
                path,
                offset,
                dropped,
                rec,
            )
            contents.torn_bytes_dropped += dropped
            if repair:
                _truncate(path, offset)
            info.size = offset
            break
        _replay_record(path, rec, contents, replay, info)
        offset = rec.offset + RECORD_HEADER_SIZE + len(rec.payload)
    return info


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replay_record(path: Path, rec: RawRecord, contents: WalContents, replay: _LogReplay, info: SegmentInfo) -> None:
    try:
        if rec.type is RecordType.ENTRIES:
            batch = decode_entries_payload(rec.payload)
            replay.append(batch, path, rec.offset)
            if batch:
                info.max_index = max(info.max_index, batch[-1].index)
        elif rec.type is RecordType.HARD_STATE:
            contents.hard_state = decode_hard_state_payload(rec.payload)
        else:
            meta, installed = decode_snapshot_payload(rec.payload)
            replay.snapshot(meta, installed)
            contents.snapshot = meta
    except ProtocolError as exc:
        raise _corrupt(path, rec.offset, f"checksum-valid {rec.type.name} record does not decode ({exc})") from exc


def read_wal(wal_dir: Path, repair: bool = True) -> WalContents:
    """
    Replay every segment of `wal_dir` (see the module docstring for the rules).

    Args:
        repair: truncate a torn tail / remove a torn new segment on disk (the writer does
            this once at start-up); False only reports them.

    Raises:
        CorruptionError: a bad record anywhere but the torn tail of the last segment.
    """
    contents = WalContents()
    replay = _LogReplay()
    segments = list_segments(wal_dir)
    for pos, (_, _, path) in enumerate(segments):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read wal file {path}: {exc}") from exc
        info = _scan_segment(path, data, pos == len(segments) - 1, repair, contents, replay)
        if info is not None:
            contents.segments.append(info)
    contents.entries = replay.log
    return contents
