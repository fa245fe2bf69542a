"""
On-disk layout of the write-ahead log: segment headers, record framing, record payloads.

Pure functions over bytes: no file IO here (wal.py and recovery.py do that). All integers
are little-endian.

Segment file `<data_dir>/wal/<seq:016x>-<first_index:016x>.wal`:

    offset  size  field
    0       4     magic            b"CWAL"
    4       1     version          SEGMENT_VERSION (1)
    5       3     reserved         zero
    8       8     seq              u64, segment sequence number (1, 2, ...; gaps allowed
                                   after removal, never reused)
    16      8     first_index      u64, the log index the next appended entry had when the
                                   segment was created (informational; recovery replays
                                   records, it does not trust this)
    24      8     header_checksum  u64, xxh3_64 of bytes 0..23
    32      ...   records, back to back, up to the end of the file

Record (13-byte header + payload):

    offset  size  field
    0       4     length    u32, payload length in bytes (<= MAX_RECORD_BYTES)
    4       8     checksum  u64, xxh3_64 of (length:u32 LE, type:u8, payload)
    12      1     type      u8, RecordType
    13      length payload  msgpack, see below (concord.storage.codec objects, version 1)

Record payloads (msgpack arrays; first element is RECORD_PAYLOAD_VERSION, 1):

    ENTRIES     [1, [entry, ...]]           entries with consecutive indexes; appending
                                            index i drops every entry >= i (Raft §5.3)
    HARD_STATE  [1, hard_state]             the latest one wins
    SNAPSHOT    [1, snapshot_meta, installed:bool]
                                            a snapshot at meta.index was made durable;
                                            installed=True (received from the leader)
                                            discards the whole log before it, False (taken
                                            locally) only the entries <= meta.index

The checksum covers length and type, so a flipped bit anywhere in a record is detected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

import xxhash

from concord.storage import codec
from concord.errors import RemoteProtocolError
from concord.raft.messages import Entry, SnapshotMeta
from concord.raft.state import HardState

SEGMENT_MAGIC = b"CWAL"
SEGMENT_VERSION = 1
SEGMENT_SUFFIX = ".wal"
SEGMENT_HEADER = struct.Struct("<4sB3xQQQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32
_SEGMENT_HEADER_BODY = struct.Struct("<4sB3xQQ")

RECORD_HEADER = struct.Struct("<IQB")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 13
_LENGTH_TYPE = struct.Struct("<IB")
MAX_RECORD_BYTES = 1 << 30

RECORD_PAYLOAD_VERSION = 1

#: What CorruptionError messages tell the operator to do (docs/formats/storage.md).
WAY_FORWARD = (
    "the node cannot start safely; see docs/formats/storage.md 'Recovering from corruption': "
    "move the data dir aside and let the node rejoin from a peer, or restore a backup"
)


class RecordType(IntEnum):
    ENTRIES = 1
    HARD_STATE = 2
    SNAPSHOT = 3


_RECORD_TYPES = frozenset(int(t) for t in RecordType)


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    seq: int
    first_index: int


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """Return (seq, first_index) of a segment file name, or None if it is not one."""
    if not name.endswith(SEGMENT_SUFFIX):
        return None
    stem = name[: -len(SEGMENT_SUFFIX)]
    parts = stem.split("-")
    if len(parts) != 2 or len(parts[0]) != 16 or len(parts[1]) != 16:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None


def encode_segment_header(header: SegmentHeader) -> bytes:
    body = _SEGMENT_HEADER_BODY.pack(SEGMENT_MAGIC, SEGMENT_VERSION, header.seq, header.first_index)
    return body + struct.pack("<Q", xxhash.xxh3_64_intdigest(body))


def decode_segment_header(data: bytes) -> SegmentHeader:
    """
    Raises:
        ValueError: with the reason, if the header is not a valid version-1 header.
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        raise ValueError(f"segment header is {len(data)} bytes, needs {SEGMENT_HEADER_SIZE}")
    magic, version, seq, first_index, checksum = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise ValueError(f"bad segment magic {magic!r}")
    if version != SEGMENT_VERSION:
        raise ValueError(f"unsupported segment version {version} (this build reads {SEGMENT_VERSION})")
    if checksum != xxhash.xxh3_64_intdigest(bytes(data[:24])):
        raise ValueError("segment header checksum mismatch")
    return SegmentHeader(seq, first_index)


def record_checksum(rtype: int, payload: bytes | memoryview) -> int:
    h = xxhash.xxh3_64(_LENGTH_TYPE.pack(len(payload), rtype))
    h.update(payload)
    return h.intdigest()


def encode_record(rtype: RecordType, payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return RECORD_HEADER.pack(len(payload), record_checksum(rtype, payload), rtype) + payload


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record whose checksum verified: its offset in the file, type and payload."""

    offset: int
    type: RecordType
    payload: bytes


def read_record(data: bytes | memoryview, offset: int) -> RawRecord | str:
    """
    Parse the record at `offset`.

    Returns:
        The record, or a reason string (short phrase) if the bytes there are not a valid
        record (too short, bad length, unknown type, checksum mismatch).
    """
    end = len(data)
    if end - offset < RECORD_HEADER_SIZE:
        return f"{end - offset} bytes left, a record header needs {RECORD_HEADER_SIZE}"
    length, checksum, rtype = RECORD_HEADER.unpack_from(data, offset)
    if length > MAX_RECORD_BYTES:
        return f"record length {length} exceeds the maximum {MAX_RECORD_BYTES}"
    start = offset + RECORD_HEADER_SIZE
    if start + length > end:
        return f"record length {length} runs past the end of the file by {start + length - end} bytes"
    payload = data[start : start + length]
    if record_checksum(rtype, payload) != checksum:
        return "record checksum mismatch"
    if rtype not in _RECORD_TYPES:
        return f"unknown record type {rtype}"
    return RawRecord(offset, RecordType(rtype), bytes(payload))


def find_valid_record_after(data: bytes | memoryview, offset: int) -> int | None:
    """
    Return the offset of the first checksum-valid record strictly after `offset`, if any.

    Used to tell a torn tail (nothing valid follows the bad bytes) from corruption in the
    middle of a file (valid records follow). A random 64-bit checksum match is negligible.
    """
    end = len(data)
    raw = bytes(data)
    pos = offset + 1
    while pos <= end - RECORD_HEADER_SIZE:
        length, checksum, rtype = RECORD_HEADER.unpack_from(raw, pos)
        if length == 0 and checksum == 0 and rtype == 0:
            # A run of zeros (a file extended but never written): skip it at C speed.
            pos = max(pos + 1, end - len(raw[pos:].lstrip(b"\0")) - RECORD_HEADER_SIZE + 1)
            continue
        if rtype not in _RECORD_TYPES or pos + RECORD_HEADER_SIZE + length > end:
            pos += 1
            continue
        payload = raw[pos + RECORD_HEADER_SIZE : pos + RECORD_HEADER_SIZE + length]
        if record_checksum(rtype, payload) == checksum:
            return pos
        pos += 1
    return None


# --- payloads ----------------------------------------------------------------------------


def encode_entries_payload(entries: Sequence[Entry], entries_obj: Sequence[object] | None = None) -> bytes:
    """
    Args:
        entries_obj: `codec.entries_to_obj(entries)` if the caller already has it (the
            writer decoded it from a request), to skip re-building it.
    """
    return codec.packb([RECORD_PAYLOAD_VERSION, codec.entries_to_obj(entries) if entries_obj is None else entries_obj])


#: The ENTRIES payload's bytes before its entry array: a 2-array's header and the version.
_ENTRIES_PAYLOAD_HEAD = codec.array_header(2) + codec.packb(RECORD_PAYLOAD_VERSION)


def encode_packed_entries_payload(packed_entries: bytes) -> bytes:
    """
    `encode_entries_payload(entries)` given `packb(entries_to_obj(entries))`, the entries'
    array as already packed (the raft worker's PERSIST carries it): byte for byte the same.
    """
    return _ENTRIES_PAYLOAD_HEAD + packed_entries


def encode_hard_state_payload(hs: HardState) -> bytes:
    return codec.packb([RECORD_PAYLOAD_VERSION, codec.hard_state_to_obj(hs)])


def encode_snapshot_payload(meta: SnapshotMeta, installed: bool) -> bytes:
    return codec.packb([RECORD_PAYLOAD_VERSION, codec.snapshot_meta_to_obj(meta), installed])


def _payload_fields(payload: bytes, what: str, count: int) -> list[object]:
    obj = codec.unpackb(payload, what)
    if not isinstance(obj, list) or len(obj) != count:
        raise RemoteProtocolError(f"malformed {what} record: expected an array of {count}")
    if obj[0] != RECORD_PAYLOAD_VERSION or type(obj[0]) is not int:
        raise RemoteProtocolError(f"malformed {what} record: unsupported payload version {obj[0]!r}")
    return obj


def decode_entries_payload(payload: bytes) -> list[Entry]:
    """
    Raises:
        RemoteProtocolError: malformed payload, or indexes that are not consecutive.
    """
    _, items = _payload_fields(payload, "entries", 2)
    entries = codec.entries_from_obj(items)
    for prev, nxt in zip(entries, entries[1:]):
        if nxt.index != prev.index + 1:
            raise RemoteProtocolError(
                f"malformed entries record: index {nxt.index} follows {prev.index}"
            )
    return entries


def decode_hard_state_payload(payload: bytes) -> HardState:
    _, hs = _payload_fields(payload, "hard state", 2)
    return codec.hard_state_from_obj(hs)


def decode_snapshot_payload(payload: bytes) -> tuple[SnapshotMeta, bool]:
    _, meta, installed = _payload_fields(payload, "snapshot marker", 3)
    if type(installed) is not bool:
        raise RemoteProtocolError("malformed snapshot marker record: installed is not a bool")
    return codec.snapshot_meta_from_obj(meta), installed
