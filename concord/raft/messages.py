"""
Consensus data types: log entries, membership and snapshot metadata, messages.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

`Entry`, `ConfState`, `SnapshotMeta` and `Snapshot` are frozen: storage, the network codec
and the state machine all depend on their fields. Add fields only with a default, and bump
the format versions of docs/formats.md when their encoding changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
