"""
The driver's ports and data: the Protocols of what `concord.node.driver.Driver` is given
(transport, log sink, snapshot sink, clock, the core and its in-memory log, what
recovery returns), what it gives back (`Reply`, `ReplyStatus`, `Consistency`), its
settings (`DriverConfig`), and `load_memory_storage`. concord.node.driver re-exports
every name.

Pure. No IO, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from concord.ids import NodeId
from concord.raft.messages import ConfChange, ConfState, Entry, Message, Snapshot
from concord.raft.state import HardState, ReadState, SoftState

__all__ = [
    "Clock",
    "Consistency",
    "DriverConfig",
    "LogSink",
    "MemoryLog",
    "RaftNode",
    "ReadyView",
    "Recovered",
    "Reply",
    "ReplyStatus",
    "SnapshotSink",
    "Transport",
    "load_memory_storage",
]


# -- what the driver is given -----------------------------------------------------------


class Transport(Protocol):
    """Sends one message to `msg.to`; may drop it (Raft tolerates loss)."""

    def send(self, msg: Message) -> None: ...


class LogSink(Protocol):
    """
    The log writer. Asynchronous: the owner later calls `Driver.on_persisted(number)`
    once everything handed over up to `number` is durable (fsynced if `must_sync`).
    """

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None: ...


class SnapshotSink(Protocol):
    """
    Writes a snapshot the driver took of its state machine (optional: in production the
    durable snapshots are the node core's, TakeSnapshot, written by a forked child; this
    sink only takes those after membership changes). Asynchronous: the owner
    calls `Driver.on_snapshot_written(meta)` once it is durable.
    """

    def write_snapshot(self, snapshot: Snapshot) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...


class ReadyView(Protocol):
    """The fields of `concord.raft.rawnode.Ready` the driver uses."""

    @property
    def number(self) -> int: ...

    @property
    def soft_state(self) -> SoftState | None: ...

    @property
    def hard_state(self) -> HardState | None: ...

    @property
    def entries(self) -> tuple[Entry, ...]: ...

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def must_sync(self) -> bool: ...

    @property
    def messages(self) -> tuple[Message, ...]: ...

    @property
    def messages_after_persist(self) -> tuple[Message, ...]: ...

    @property
    def committed_entries(self) -> tuple[Entry, ...]: ...

    @property
    def read_states(self) -> tuple[ReadState, ...]: ...


class RaftNode(Protocol):
    """The part of `concord.raft.rawnode.RawNode` the driver uses (fakes implement it)."""

    def tick(self) -> None: ...

    def advance_election(self, ticks: int) -> None: ...

    def set_time(self, now_ms: int) -> None: ...

    def observe_timestamp(self, timestamp_ms: int) -> None: ...

    def step(self, msg: Message) -> None: ...

    def propose(self, data: bytes, prompt_commit: bool = False) -> tuple[int, int]: ...

    def propose_many(self, datas: Sequence[bytes], prompt_commit: bool = False) -> tuple[int, int]: ...

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]: ...

    def apply_conf_change(self, cc: ConfChange) -> ConfState: ...

    def read_index(self, ctx: bytes) -> None: ...

    def transfer_leadership(self, to: NodeId) -> None: ...

    @property
    def lead_transferee(self) -> NodeId | None:
        """The target of the leader transfer in progress, if any."""
        ...

    def has_ready(self) -> bool: ...

    def ready(self) -> ReadyView: ...

    def on_persisted(self, number: int) -> None: ...

    def on_applied(self, index: int) -> None: ...


class MemoryLog(Protocol):
    """The write side of `concord.raft.storage.MemoryStorage` the driver uses."""

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None: ...

    def set_hard_state(self, hard_state: HardState) -> None: ...

    def apply_snapshot(self, snapshot: Snapshot) -> None: ...

    def create_snapshot(
        self, index: int, conf_state: ConfState | None, data: bytes
    ) -> Snapshot: ...

    def compact(self, compact_index: int) -> None: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class Recovered(Protocol):
    """What storage recovery returns (concord.storage.recovery.RecoveredState)."""

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def hard_state(self) -> HardState: ...

    @property
    def entries(self) -> Sequence[Entry]: ...


# -- what the driver gives back ---------------------------------------------------------


class Consistency(enum.Enum):
    EVENTUAL = "eventual"  # local state, whatever it is
    LEADER = "leader"  # the leader's state under its lease, else after a ReadIndex round
    STRONG = "strong"  # ReadIndex, then wait for applied >= index


class ReplyStatus(enum.Enum):
    """Client outcomes, a closed set."""

    OK = "ok"
    NOT_LEADER = "not_leader"  # definitely not done; `leader_hint` names the leader
    DROPPED = "dropped"  # definitely not done (the core refused or overwrote it)
    TIMEOUT = "timeout"  # a read that got no answer in time (reads change nothing)
    UNKNOWN = "unknown"  # a write that may or may not take effect


@dataclass(frozen=True, slots=True)
class Reply:
    """
    The answer to one request.

    For a write, `result` is the state machine's `Applied.result` and `index` the entry's
    index. For a read, the caller reads the key from the state machine it gave the driver
    at once, inside the reply callback: `index` is the applied index it is served at.
    For a conf change, `result` is the new `ConfState`.
    """

    request_id: int
    status: ReplyStatus
    result: object = None
    index: int = 0
    leader_hint: NodeId | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """
    Settings of the loop (the core's own settings are in RaftConfig).

    Attributes:
        tick_ms: the owner calls on_tick() every this many ms.
        election_ticks, heartbeat_ticks: as given to RaftConfig (the lease uses them).
        read_timeout_ms: a strong or leader read not served by then gets TIMEOUT.
        unknown_grace_ms: after leadership is lost, pending writes wait this long for
            their entry to be applied (an exact OK/DROPPED) before the answer UNKNOWN.
        leader_reads: serve `leader` reads under a lease (without one, with a
            ReadIndex round); False answers them all with a ReadIndex round like
            `strong`.
        lease_margin_ms: subtracted from the lease for clock-rate drift.
        snapshot_every_entries: take a snapshot of the state machine every this many
            applied entries (needs a SnapshotSink); 0 turns it off.
        snapshot_keep_entries: entries kept below a snapshot for slow followers.
    """

    tick_ms: int = 10
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    read_timeout_ms: int = 1000
    unknown_grace_ms: int = 0
    leader_reads: bool = True
    lease_margin_ms: int = 5
    snapshot_every_entries: int = 0
    snapshot_keep_entries: int = 100

    @property
    def lease_ms(self) -> int:
        return (self.election_ticks - 1) * self.tick_ms - self.lease_margin_ms


def load_memory_storage(storage: MemoryLog, recovered: Recovered) -> HardState:
    """
    Load what storage recovery returned into a fresh MemoryStorage.

    NB: snapshots are written apart from the log, so a crash can leave a snapshot newer
    than the persisted hard state's commit; a snapshot only holds committed entries, so
    the commit is raised to the snapshot's index (the core requires commit >= it).

    Returns:
        The hard state loaded (after that repair).

    Raises:
        RaftInvariantError: the recovered entries leave a gap after the snapshot.
    """
    hard_state = recovered.hard_state
    if recovered.snapshot is not None and not recovered.snapshot.is_empty:
        storage.apply_snapshot(recovered.snapshot)
        index = recovered.snapshot.meta.index
        if hard_state.commit < index:
            hard_state = HardState(hard_state.term, hard_state.vote, index)
    if not hard_state.is_empty:
        storage.set_hard_state(hard_state)
    entries = [e for e in recovered.entries if e.index > storage.first_index() - 1]
    if entries:
        storage.append(entries)
    return hard_state
