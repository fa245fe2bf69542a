"""
The log writer's IPC: the messages between the raft worker and the writer process.

Wire protocol (ZeroMQ PAIR over ipc, one msgpack array per message, LINGER=0):

    every message      [PROTOCOL_VERSION=3, kind:uint, ...fields]
    worker -> writer
      HELLO       1    []                                  -> READY
      PERSIST     2    [number, first_index:uint, count:uint, entries:bin, hard_state|nil,
                        snapshot|nil, must_sync:bool]
                       entries = the msgpack array of the `count` entries (codec entry
                       objects, indexes first_index, first_index+1, ...), packed by the
                       worker: exactly the array the WAL's ENTRIES record holds, which
                       the writer copies in without decoding it (it checks the array's
                       header against `count` and first_index against its log's end);
                       no entries: first_index 0, count 0, entries 0x90 (the empty array).
                       Version 2 sent [number, [entry...], ...] as msgpack objects.
                       snapshot = [snapshot_meta, data:bin] (installed from the leader)
      (3: COMMITTED in version 1, when the writer kept a replica; no longer sent)
      STATS       4    []                                  -> STATS_REPLY
      STOP        5    []    flush, answer STOPPED, exit 0
      TRACE       6    [number, [traceparent...]]   sent just before the PERSIST numbered
                       `number` when it carries sampled entries (tracing on): the writer
                       records a span per traceparent until that PERSIST is durable
                       (concord/node/tracing.py); never sent with tracing off
      SNAPSHOT_TAKEN 7 [snapshot_meta, state_hash:int]   the worker made its own snapshot
                       at snapshot_meta durable, as the file <data_dir>/snap/
                       <index:016x>-<term:016x>.snap (concord.node.snapshot_fork), at an
                       index the worker knew persisted: the writer prunes the snapshots
                       to the newest `keep_snapshots` and deletes the WAL segments it covers
    writer -> worker
      READY       101  [snapshot_meta|nil, hard_state, [entry...]]   the recovered state:
                       the snapshot is the file <data_dir>/snap/<index:016x>-<term:016x>
                       .snap, which the worker reads itself (version 1 sent its bytes)
      PERSISTED   102  [number]   every PERSIST up to `number` is durable (cumulative)
      (103: SNAPSHOT_WRITTEN in version 1, when the writer made the snapshots)
      STATS_REPLY 104  [{name: int}]
      STOPPED     105  []
      FAILED      106  [message]  sent just before the writer exits non-zero
      DISK        107  [wal_error|nil, snapshot_error|nil]  the disk's health changed:
                       a message per failing path (WAL append/sync; snapshot_error is
                       always nil since version 2: the worker writes its own snapshots
                       and sees their failures), nil once it works again; sent on every
                       change

Entries, hard states, conf states and snapshot metas use concord.storage.codec (version 1).

Pure: encoding and decoding only (no socket: concord.node.logwriter.loop and
concord.node.logwriter.client own those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, cast

from concord.storage import codec
from concord.errors import RemoteProtocolError, StorageError
from concord.raft.messages import Entry, Snapshot, SnapshotMeta
from concord.raft.state import HardState
from concord.storage.recovery import RecoveredState

PROTOCOL_VERSION = 3

HELLO = 1
PERSIST = 2
STATS = 4
STOP = 5
TRACE = 6
SNAPSHOT_TAKEN = 7
READY = 101
PERSISTED = 102
STATS_REPLY = 104
STOPPED = 105
FAILED = 106
DISK = 107


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
    A PERSIST request. With `packer`, the entries are packed through it (each entry once
    for this request and every AppendEntries carrying it); the bytes are identical.

    Raises:
        ValueError: the entries do not span first..first+count-1 (the writer does not
            decode them, so the check is made here).
    """
    hs = None if hard_state is None else codec.hard_state_to_obj(hard_state)
    snap = _snapshot_to_obj(snapshot)
    if not entries:
        return _msg(PERSIST, number, 0, 0, codec.array_header(0), hs, snap, must_sync)
    if entries[-1].index - entries[0].index != len(entries) - 1:
        raise ValueError(f"entries {entries[0].index}..{entries[-1].index} are not {len(entries)} consecutive indexes")
    packed = codec.packb(codec.entries_to_obj(entries)) if packer is None else packer.pack_entries(entries)
    return _msg(PERSIST, number, entries[0].index, len(entries), packed, hs, snap, must_sync)


@dataclass(frozen=True, slots=True)
class PersistRequest:
    """A decoded PERSIST: the entries stay the packed array the worker sent."""

    number: int
    first_index: int
    count: int
    entries: bytes
    hard_state: HardState | None
    snapshot: Snapshot | None
    must_sync: bool


def decode_persist(args: list[object]) -> PersistRequest:
    """
    PERSIST's fields. The entries are not decoded: only their array header is checked
    against `count`.

    Raises:
        RemoteProtocolError (or ProtocolError): malformed.
    """
    number, first, count, entries, hs_obj, snap_obj, must_sync = _fields(args, 7, "persist")
    number, first, count = _int(number, "number"), _int(first, "first_index"), _int(count, "count")
    if type(must_sync) is not bool:
        raise RemoteProtocolError("malformed persist message: must_sync is not a bool")
    if type(entries) is not bytes or not entries.startswith(codec.array_header(count)):
        raise RemoteProtocolError(f"malformed persist message: entries are not a packed array of {count}")
    if count and not first:
        raise RemoteProtocolError("malformed persist message: entries from index 0")
    hs = None if hs_obj is None else codec.hard_state_from_obj(hs_obj)
    return PersistRequest(number, first, count, entries, hs, _snapshot_from_obj(snap_obj), must_sync)


def encode_snapshot_taken(meta: SnapshotMeta, state_hash: int) -> bytes:
    return _msg(SNAPSHOT_TAKEN, codec.snapshot_meta_to_obj(meta), state_hash)


def decode_snapshot_taken(args: list[object]) -> SnapshotMeta:
    """SNAPSHOT_TAKEN's meta. Raises RemoteProtocolError: malformed."""
    meta_obj, state_hash = _fields(args, 2, "snapshot taken")
    if type(state_hash) is not int:
        raise RemoteProtocolError("malformed snapshot taken message: state_hash is not an int")
    return codec.snapshot_meta_from_obj(meta_obj)


def encode_recovered(state: RecoveredState) -> bytes:
    """READY: the snapshot by its meta only (its file is named after it)."""
    snap = None if state.snapshot is None else codec.snapshot_meta_to_obj(state.snapshot.meta)
    return _msg(READY, snap, codec.hard_state_to_obj(state.hard_state), codec.entries_to_obj(state.entries))


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    """The writer's READY: the snapshot's meta (its file holds the data), hard state, entries."""

    snapshot: SnapshotMeta | None
    hard_state: HardState
    entries: list[Entry]


def decode_recovered(args: list[object]) -> HelloAnswer:
    """READY's fields. Raises RemoteProtocolError (or ProtocolError): malformed."""
    snap_obj, hs_obj, entries_obj = _fields(args, 3, "ready")
    return HelloAnswer(None if snap_obj is None else codec.snapshot_meta_from_obj(snap_obj),
                     codec.hard_state_from_obj(hs_obj), codec.entries_from_obj(entries_obj))


# --- events seen by the raft worker ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persisted:
    """Every PERSIST request up to `number` is durable."""

    number: int


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


WriterEvent = Persisted | WriterStats | DiskStatus


def decode_event(frame: bytes) -> WriterEvent | None:
    """
    One writer -> worker message as an event (None: READY and STOPPED, which carry none).

    Raises:
        RemoteProtocolError: a malformed message.
        StorageError: the writer reported FAILED.
    """
    kind, args = _parse(frame)
    if kind == PERSISTED:
        (number,) = _fields(args, 1, "persisted")
        return Persisted(_int(number, "number"))
    if kind == STATS_REPLY:
        (values,) = _fields(args, 1, "stats")
        if not isinstance(values, dict):
            raise RemoteProtocolError("malformed stats message")
        return WriterStats({str(k): int(v) for k, v in values.items()})
    if kind == DISK:
        wal_error, snapshot_error = _fields(args, 2, "disk")
        for value in (wal_error, snapshot_error):
            if value is not None and type(value) is not str:
                raise RemoteProtocolError("malformed disk message: errors are str or nil")
        return DiskStatus(cast("str | None", wal_error), cast("str | None", snapshot_error))
    if kind == FAILED:
        raise StorageError(f"log writer failed: {args[0] if args else 'no reason given'}")
    if kind in (READY, STOPPED):
        return None
    raise RemoteProtocolError(f"unknown writer reply kind {kind}")
