"""
Versioned msgpack encoding of the consensus types, shared by storage and the network.

It lives in storage, the lowest layer that may use msgpack and that both the WAL and the
node's peer messaging reach (the consensus core stays free of it).

Never trusts its input: every decoder checks the version, the shape and the type of every
field, and raises `concord.errors.RemoteProtocolError` (a `ProtocolError`) naming what
was wrong. Storage translates that into `CorruptionError` naming the file and offset.

Encoding (msgpack arrays; the first element is the codec version, currently 1):

    Entry         [1, term:uint, index:uint, type:uint (EntryType), data:bin, timestamp_ms:uint]
    HardState     [1, term:uint, vote:str|nil, commit:uint]
    ConfState     [1, voters:[str], learners:[str], voters_outgoing:[str],
                   learners_next:[str], auto_leave:bool]
    SnapshotMeta  [1, index:uint, term:uint, conf_state:ConfState]
    Message       [1, type:uint (MessageType >= 4), to:str, frm:str, term:uint,
                   log_term:uint, index:uint, entries:[Entry], commit:uint, reject:bool,
                   reject_hint:uint, context:bin, snapshot:[SnapshotMeta, data:bin]|nil,
                   snapshot_offset:uint, snapshot_done:bool, trace?]
                  (a raft peer message; the payload of a peer DATA frame). `trace`, an
                  optional 16th item sent only on an APPEND carrying sampled entries,
                  is [[entry index:uint, W3C traceparent:str]...] (pairs, since map keys
                  must be strings here; concord/node/tracing.py); a reader with tracing
                  off ignores it

`*_to_obj` / `*_from_obj` convert to and from the plain msgpack object so a larger
message (a WAL record, a writer request, a peer message) can embed the types without
packing twice; `encode_*` / `decode_*` produce and parse standalone bytes.

Encode once. A msgpack array is its header followed by its items' encodings, so the bytes
of an entry list can be spliced into a larger array (`splice_array`) with no change to a
single byte. `EntryPacker` keeps each recently sent entry's packed bytes, so the leader
packs an entry once for every AppendEntries to every peer and for the log writer's
PERSIST request, instead of once per message (the same bytes `encode_message` would give).

Every `uint` is 0..MAX_UINT (2**62 - 1); a larger one is malformed (see MAX_UINT).

A reader that meets a version it does not know refuses the data (never guesses). To
change an encoding, bump CODEC_VERSION, keep decoding the old version, and document both
in docs/formats/storage.md.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Sequence

import msgpack

from concord.errors import RemoteProtocolError
from concord.ids import NodeId
from concord.raft.messages import (
    LOCAL_MESSAGE_TYPES,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
    make_entry,
)
from concord.raft.state import HardState

CODEC_VERSION = 1

_ENTRY_TYPES = frozenset(int(t) for t in EntryType)


def _fail(what: str, detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {what}: {detail}")


def _array(obj: object, what: str, length: int, optional: int = 0) -> list[object]:
    if not isinstance(obj, (list, tuple)):
        raise _fail(what, f"expected an array, got {type(obj).__name__}")
    if len(obj) == 0:
        raise _fail(what, "empty array")
    version = obj[0]
    if type(version) is not int:
        raise _fail(what, f"version is {type(version).__name__}, not int")
    if version != CODEC_VERSION:
        raise _fail(what, f"unsupported codec version {version} (this build reads {CODEC_VERSION})")
    if not length <= len(obj) <= length + optional:
        raise _fail(what, f"expected {length} fields, got {len(obj)}")
    return list(obj)


#: The largest uint any decoder accepts. Terms, indexes and timestamps live in 64-bit
#: fields everywhere (msgpack, the WAL, shared memory, the state hash), and Raft adds to
#: them (a term grows by one per election): a value that decodes must leave room for that.
#: 2**62 - 1 leaves 2**62 increments before any int64 field could overflow. Without this
#: bound one forged peer message with term 2**64 - 1 was persisted by every node, whose
#: next election then overflowed msgpack: every raft worker crashed and crashed again on
#: restart (found by the wire fuzzer, tests/fault/test_fuzz_wire.py).
MAX_UINT = 2**62 - 1


def _uint(value: object, what: str, name: str) -> int:
    # NB: bool is a subclass of int; a bool where an int belongs is malformed.
    if type(value) is not int:
        raise _fail(what, f"{name} is {type(value).__name__}, not int")
    if value < 0:
        raise _fail(what, f"{name} is negative ({value})")
    if value > MAX_UINT:
        raise _fail(what, f"{name} {value} is over the limit {MAX_UINT}")
    return value


def _node_ids(value: object, what: str, name: str) -> tuple[NodeId, ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(what, f"{name} is {type(value).__name__}, not an array")
    out: list[NodeId] = []
    for item in value:
        if type(item) is not str or not item:
            raise _fail(what, f"{name} holds {item!r}, not a non-empty string")
        out.append(NodeId(item))
    return tuple(out)


def unpackb(data: bytes, what: str) -> object:
    """
    Unpack one msgpack object strictly: no trailing bytes, valid UTF-8, string map keys.

    Raises:
        RemoteProtocolError: the bytes are not exactly one msgpack object.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail(what, f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData as exc:
        raise _fail(what, "trailing bytes after the msgpack object") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # UnicodeDecodeError and msgpack's FormatError/StackError are ValueErrors.
        raise _fail(what, f"not valid msgpack ({exc})") from exc


_packers = threading.local()
#: A thread's Packer starts this small and, once a pack outgrew `_PACKER_KEEP_BYTES`, is
#: dropped: no thread keeps a big buffer for a big object it once packed (a snapshot).
_PACKER_START_BYTES = 4096
_PACKER_KEEP_BYTES = 64 * 1024


def packb(obj: object) -> bytes:
    """Pack a plain object (bin for bytes, str for text)."""
    # NB: one Packer per thread, reused (as concord.net.wire.pack): msgpack.packb builds
    # one per call, about 0.8 us, more than packing a peer message's fields. A failed
    # pack leaves the Packer empty.
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, buf_size=_PACKER_START_BYTES)
    data: bytes = packer.pack(obj)
    if len(data) > _PACKER_KEEP_BYTES:
        del _packers.packer
    return data


def array_header(length: int) -> bytes:
    """The msgpack header of an array of `length` items (what `packb` writes before them)."""
    if length < 16:
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def splice_array(head: Sequence[object], packed: bytes, tail: Sequence[object]) -> bytes:
    """
    `packb([*head, X, *tail])` where `packed` is `packb(X)`, without unpacking or
    re-packing X: byte-identical to packing the whole array at once.
    """
    # NB: packb of a list writes its array header first; [1:] drops it only when it is
    # one byte (fixarray), which holds for <= 15 items, asserted by the length check.
    if len(head) > 15 or len(tail) > 15:
        raise ValueError("splice_array handles a head and a tail of at most 15 items each")
    parts = [array_header(len(head) + 1 + len(tail))]
    if head:
        parts.append(packb(list(head))[1:])
    parts.append(packed)
    if tail:
        parts.append(packb(list(tail))[1:])
    return b"".join(parts)


# --- Entry -------------------------------------------------------------------------------


def entry_to_obj(entry: Entry) -> list[object]:
    return [CODEC_VERSION, entry.term, entry.index, int(entry.type), entry.data, entry.timestamp_ms]


_ENTRY_TYPE_BY_INT = {int(t): t for t in EntryType}


def _is_wellformed_entry(obj: object) -> bool:
    """The fast check of an entry object; what fails it goes through the checked path."""
    if type(obj) is not list or len(obj) != 6:
        return False
    version, term, index, etype, data, ts = obj
    return (
        type(version) is int
        and version == CODEC_VERSION
        and type(term) is int
        and type(index) is int
        and type(ts) is int
        and type(data) is bytes
        and type(etype) is int
        and 0 <= term <= MAX_UINT
        and 0 <= index <= MAX_UINT
        and 0 <= ts <= MAX_UINT
        and etype in _ENTRY_TYPE_BY_INT
    )


def entry_from_obj(obj: object) -> Entry:
    # Fast path for well-formed input (the WAL replays and the writer decodes millions;
    # a follower every entry of every AppendEntries).
    if type(obj) is list and _is_wellformed_entry(obj):
        _, term, index, etype, data, ts = obj
        return make_entry(term, index, _ENTRY_TYPE_BY_INT[etype], data, ts)
    return _entry_from_obj_checked(obj)


def _entry_from_obj_checked(obj: object) -> Entry:
    what = "entry"
    _, term, index, etype, data, ts = _array(obj, what, 6)
    term = _uint(term, what, "term")
    index = _uint(index, what, "index")
    etype = _uint(etype, what, "type")
    if etype not in _ENTRY_TYPES:
        raise _fail(what, f"unknown entry type {etype}")
    if type(data) is not bytes:
        raise _fail(what, f"data is {type(data).__name__}, not bytes")
    return Entry(term, index, EntryType(etype), data, _uint(ts, what, "timestamp_ms"))


def entries_to_obj(entries: Sequence[Entry]) -> list[list[object]]:
    return [[CODEC_VERSION, e.term, e.index, int(e.type), e.data, e.timestamp_ms] for e in entries]


class EntryPacker:
    """
    Packs entries, remembering the bytes of the most recent ones by identity, so the same
    Entry object (the raft core hands the same objects to every AppendEntries and to the
    Ready's `entries`) is packed once however many messages carry it.

    Bounded by `max_entries` and `max_bytes` (oldest forgotten first); a forgotten entry
    is simply packed again. Holds a reference to each remembered entry, so an `id()` is
    never reused while remembered. Not thread-safe (one per raft worker).

    The bounds need only cover the entries in flight (packed for the log writer and each
    follower within a few Readys); what is remembered is held twice (the packed bytes and
    the entry, kept alive past log compaction), so `max_bytes` is kept small: 4 MiB holds
    ~70 entries of 500 bulk puts of 100-byte values, and 4096 single puts.
    """

    def __init__(self, max_entries: int = 4096, max_bytes: int = 4 << 20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._packed: dict[int, tuple[Entry, bytes]] = {}
        # The keys of `_packed`, oldest first. NB: evicting through the dict itself (pop
        # its first key) is O(n): a dict's iterator walks over the slots of the keys
        # already popped until the next resize; a follower evicts on every entry.
        self._order: deque[int] = deque()
        self._bytes = 0
        # One msgpack Packer, reused: msgpack.packb builds a new one per call.
        self._packb = msgpack.Packer(use_bin_type=True).pack
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._packed)

    @property
    def size_bytes(self) -> int:
        """The bytes remembered (at most `max_bytes`)."""
        return self._bytes

    def pack(self, entry: Entry) -> bytes:
        """`encode_entry(entry)`, from memory when this object was packed recently."""
        # Invariant: a remembered entry is referenced here, so no other live object can
        # have its id(); the identity check is belt and braces.
        key = id(entry)
        known = self._packed.get(key)
        if known is not None and known[0] is entry:
            self.hits += 1
            return known[1]
        self.misses += 1
        data: bytes = self._packb(
            [CODEC_VERSION, entry.term, entry.index, int(entry.type), entry.data, entry.timestamp_ms])
        size = len(data)
        if known is None and size <= self._max_bytes:
            packed, order = self._packed, self._order
            # Invariant: `order` holds exactly the keys of `packed`, oldest first.
            while order and (len(packed) >= self._max_entries or self._bytes + size > self._max_bytes):
                _, old = packed.pop(order.popleft())
                self._bytes -= len(old)
            packed[key] = (entry, data)
            order.append(key)
            self._bytes += size
        return data

    def pack_entries(self, entries: Sequence[Entry]) -> bytes:
        """`packb(entries_to_obj(entries))`, byte for byte."""
        pack = self.pack
        return array_header(len(entries)) + b"".join([pack(e) for e in entries])


def entries_from_obj(obj: object) -> list[Entry]:
    if not isinstance(obj, list):
        raise _fail("entry list", f"expected an array, got {type(obj).__name__}")
    return [entry_from_obj(item) for item in obj]


def encode_entry(entry: Entry) -> bytes:
    return packb(entry_to_obj(entry))


def decode_entry(data: bytes) -> Entry:
    return entry_from_obj(unpackb(data, "entry"))


# --- HardState ---------------------------------------------------------------------------


def hard_state_to_obj(hs: HardState) -> list[object]:
    return [CODEC_VERSION, hs.term, hs.vote, hs.commit]


def hard_state_from_obj(obj: object) -> HardState:
    what = "hard state"
    _, term, vote, commit = _array(obj, what, 4)
    if vote is not None and (type(vote) is not str or not vote):
        raise _fail(what, f"vote is {vote!r}, not a node id or nil")
    return HardState(
        _uint(term, what, "term"),
        NodeId(vote) if vote is not None else None,
        _uint(commit, what, "commit"),
    )


def encode_hard_state(hs: HardState) -> bytes:
    return packb(hard_state_to_obj(hs))


def decode_hard_state(data: bytes) -> HardState:
    return hard_state_from_obj(unpackb(data, "hard state"))


# --- ConfState ---------------------------------------------------------------------------


def conf_state_to_obj(cs: ConfState) -> list[object]:
    return [
        CODEC_VERSION,
        list(cs.voters),
        list(cs.learners),
        list(cs.voters_outgoing),
        list(cs.learners_next),
        cs.auto_leave,
    ]


def conf_state_from_obj(obj: object) -> ConfState:
    what = "conf state"
    _, voters, learners, outgoing, learners_next, auto_leave = _array(obj, what, 6)
    if type(auto_leave) is not bool:
        raise _fail(what, f"auto_leave is {type(auto_leave).__name__}, not bool")
    return ConfState(
        _node_ids(voters, what, "voters"),
        _node_ids(learners, what, "learners"),
        _node_ids(outgoing, what, "voters_outgoing"),
        _node_ids(learners_next, what, "learners_next"),
        auto_leave,
    )


def encode_conf_state(cs: ConfState) -> bytes:
    return packb(conf_state_to_obj(cs))


def decode_conf_state(data: bytes) -> ConfState:
    return conf_state_from_obj(unpackb(data, "conf state"))


# --- SnapshotMeta ------------------------------------------------------------------------


def snapshot_meta_to_obj(meta: SnapshotMeta) -> list[object]:
    return [CODEC_VERSION, meta.index, meta.term, conf_state_to_obj(meta.conf_state)]


def snapshot_meta_from_obj(obj: object) -> SnapshotMeta:
    what = "snapshot meta"
    _, index, term, cs = _array(obj, what, 4)
    return SnapshotMeta(_uint(index, what, "index"), _uint(term, what, "term"), conf_state_from_obj(cs))


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return packb(snapshot_meta_to_obj(meta))


def decode_snapshot_meta(data: bytes) -> SnapshotMeta:
    return snapshot_meta_from_obj(unpackb(data, "snapshot meta"))


# --- Message (raft peer traffic) ------------------------------------------------------------

_WIRE_MESSAGE_TYPES = {int(t): t for t in MessageType if t not in LOCAL_MESSAGE_TYPES}


def message_to_obj(msg: Message) -> list[object]:
    obj = message_to_obj_without_entries(msg)
    obj[7] = entries_to_obj(msg.entries)
    return obj


def _bool(value: object, what: str, name: str) -> bool:
    if type(value) is not bool:
        raise _fail(what, f"{name} is {type(value).__name__}, not bool")
    return value


def _node_id(value: object, what: str, name: str) -> NodeId:
    if type(value) is not str or not value:
        raise _fail(what, f"{name} is {value!r}, not a node id")
    return NodeId(value)


def message_from_obj(obj: object) -> Message:
    return message_and_trace_from_obj(obj)[0]


def _trace_map(value: object, what: str) -> dict[int, str]:
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) is int and 0 <= p[0] <= MAX_UINT
            and type(p[1]) is str and len(p[1]) <= 64 for p in value):
        raise _fail(what, "trace is not a list of [index, traceparent] pairs")
    return {p[0]: p[1] for p in value}


def message_and_trace_from_obj(obj: object) -> tuple[Message, dict[int, str] | None]:
    """A message and its optional trace map (the 16th item; module docstring)."""
    what = "message"
    fields = _array(obj, what, 15, optional=1)
    trace = _trace_map(fields.pop(), what) if len(fields) == 16 else None
    (_, mtype, to, frm, term, log_term, index, ents, commit, reject, reject_hint, context,
     snap, snap_offset, snap_done) = fields
    kind = _uint(mtype, what, "type")
    if kind not in _WIRE_MESSAGE_TYPES:
        raise _fail(what, f"type {kind} is not a network message type")
    if type(context) is not bytes:
        raise _fail(what, f"context is {type(context).__name__}, not bytes")
    snapshot: Snapshot | None = None
    if snap is not None:
        if not isinstance(snap, list) or len(snap) != 2 or type(snap[1]) is not bytes:
            raise _fail(what, "snapshot is not [snapshot_meta, data]")
        snapshot = Snapshot(snapshot_meta_from_obj(snap[0]), snap[1])
    return Message(
        type=_WIRE_MESSAGE_TYPES[kind],
        to=_node_id(to, what, "to"),
        frm=_node_id(frm, what, "frm"),
        term=_uint(term, what, "term"),
        log_term=_uint(log_term, what, "log_term"),
        index=_uint(index, what, "index"),
        entries=tuple(entries_from_obj(ents)),
        commit=_uint(commit, what, "commit"),
        reject=_bool(reject, what, "reject"),
        reject_hint=_uint(reject_hint, what, "reject_hint"),
        context=context,
        snapshot=snapshot,
        snapshot_offset=_uint(snap_offset, what, "snapshot_offset"),
        snapshot_done=_bool(snap_done, what, "snapshot_done"),
    ), trace


def encode_message(msg: Message, packer: EntryPacker | None = None,
                   trace: dict[int, str] | None = None) -> bytes:
    """
    A raft message as the bytes of one peer DATA frame.

    Args:
        packer: packs the entries (each once across messages); the bytes are the same
            with or without it.
        trace: the optional trace map of a traced APPEND (module docstring).
    """
    extra: list[object] = [] if trace is None else [[[i, t] for i, t in trace.items()]]
    if packer is None or not msg.entries:
        return packb(message_to_obj(msg) + extra)
    obj = message_to_obj_without_entries(msg)
    return splice_array(obj[:7], packer.pack_entries(msg.entries), obj[8:] + extra)


def message_to_obj_without_entries(msg: Message) -> list[object]:
    """`message_to_obj(msg)` with an empty entry list in its place (index 7)."""
    snap: object = None
    if msg.snapshot is not None:
        snap = [snapshot_meta_to_obj(msg.snapshot.meta), msg.snapshot.data]
    return [
        CODEC_VERSION, int(msg.type), msg.to, msg.frm, msg.term, msg.log_term, msg.index, [],
        msg.commit, msg.reject, msg.reject_hint, msg.context, snap, msg.snapshot_offset,
        msg.snapshot_done,
    ]


def decode_message(data: bytes) -> Message:
    """
    Parse one peer DATA frame.

    Raises:
        RemoteProtocolError: malformed bytes, unknown version or a local message type.
    """
    return message_from_obj(unpackb(data, "message"))


def decode_message_and_trace(data: bytes) -> tuple[Message, dict[int, str] | None]:
    """`decode_message`, with the optional trace map of a traced APPEND."""
    return message_and_trace_from_obj(unpackb(data, "message"))


__all__ = [
    "CODEC_VERSION",
    "MAX_UINT",
    "message_to_obj",
    "message_from_obj",
    "encode_message",
    "decode_message",
    "decode_message_and_trace",
    "packb",
    "unpackb",
    "array_header",
    "splice_array",
    "EntryPacker",
    "message_to_obj_without_entries",
    "entry_to_obj",
    "entry_from_obj",
    "entries_to_obj",
    "entries_from_obj",
    "encode_entry",
    "decode_entry",
    "hard_state_to_obj",
    "hard_state_from_obj",
    "encode_hard_state",
    "decode_hard_state",
    "conf_state_to_obj",
    "conf_state_from_obj",
    "encode_conf_state",
    "decode_conf_state",
    "snapshot_meta_to_obj",
    "snapshot_meta_from_obj",
    "encode_snapshot_meta",
    "decode_snapshot_meta",
]
