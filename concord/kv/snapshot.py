"""
The kv snapshot format and the record digest: encoding a state's parts, decoding a
snapshot body in bounded steps, and the C-level bulk helpers that make restoring a
million keys take about 2 s of CPU. Format (and the state hash's record encoding):
docs/formats/kv.md "Snapshot format" and "State hash".

Pure: bytes in, records out. It never touches a state machine (concord.kv.machine
owns the state and installs what is decoded here).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections import deque
from collections.abc import Generator, Iterable
from dataclasses import dataclass, fields
from itertools import islice, repeat
from operator import attrgetter
from types import MemberDescriptorType
from typing import Final, cast

import msgpack
import xxhash

from concord.bulk import gc_paused
from concord.errors import CorruptionError
from concord.kv.record import KeyRecord, Space
from concord.kv.sessions import Session, session_from_row

SNAPSHOT_MAGIC: Final = b"CKVS"
SNAPSHOT_VERSION: Final = 3
_SNAPSHOT_FIELDS: Final = {1: 6, 2: 7, 3: 7}  # format version -> length of the body array
#: User records per chunk of a version-3 body (one step of `read_body` decodes one).
CHUNK_RECORDS: Final = 16384
#: The integer fields of a record, in the order of a chunk's number columns.
_NUMBER_FIELDS: Final = ("flags", "create_revision", "mod_revision", "version", "expires_at_ms")
#: array typecodes of a number column by width (1, 2, 4, 8 bytes), with their bounds.
_WIDTHS: Final = (("b", 1 << 7), ("h", 1 << 15), ("i", 1 << 31), ("q", 1 << 63))
_TYPECODES: Final = {array(code).itemsize: code for code, _ in _WIDTHS}
_SNAPSHOT_HEADER = struct.Struct("<4sBQ")
_RECORD_HEADER = struct.Struct("<BqqqqqI")


def record_digest(space: int, record: KeyRecord) -> int:
    """xxh3_64 of a record's canonical encoding (part of the state hash)."""
    key = record.key.encode("utf-8")
    head = _RECORD_HEADER.pack(
        space,
        record.flags,
        record.create_revision,
        record.mod_revision,
        record.version,
        record.expires_at_ms,
        len(key),
    )
    value = record.value
    if len(value) < 4096:  # one-shot hashing is faster than streaming for small values
        return xxhash.xxh3_64_intdigest(head + key + value)
    h = xxhash.xxh3_64(head + key)
    h.update(value)
    return h.intdigest()


def encode_snapshot(
    state_hash: int,
    position: tuple[int, int, int],
    user: Iterable[KeyRecord],
    user_count: int,
    system: Iterable[KeyRecord],
    system_count: int,
    session_rows: list[list[object]],
    lease_rows: object,
) -> bytes:
    """
    A snapshot in the current format (version 3): `position` is (applied_index,
    revision, last_ts_ms); `user` and `system` are the records in key order. The user
    records go in chunks of CHUNK_RECORDS, each as columns (`_chunk`); `user_count` is
    how many `user` yields.
    """
    packer = msgpack.Packer(use_bin_type=True)
    parts = [
        _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, state_hash),
        packer.pack_array_header(7),
        *(packer.pack(field) for field in position),
        packer.pack_array_header(-(-user_count // CHUNK_RECORDS)),
    ]
    records = iter(user)
    while chunk := list(islice(records, CHUNK_RECORDS)):
        parts.append(packer.pack(_chunk(chunk)))
    parts.append(packer.pack_array_header(system_count))
    for record in system:
        parts.append(packer.pack(_record_row(record)))
    parts.append(packer.pack(session_rows))
    parts.append(packer.pack(lease_rows))
    return b"".join(parts)


def _chunk(records: list[KeyRecord]) -> list[object]:
    """
    One chunk of a version-3 body: [keys, values, numbers]: numbers holds one bin per
    _NUMBER_FIELDS field, the records' values of it as little-endian signed integers of
    the narrowest width (1, 2, 4 or 8 bytes) that holds them all.
    """
    columns = []
    for name in _NUMBER_FIELDS:
        column = list(map(attrgetter(name), records))
        low, high = min(column), max(column)
        # NB: "q" when none fits: array() then raises OverflowError, naming the problem.
        typecode = next((code for code, bound in _WIDTHS if -bound <= low and high < bound), "q")
        numbers = array(typecode, column)
        if sys.byteorder == "big":
            numbers.byteswap()
        columns.append(numbers.tobytes())
    return [list(map(attrgetter("key"), records)), list(map(attrgetter("value"), records)),
            columns]


def count_user_records(unpacker: msgpack.Unpacker, version: int) -> int:
    """
    How many user records a snapshot body of format `version` holds, read from `unpacker`
    standing at its user records (after the position fields); the unpacker is left
    somewhere inside them. Format 3 counts the keys of every chunk (the array header
    there counts chunks, not records).

    Raises:
        ValueError: a version-3 chunk is not a [keys, values, numbers] array.
        msgpack.UnpackException: the body does not decode.
    """
    count: int = unpacker.read_array_header()
    if version < 3:
        return count
    total = 0
    for _ in range(count):
        if unpacker.read_array_header() != 3:
            raise ValueError("a user-record chunk is not a 3-element array")
        keys: int = unpacker.read_array_header()
        for _ in range(keys):
            unpacker.skip()
        unpacker.skip()  # values
        unpacker.skip()  # number columns
        total += keys
    return total


def read_header(data: bytes) -> tuple[int, int]:
    """
    The (format version, state hash) of a snapshot's header.

    Raises:
        CorruptionError: too short, bad magic or an unsupported version.
    """
    if len(data) < _SNAPSHOT_HEADER.size:
        raise CorruptionError(f"kv snapshot is {len(data)} bytes, shorter than its header")
    magic, version, expected_hash = _SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptionError(f"kv snapshot has bad magic {magic!r}")
    if version not in _SNAPSHOT_FIELDS:
        raise CorruptionError(f"kv snapshot format version {version} is not supported")
    return version, expected_hash


@dataclass(slots=True)
class SnapshotBody:
    """
    A decoded snapshot body, not yet installed.

    Attributes:
        user_digest: the sum (not reduced mod 2**64) of the user records' digests.
        session_rows: the raw session rows (format 1's session digest hashes them).
        lease_rows: unchecked (LeaseTable.load checks them).
    """

    applied_index: int
    revision: int
    last_ts_ms: int
    user: dict[str, KeyRecord]
    expiry: list[tuple[int, str]]
    user_digest: int
    system_records: list[KeyRecord]
    sessions: list[Session]
    session_rows: list[object]
    lease_rows: object


def read_body(
    data: bytes, version: int, rows_per_step: int
) -> Generator[None, None, SnapshotBody]:
    """
    Decode the body after the header in steps of about `rows_per_step` user records
    (version 3: one chunk of them per step), `yield` between them, with the cyclic GC
    paused from the first to the last.

    Raises:
        ValueError, TypeError, msgpack.UnpackException: the body is malformed.
    """
    user: dict[str, KeyRecord] = {}
    expiry: list[tuple[int, str]] = []
    total = 0
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(memoryview(data)[_SNAPSHOT_HEADER.size:])
    if unpacker.read_array_header() != _SNAPSHOT_FIELDS[version]:
        raise ValueError(f"body must be an array of {_SNAPSHOT_FIELDS[version]}")
    applied_index, revision, last_ts_ms = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    for value in (applied_index, revision, last_ts_ms):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("bad position fields")
    remaining = unpacker.read_array_header()  # version 3: chunks; before: records
    user_count = 0
    # NB: the GC stays paused for the whole build, between steps too: re-enabled
    # in between, each step's allocations would trigger collections traversing
    # every record built so far.
    with gc_paused():
        while remaining:
            if version >= 3:
                remaining -= 1
                columns = _chunk_columns(unpacker.unpack())
            else:
                count = min(remaining, rows_per_step)
                remaining -= count
                unpack = unpacker.unpack
                columns = _row_columns([unpack() for _ in range(count)])
            columns = _shared_numbers(columns)
            chunk_keys = columns[0]
            user_count += len(chunk_keys)
            user.update(zip(chunk_keys, _bulk_records(columns)))
            expires = columns[6]
            if any(expires):
                expiry += [(e, k) for e, k in zip(expires, chunk_keys) if e]
            total += sum(_bulk_digests(Space.USER, columns))
            yield
    systems, sessions = unpacker.unpack(), unpacker.unpack()
    if not isinstance(systems, list) or not isinstance(sessions, list):
        raise ValueError("system records and sessions must be lists")
    system_records = [_row_record(row) for row in systems]
    session_list = [session_from_row(row, version) for row in sessions]
    lease_rows = unpacker.unpack() if version >= 2 else []
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        pass
    else:
        raise ValueError("extra data after the body")
    if len(user) != user_count:
        raise ValueError("a user key appears twice")
    return SnapshotBody(applied_index, revision, last_ts_ms, user, expiry, total,
                        system_records, session_list, sessions, lease_rows)


def _record_row(record: KeyRecord) -> list[object]:
    return [
        record.key,
        record.value,
        record.flags,
        record.create_revision,
        record.mod_revision,
        record.version,
        record.expires_at_ms,
    ]


_Columns = tuple[
    list[str], list[bytes], list[int], list[int], list[int], list[int], list[int]
]


def _row_columns(rows: object) -> _Columns:
    """
    The snapshot's record rows as seven columns (key, value, flags, create_revision,
    mod_revision, version, expires_at_ms), checked in bulk as `_row_record` checks one.

    Raises:
        ValueError: a row is not a list of 7, or a field has the wrong type.
    """
    if type(rows) is not list:
        raise ValueError("records must be a list")
    if not rows:
        return [], [], [], [], [], [], []
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {7}:
        raise ValueError("record row must be a list of 7")
    columns = tuple(map(list, zip(*rows)))
    keys, values, *numbers = columns
    if set(map(type, keys)) != {str} or set(map(type, values)) != {bytes}:
        raise ValueError("record key must be str and value bin")
    for column in numbers:
        if set(map(type, column)) != {int}:  # NB: type(True) is bool, not int
            raise ValueError("record numbers must be integers")
    return cast(_Columns, columns)


def _chunk_columns(chunk: object) -> _Columns:
    """
    A version-3 chunk (`_chunk`) as the seven columns `_row_columns` returns, checked:
    the numbers need no check of their own (an integer array decodes to ints only).

    Raises:
        ValueError: not [keys, values, numbers], a key not str, a value not bin, or
            columns of different lengths.
    """
    if type(chunk) is not list or len(chunk) != 3:
        raise ValueError("record chunk must be a list of 3")
    keys, values, packed = chunk
    if type(keys) is not list or type(values) is not list or type(packed) is not list:
        raise ValueError("record chunk must be [keys, values, numbers]")
    count = len(keys)
    if not count or len(values) != count or len(packed) != len(_NUMBER_FIELDS):
        raise ValueError(f"record chunk of {count} keys has {len(values)} values and "
                         f"{len(packed)} number columns")
    if set(map(type, keys)) != {str} or set(map(type, values)) != {bytes}:
        raise ValueError("record key must be str and value bin")
    flags, creates, mods, versions, expires = map(_number_column, packed, repeat(count))
    return keys, values, flags, creates, mods, versions, expires


def _number_column(packed: object, count: int) -> list[int]:
    """A number column of a version-3 chunk: `count` integers of 1, 2, 4 or 8 bytes."""
    if type(packed) is not bytes:
        raise ValueError("number column must be bin")
    typecode = None if len(packed) % count else _TYPECODES.get(len(packed) // count)
    if typecode is None:
        raise ValueError(f"number column of {len(packed)} bytes for {count} records")
    numbers = array(typecode)
    numbers.frombytes(packed)
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers.tolist()


def _shared_numbers(columns: _Columns) -> _Columns:
    """
    `columns` with each distinct revision and expiry time of the chunk held once: msgpack
    decodes every int above 256 as a new 32-byte object, while the records of one entry
    share their mod_revision (and a key written once has create_revision ==
    mod_revision), so a restored state would hold up to 64 bytes per key more than
    the applied one. The table is per chunk, so its size stays bounded.
    """
    table: dict[int, int] = {}
    share = table.setdefault
    keys, values, flags, creates, mods, versions, expires = columns
    if any(expires):
        expires = list(map(share, expires, expires))
    return (keys, values, flags, list(map(share, creates, creates)),
            list(map(share, mods, mods)), versions, expires)


#: KeyRecord's slot descriptors, in field order.
_RECORD_SLOTS: Final[tuple[MemberDescriptorType, ...]] = tuple(
    cast(MemberDescriptorType, getattr(KeyRecord, f.name)) for f in fields(KeyRecord)
)


def _bulk_records(columns: _Columns) -> list[KeyRecord]:
    """
    KeyRecords from columns in field order, built by C-level maps: one object.__new__
    per record, then each slot descriptor's __set__ over a whole column (a frozen
    dataclass's __init__ is Python code, twice as slow for millions of records).
    """
    records: list[KeyRecord] = list(map(object.__new__, repeat(KeyRecord, len(columns[0]))))
    for slot, column in zip(_RECORD_SLOTS, cast(tuple[list[object], ...], columns)):
        deque(map(slot.__set__, records, column), maxlen=0)
    return records


def _bulk_digests(space: int, columns: _Columns) -> list[int]:
    """`record_digest` of every row of `columns`, computed by C-level maps."""
    keys, values, flags, creates, mods, versions, expires = columns
    encoded = list(map(str.encode, keys))
    heads = map(
        _RECORD_HEADER.pack, repeat(space), flags, creates, mods, versions, expires,
        map(len, encoded),
    )
    # NB: xxh3_64 of the concatenation, as record_digest computes it (one-shot or not).
    return list(map(xxhash.xxh3_64_intdigest, map(b"".join, zip(heads, encoded, values))))


def _row_record(row: object) -> KeyRecord:
    if not isinstance(row, list) or len(row) != 7:
        raise ValueError("record row must be a list of 7")
    key, value, flags, create, mod, version, expires = row
    if not isinstance(key, str) or not isinstance(value, bytes):
        raise ValueError("record key must be str and value bin")
    for number in (flags, create, mod, version, expires):
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError("record numbers must be integers")
    return KeyRecord(key, value, flags, create, mod, version, expires)
