"""
Consensus data types: log entries, membership and snapshot metadata, messages.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

`Entry`, `ConfState`, `SnapshotMeta` and `Snapshot` are frozen: storage, the network codec
and the state machine all depend on their fields. Add fields only with a default, and bump
the format versions of docs/formats.md when their encoding changes.

Added by the raft engineer: `MessageType`, `Message` (the core's only input from peers and
output to them), and the membership-change types `ConfChangeType`,
`ConfChangeTransition`, `ConfChangeSingle`, `ConfChange` with their byte encoding for
CONF_CHANGE entries.

ConfChange encoding, version 1 (all integers big-endian):

    offset  size  field
    0       1     version (= 1)
    1       1     transition (ConfChangeTransition)
    2       2     count: number of single changes
    4       ...   count times:
                    1  type (ConfChangeType)
                    2  n: length of the node id
                    n  node id, UTF-8
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import IntEnum

from concord.ids import NodeId


class EntryType(IntEnum):
    """What an entry's `data` holds."""

    NORMAL = 0  # an opaque state-machine command; empty data is the leader's no-op
    CONF_CHANGE = 1  # an encoded membership change, interpreted by the core


@dataclass(frozen=True, slots=True)
class Entry:
    """
    One log entry.

    `timestamp_ms` is assigned by the leader when it appends the entry (cluster time). It
    never goes backwards along the log, across terms too: the state machine decides TTL
    expiry from it, never from a local clock.
    """

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""
    timestamp_ms: int = 0


def _entry_builder() -> Callable[[int, int, EntryType, bytes, int], Entry]:
    """
    The `make_entry` function: `Entry(term, index, type, data, timestamp_ms)`, all fields
    given, about three times faster. A frozen dataclass's generated __init__ sets each
    field through object.__setattr__, looked up per field; this calls the slots' setters
    directly (Entry has no __post_init__). Derived from Entry's fields, so a new field
    fails here at import, not silently.
    """
    names = tuple(f.name for f in fields(Entry))
    if names != ("term", "index", "type", "data", "timestamp_ms") or hasattr(Entry, "__post_init__"):
        raise AssertionError(f"Entry fields changed ({names}): update _entry_builder")
    set_term, set_index, set_type, set_data, set_ts = (getattr(Entry, n).__set__ for n in names)
    new = object.__new__

    def make_entry(term: int, index: int, type: EntryType, data: bytes, timestamp_ms: int) -> Entry:
        entry: Entry = new(Entry)
        set_term(entry, term)
        set_index(entry, index)
        set_type(entry, type)
        set_data(entry, data)
        set_ts(entry, timestamp_ms)
        return entry

    return make_entry


#: `Entry(term, index, type, data, timestamp_ms)` for the hot paths that make one per
#: entry (a leader's proposals, a follower's decode): the same object, built faster.
make_entry = _entry_builder()


@dataclass(frozen=True, slots=True)
class ConfState:
    """
    The membership in force at some log position.

    `voters_outgoing` is non-empty only during a joint configuration (Raft thesis §4.3):
    decisions then need a majority of `voters` and of `voters_outgoing`. `learners_next`
    are voters of the outgoing configuration that become learners when the joint
    configuration is left. Tuples are kept sorted so equal memberships compare equal.
    """

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    learners_next: tuple[NodeId, ...] = ()
    auto_leave: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The position a snapshot covers: last included index and term, and membership."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot: metadata plus the opaque state bytes."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


class MessageType(IntEnum):
    """
    Message types, named after the RPCs of the Raft paper and etcd-io/raft.

    `HUP`, `BEAT`, `CHECK_QUORUM` and `UNREACHABLE` are local: the core makes them from
    its own inputs and they never cross the network (RawNode.step refuses them).
    `READ_INDEX` and `TRANSFER_LEADER` are both local requests and, forwarded by a
    follower, messages to the leader.
    """

    HUP = 0  # local: start an election
    BEAT = 1  # local: the leader broadcasts heartbeats
    CHECK_QUORUM = 2  # local: the leader checks it heard from a quorum
    UNREACHABLE = 3  # local: the caller reports a peer unreachable
    APPEND = 4
    APPEND_RESP = 5
    VOTE = 6
    VOTE_RESP = 7
    PRE_VOTE = 8
    PRE_VOTE_RESP = 9
    HEARTBEAT = 10
    HEARTBEAT_RESP = 11
    SNAPSHOT = 12  # one chunk of an InstallSnapshot transfer
    SNAPSHOT_RESP = 13  # chunk acknowledgement (or a request to resend from an offset)
    READ_INDEX = 14
    READ_INDEX_RESP = 15
    TIMEOUT_NOW = 16
    TRANSFER_LEADER = 17


LOCAL_MESSAGE_TYPES = frozenset(
    {MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM, MessageType.UNREACHABLE}
)

#: `Message.context` of a VOTE sent by a candidate that received TIMEOUT_NOW: voters then
#: ignore leader stickiness (Raft thesis §3.10).
CAMPAIGN_TRANSFER = b"transfer"


@dataclass(frozen=True, slots=True)
class Message:
    """
    One message between two nodes (or a local input to the core).

    Field use by type (as in etcd-io/raft):
      APPEND: `index`/`log_term` are the entry preceding `entries`; `commit` the leader's.
      APPEND_RESP: `index` the follower's last matching index; on reject, `index` is the
        rejected probe index, `reject_hint` and `log_term` the follower's hint (the last
        index whose term is <= the probe's term, and that term).
      VOTE, PRE_VOTE: `index`/`log_term` are the candidate's last entry; `context` is
        CAMPAIGN_TRANSFER when a leader transfer asked for it.
      HEARTBEAT, HEARTBEAT_RESP: `commit`; `context` is the ReadIndex round it confirms.
      SNAPSHOT: `snapshot` holds the metadata and one chunk of data starting at byte
        `snapshot_offset`; `snapshot_done` marks the last chunk.
      SNAPSHOT_RESP: `index` the snapshot's index, `snapshot_offset` the next byte the
        follower expects; `reject` asks the leader to resend from that offset.
      READ_INDEX, READ_INDEX_RESP: `context` is the caller's request context; `index` the
        read index in the response.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None
    snapshot_offset: int = 0
    snapshot_done: bool = False


class ConfChangeType(IntEnum):
    """One membership operation on one node."""

    ADD_VOTER = 0  # add a voter, or promote a learner to voter
    ADD_LEARNER = 1  # add a learner, or demote a voter (only via joint consensus)
    REMOVE = 2


class ConfChangeTransition(IntEnum):
    """
    How a ConfChange is carried out (etcd ConfChangeV2 semantics).

    AUTO: one single voter change is applied directly (a "simple" change, Raft thesis
    §4.1); several changes use joint consensus and leave it automatically.
    JOINT_IMPLICIT: always joint consensus (thesis §4.3), left automatically.
    JOINT_EXPLICIT: joint consensus, left only by proposing an empty ConfChange.
    """

    AUTO = 0
    JOINT_IMPLICIT = 1
    JOINT_EXPLICIT = 2


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    """One change: `type` applied to `node_id`."""

    type: ConfChangeType
    node_id: NodeId


_CC_VERSION = 1
_CC_HEADER = struct.Struct(">BBH")
_CC_ITEM = struct.Struct(">BH")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """
    A membership change, proposed with RawNode.propose_conf_change and applied (once
    committed) with RawNode.apply_conf_change. An empty `changes` leaves a joint
    configuration.
    """

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO

    @classmethod
    def add_voter(cls, node_id: NodeId) -> ConfChange:
        return cls((ConfChangeSingle(ConfChangeType.ADD_VOTER, node_id),))

    @classmethod
    def add_learner(cls, node_id: NodeId) -> ConfChange:
        return cls((ConfChangeSingle(ConfChangeType.ADD_LEARNER, node_id),))

    @classmethod
    def remove(cls, node_id: NodeId) -> ConfChange:
        return cls((ConfChangeSingle(ConfChangeType.REMOVE, node_id),))

    def leave_joint(self) -> bool:
        """True if this change leaves a joint configuration (it has no changes)."""
        return not self.changes

    def enter_joint(self) -> tuple[bool, bool]:
        """
        Whether this change enters a joint configuration.

        Returns:
            (auto_leave, uses_joint): uses_joint is False for a simple change.
        """
        if self.transition != ConfChangeTransition.AUTO or len(self.changes) > 1:
            return self.transition != ConfChangeTransition.JOINT_EXPLICIT, True
        return False, False

    def encode(self) -> bytes:
        """The version-1 byte encoding (layout in the module docstring)."""
        parts = [_CC_HEADER.pack(_CC_VERSION, int(self.transition), len(self.changes))]
        for change in self.changes:
            raw = change.node_id.encode("utf-8")
            parts.append(_CC_ITEM.pack(int(change.type), len(raw)))
            parts.append(raw)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """
        Decode `encode()`'s output.

        Raises:
            ValueError: on an unknown version, type or a truncated buffer.
        """
        if len(data) < _CC_HEADER.size:
            raise ValueError(f"conf change of {len(data)} bytes is shorter than its header")
        version, transition, count = _CC_HEADER.unpack_from(data, 0)
        if version != _CC_VERSION:
            raise ValueError(f"unknown conf change version {version}")
        pos = _CC_HEADER.size
        changes = []
        for _ in range(count):
            if pos + _CC_ITEM.size > len(data):
                raise ValueError(f"conf change truncated at byte {pos}")
            kind, length = _CC_ITEM.unpack_from(data, pos)
            pos += _CC_ITEM.size
            if pos + length > len(data):
                raise ValueError(f"conf change node id truncated at byte {pos}")
            node_id = NodeId(data[pos : pos + length].decode("utf-8"))
            pos += length
            changes.append(ConfChangeSingle(ConfChangeType(kind), node_id))
        if pos != len(data):
            raise ValueError(f"conf change has {len(data) - pos} trailing bytes")
        return cls(tuple(changes), ConfChangeTransition(transition))
