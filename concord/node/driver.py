"""
The Ready loop around a RawNode: the code the raft worker process and the simulator share.

Pure of IO. The driver owns the `RawNode`, its `MemoryStorage`, the state machine and the
client requests waiting on them, and talks to the world only through the injected
`Transport`, `LogSink`, `Clock`, `SnapshotSink` and reply callback. Whoever owns a driver
(the zmq poll loop of `raft_worker.py`, or `concord.sim`) feeds it the same inputs:

    on_message(msg)          a message from a peer
    on_tick()                every tick_ms of the owner's clock (until a leader is known,
                             the ticks missed since the driver started, its owner busy
                             recovering, count toward the first election)
    on_persisted(number)     the LogSink reports Readys up to `number` durable
    on_snapshot_written(...) a snapshot is durable: compact the in-memory log
    submit_write / submit_read / submit_conf_change / transfer_leader

and then calls `process_ready()`, which drains every pending Ready:

1. soft state: role/leader changes (a lost leadership settles pending requests);
2. `messages` go to the transport now;
3. entries, hard state and snapshot go to the LogSink; `messages_after_persist` wait in
   a queue keyed by the Ready number (durability before acknowledgement);
4. committed entries are applied (state machine for NORMAL entries with data,
   `apply_noop` for the leader's empty entries, `RawNode.apply_conf_change` for
   CONF_CHANGE), writes are answered by (index, term), and `on_applied` is called;
5. read states release strong reads once `applied >= index`.

Client outcomes are a closed set: OK, NOT_LEADER, DROPPED, TIMEOUT,
UNKNOWN. A write answered UNKNOWN may still commit.

Leader reads, their lease and its assumptions: concord.node.driver_reads.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from concord.errors import ProposalDroppedError, SnapshotOutOfDateError
from concord.ids import NodeId
from concord.node.driver_types import (  # re-exported (see __all__)
    Clock,
    Consistency,
    DriverConfig,
    LogSink,
    MemoryLog,
    RaftNode,
    ReadyView,
    Recovered,
    Reply,
    ReplyStatus,
    SnapshotSink,
    Transport,
    load_memory_storage,
)
import concord.node.driver_reads as driver_reads  # NB: concord.node itself is not pure
from concord.node.driver_reads import _PendingRead
from concord.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from concord.raft.state import HardState, Role, SoftState
from concord.raft.statemachine import Applied, StateMachine

__all__ = [
    "Applied",
    "Clock",
    "Consistency",
    "Driver",
    "DriverConfig",
    "LogSink",
    "MemoryLog",
    "RaftNode",
    "ReadyView",
    "Recovered",
    "Reply",
    "ReplyStatus",
    "SnapshotSink",
    "StateMachine",
    "Transport",
    "load_memory_storage",
]

logger = logging.getLogger(__name__)


# -- what the driver is given (the rest: concord.node.driver_types) --------------------


ReplyCallback = Callable[[Reply], None]

_LEASE_CTX = b"\x00L"  # ReadIndex contexts of lease probes
_CTX_NUMBER = struct.Struct(">Q")


@dataclass(slots=True)
class _PendingWrite:
    request_id: int
    term: int
    is_conf_change: bool
    deadline_ms: int | None = None  # set once leadership is lost


@dataclass(slots=True)
class _Persisting:
    number: int
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    snapshot: Snapshot | None
    after: tuple[Message, ...]


@dataclass(slots=True)
class DriverStats:
    readys: int = 0
    messages_sent: int = 0
    entries_applied: int = 0
    entry_bytes_applied: int = 0  # bytes of entry data (the snapshot size trigger)
    snapshots_taken: int = 0
    votes_held: int = 0
    leases_granted: int = 0


class Driver:
    """
    Runs one node's RawNode. Not thread-safe: one owner calls every method.

    Args:
        node_id: this node's id.
        raw: the RawNode, built over `storage`.
        storage: the MemoryStorage `raw` reads.
        transport, log_sink, clock, state_machine, reply: the injected world. `clock`
            is cluster time: the leader stamps entries with it (TTLs are decided from
            those stamps).
        timer: the clock every duration is measured on: the lease, the vote hold after
            start, request deadlines. It must never step (CLOCK_MONOTONIC in a node): a
            wall clock stepped back would stretch a lease past its real end (a stale
            `leader` read). None: `clock` (the simulator's virtual time never steps).
        config: loop settings.
        conf_state: the membership `storage` starts from (bootstrap or snapshot).
        hard_state: the hard state `storage` starts from.
        snapshot_sink: where driver-taken snapshots go (if configured).
        applied_observer: called with every entry once applied (tracing, checkers).
        snapshot_observer: called when a snapshot from the leader replaces the state.
    """

    def __init__(
        self,
        node_id: NodeId,
        raw: RaftNode,
        storage: MemoryLog,
        transport: Transport,
        log_sink: LogSink,
        clock: Clock,
        state_machine: StateMachine,
        reply: ReplyCallback,
        config: DriverConfig,
        conf_state: ConfState,
        hard_state: HardState,
        snapshot_sink: SnapshotSink | None = None,
        applied_observer: Callable[[Entry], None] | None = None,
        snapshot_observer: Callable[[SnapshotMeta], None] | None = None,
        timer: Clock | None = None,
    ) -> None:
        self.node_id = node_id
        self.raw = raw
        self.storage = storage
        self.state_machine = state_machine
        self.config = config
        self.stats = DriverStats()
        self._transport = transport
        self._log_sink = log_sink
        self._clock = clock
        self._timer = timer or clock
        self._reply = reply
        self._snapshot_sink = snapshot_sink
        self._applied_observer = applied_observer
        self._snapshot_observer = snapshot_observer
        self.conf_state = conf_state
        self.term = hard_state.term
        self.commit = hard_state.commit
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self.applied_index = state_machine.applied_index
        self.applied_term = 0
        self._writes: dict[int, _PendingWrite] = {}
        self._reads: dict[bytes, _PendingRead] = {}
        self._waiting_reads: list[_PendingRead] = []  # read index known, not yet applied
        self._leader_reads: list[_PendingRead] = []  # waiting for the term's first apply
        self._persisting: deque[_Persisting] = deque()
        # (Ready number, hard state) of a commit-only Ready acknowledged without the sink
        # (see _hand_to_sink); written with the next Ready that goes to the sink, or at
        # the next tick.
        self._lazy_hard_state: tuple[int, HardState] | None = None
        self._ctx_counter = 0
        self._lease_probes: dict[bytes, tuple[int, int]] = {}  # ctx -> (sent_ms, term)
        self._lease_until_ms = -1
        self._last_tick_ms = -1 << 62
        self._ticks = 0
        self._last_snapshot_index = storage.snapshot().meta.index
        self._snapshot_in_flight: dict[int, Snapshot] = {}
        self._snapshot_due = False
        # See the module docstring: a restarted node must not vote while a lease it may
        # have granted before the crash could still be running.
        self._vote_hold_until_ms = self._timer.now_ms() + config.election_ticks * config.tick_ms
        # Start-up: until a leader is known, ticks the owner missed since now (busy
        # recovering: replaying the log, publishing shm) count toward the first election.
        self._start_ms: int | None = self._timer.now_ms()
        self._missed_ticks = 0
        raw.set_time(clock.now_ms())
        # The log may start after a snapshot: its time is the state machine's.
        raw.observe_timestamp(state_machine.last_timestamp_ms)

    # -- inputs -------------------------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        """Step a message from a peer into the core."""
        if msg.type in (MessageType.VOTE, MessageType.PRE_VOTE) and self.config.leader_reads:
            if self._timer.now_ms() < self._vote_hold_until_ms:
                self.stats.votes_held += 1
                return
        if msg.type is MessageType.TRANSFER_LEADER:
            self._fence_lease()
        self.raw.step(msg)

    def on_tick(self) -> None:
        """Advance the core one tick; renew the lease; time out waiting requests."""
        self.raw.set_time(self._clock.now_ms())
        now = self._timer.now_ms()
        if now < self._last_tick_ms:
            # Only a faked timer steps back (libfaketime without DONT_FAKE_MONOTONIC):
            # the lease, measured on it, could otherwise outlive its real end.
            logger.warning("timer stepped back node=%s by_ms=%d: lease ended",
                           self.node_id, self._last_tick_ms - now)
            self._end_lease()
        self._last_tick_ms = now
        self._ticks += 1
        if (
            self.role is Role.LEADER
            and self.config.leader_reads
            and self._ticks % self.config.heartbeat_ticks == 0
        ):
            if self.raw.lead_transferee is not None:
                self._fence_lease()  # no probe while a transfer is pending
            else:
                # NB: before the core's tick, so that a heartbeat due in this tick
                # carries the probe's round (core BEAT): one heartbeat per follower.
                ctx = self._next_ctx(_LEASE_CTX)
                self._lease_probes[ctx] = (now, self.term)
                self.raw.read_index(ctx)
        self.raw.tick()
        if self._start_ms is not None:
            self._count_missed_ticks(now)
        self._expire(now)
        self._flush_lazy_hard_state()

    def _count_missed_ticks(self, now: int) -> None:
        """
        Until the first leader is known: the ticks this driver missed since it started
        (its owner was busy recovering) count toward the first election
        (RawNode.advance_election keeps the wait left randomised). Measured from the
        same start as the vote hold, so the first campaign never comes before the
        members that started with this one grant votes again.
        """
        assert self._start_ms is not None
        behind = (now - self._start_ms) // self.config.tick_ms - self._ticks - self._missed_ticks
        if behind > 0:
            self._missed_ticks += behind
            self.raw.advance_election(behind)

    def _flush_lazy_hard_state(self) -> None:
        """Hand a lazily kept commit-only hard state to the sink (nothing in flight)."""
        lazy = self._lazy_hard_state
        if lazy is None or self._persisting:
            return
        self._lazy_hard_state = None
        number, hard_state = lazy
        # NB: `number` was never handed to the sink (a later Ready that went there would
        # have carried this hard state and cleared it), so the sink sees numbers rise;
        # the core already had on_persisted(number), and acks are cumulative.
        self._persisting.append(_Persisting(number, (), None, None, ()))
        self._log_sink.persist(number, (), hard_state, None, False)

    def on_persisted(self, number: int) -> None:
        """Everything handed to the LogSink up to Ready `number` is durable."""
        sent: list[Message] = []
        while self._persisting and self._persisting[0].number <= number:
            item = self._persisting.popleft()
            if item.snapshot is not None:
                try:
                    self.storage.apply_snapshot(item.snapshot)
                except SnapshotOutOfDateError as exc:
                    logger.debug("snapshot not applied to storage reason=%s", exc)
            if item.entries:
                self.storage.append(item.entries)
            if item.hard_state is not None:
                self.storage.set_hard_state(item.hard_state)
            sent.extend(item.after)
        self.raw.on_persisted(number)
        for msg in sent:
            self._send(msg)

    def on_snapshot_written(self, meta: SnapshotMeta, data: bytes | None = None) -> None:
        """
        A snapshot up to `meta.index` is durable: record it and compact the memory log.

        Args:
            meta: the snapshot's position and membership.
            data: its bytes, unless the driver took it itself (SnapshotSink).
        """
        snapshot = self._snapshot_in_flight.pop(meta.index, None)
        body = data if data is not None else (snapshot.data if snapshot else None)
        if body is None:
            logger.warning("unknown snapshot written index=%d", meta.index)
            return
        self._offer_snapshot(meta, body)
        # Compact only below what is durable (the in-memory snapshot may be newer).
        compact_to = min(meta.index, self.storage.snapshot().meta.index)
        compact_to -= self.config.snapshot_keep_entries
        if compact_to >= self.storage.first_index():
            self.storage.compact(compact_to)

    def _offer_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Make `meta` the snapshot the core sends to followers, if newer and possible."""
        if meta.index <= self.storage.snapshot().meta.index:
            return
        if meta.index > self.storage.last_index():
            return  # the entry is not in the memory log yet; a later snapshot will do
        self.storage.create_snapshot(meta.index, meta.conf_state, data)

    def submit_write(
        self, request_id: int, command: bytes, prompt_commit: bool = False
    ) -> int | None:
        """
        Propose a state-machine command; the reply comes once it is applied.
        `prompt_commit`: followers are told its commit at once (RawNode.propose).

        Returns:
            The entry's index, or None if the proposal was refused (already answered).
        """
        return self.submit_writes(((request_id, command),), prompt_commit)

    def submit_writes(
        self, writes: Sequence[tuple[int, bytes]], prompt_commit: bool = False
    ) -> int | None:
        """
        `submit_write` for several (request id, command), proposed in order in one step.

        Returns:
            The first entry's index (the i-th write's is that + i), or None if the
            proposals were refused (each already answered).
        """
        if not all(command for _, command in writes):
            raise ValueError("an empty command is the leader's no-op and cannot be proposed")
        self.raw.set_time(self._clock.now_ms())
        try:
            first, term = self.raw.propose_many([command for _, command in writes], prompt_commit)
        except ProposalDroppedError:
            for request_id, _ in writes:
                self._refuse(request_id)
            return None
        pending = self._writes
        for index, (request_id, _) in enumerate(writes, first):
            pending[index] = _PendingWrite(request_id, term, False)
        return first

    def submit_conf_change(self, request_id: int, cc: ConfChange) -> None:
        """Propose a membership change; the reply carries the new ConfState."""
        self.raw.set_time(self._clock.now_ms())
        try:
            index, term = self.raw.propose_conf_change(cc)
        except ProposalDroppedError:
            self._refuse(request_id)
            return
        self._writes[index] = _PendingWrite(request_id, term, True)

    def transfer_leader(self, to: NodeId) -> None:
        """Ask the core to hand leadership to `to` (TimeoutNow); ends the lease now."""
        self._fence_lease()
        self.raw.transfer_leadership(to)

    # -- the Ready loop -----------------------------------------------------------------

    def process_ready(self) -> int:
        """
        Drain every pending Ready.

        Returns:
            The number of Readys handled.
        """
        handled = 0
        while self.raw.has_ready():
            self._handle(self.raw.ready())
            handled += 1
        return handled

    def _handle(self, rd: ReadyView) -> None:
        self.stats.readys += 1
        if rd.hard_state is not None:
            if rd.hard_state.term != self.term:
                self._end_lease()
            self.term = rd.hard_state.term
            self.commit = rd.hard_state.commit
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        for msg in rd.messages:
            self._send(msg)
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        self._hand_to_sink(rd)
        if rd.committed_entries:
            for entry in rd.committed_entries:
                self._apply(entry)
            self.raw.on_applied(rd.committed_entries[-1].index)
            self._maybe_snapshot()
        for rs in rd.read_states:
            self._on_read_state(rs)
        self._release_reads()

    def _hand_to_sink(self, rd: ReadyView) -> None:
        nothing = (
            not rd.entries
            and rd.hard_state is None
            and rd.snapshot is None
            and not rd.messages_after_persist
        )
        if nothing and not self._persisting:
            # NB: acks are cumulative, so this shortcut is only safe with nothing in
            # flight before it.
            self.raw.on_persisted(rd.number)
            return
        if not rd.must_sync and not rd.entries and rd.snapshot is None and not self._persisting:
            # Only the commit index moved (must_sync false) and everything before is
            # durable. The commit index is volatile state (Raft Figure 2): a node that
            # restarts with an older one learns it again from the leader. So acknowledge
            # now: the held responses (to appends carrying no entries) claim only what is
            # already durable. The hard state is written later (_lazy_hard_state); this
            # saves a writer round trip per commit, on every node.
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
                self._lazy_hard_state = (rd.number, rd.hard_state)
            self.raw.on_persisted(rd.number)
            for msg in rd.messages_after_persist:
                self._send(msg)
            return
        hard_state = rd.hard_state
        if self._lazy_hard_state is not None:
            if hard_state is None:
                hard_state = self._lazy_hard_state[1]  # NB: storage already holds it
            self._lazy_hard_state = None
        self._persisting.append(
            _Persisting(rd.number, rd.entries, rd.hard_state, rd.snapshot,
                        rd.messages_after_persist)
        )
        self._log_sink.persist(rd.number, rd.entries, hard_state, rd.snapshot, rd.must_sync)

    def _on_soft_state(self, soft: SoftState) -> None:
        was_leader = self.role is Role.LEADER
        self.role = soft.role
        self.leader_id = soft.leader_id
        if soft.leader_id is not None:
            self._start_ms = None  # start-up is over: missed ticks no longer count
        if was_leader and soft.role is not Role.LEADER:
            self._end_lease()
            self._lost_leadership()
        logger.debug(
            "soft state node=%s role=%s leader=%s term=%d",
            self.node_id, soft.role.name, soft.leader_id, self.term,
        )

    def _lost_leadership(self) -> None:
        now = self._timer.now_ms()
        grace = self.config.unknown_grace_ms
        for index, write in list(self._writes.items()):
            if write.deadline_ms is not None:
                continue
            if grace <= 0:
                del self._writes[index]
                self._reply(Reply(write.request_id, ReplyStatus.UNKNOWN, index=index,
                                  leader_hint=self._hint()))
            else:
                write.deadline_ms = now + grace
        # Reads waiting on this leader's heartbeat round will not be confirmed.
        for ctx, read in list(self._reads.items()):
            if read.index is None:
                del self._reads[ctx]
                self._reply(Reply(read.request_id, ReplyStatus.NOT_LEADER,
                                  leader_hint=self._hint(), key=read.key))
        for read in self._leader_reads:
            self._reply(Reply(read.request_id, ReplyStatus.NOT_LEADER,
                              leader_hint=self._hint(), key=read.key))
        self._leader_reads.clear()
        self._lease_probes.clear()

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader: the state machine jumps to it."""
        if snapshot.meta.index <= self.applied_index:
            return
        self.state_machine.restore(snapshot.data)
        self.raw.observe_timestamp(self.state_machine.last_timestamp_ms)
        self.applied_index = snapshot.meta.index
        self.applied_term = snapshot.meta.term
        self.conf_state = snapshot.meta.conf_state
        self._last_snapshot_index = snapshot.meta.index
        if self._snapshot_observer is not None:
            self._snapshot_observer(snapshot.meta)
        for index in [i for i in self._writes if i <= snapshot.meta.index]:
            write = self._writes.pop(index)
            # The entry is somewhere inside the snapshot: its fate and result are unknown.
            self._reply(Reply(write.request_id, ReplyStatus.UNKNOWN, index=index))

    def _apply(self, entry: Entry) -> None:
        if entry.index <= self.applied_index:
            return  # already inside the state machine (a snapshot covered it)
        result: object = None
        if entry.type is EntryType.CONF_CHANGE:
            cc = ConfChange.decode(entry.data)
            self.conf_state = self.raw.apply_conf_change(cc)
            self.state_machine.apply_noop(entry.index, entry.timestamp_ms)
            result = self.conf_state
            # A member added now cannot install an older snapshot (it is not in that
            # snapshot's membership): make the next snapshot soon.
            self._snapshot_due = True
        elif entry.data:
            result = self.state_machine.apply(entry.index, entry.timestamp_ms, entry.data).result
        else:
            self.state_machine.apply_noop(entry.index, entry.timestamp_ms)
        self.applied_index = entry.index
        self.applied_term = entry.term
        self.stats.entries_applied += 1
        self.stats.entry_bytes_applied += len(entry.data)
        if self._applied_observer is not None:
            self._applied_observer(entry)
        write = self._writes.pop(entry.index, None)
        if write is None:
            return
        if write.term == entry.term:
            self._reply(Reply(write.request_id, ReplyStatus.OK, result, entry.index))
        else:
            # Log Matching: another entry is committed at this index, so ours never will be.
            self._reply(Reply(write.request_id, ReplyStatus.DROPPED, index=entry.index,
                              leader_hint=self._hint()))

    def _maybe_snapshot(self) -> None:
        every = self.config.snapshot_every_entries
        if every <= 0 or self._snapshot_sink is None:
            return
        if self.applied_index - self._last_snapshot_index < every and not self._snapshot_due:
            return
        self._snapshot_due = False
        meta = SnapshotMeta(self.applied_index, self.applied_term, self.conf_state)
        snapshot = Snapshot(meta, self.state_machine.snapshot())
        self._last_snapshot_index = self.applied_index
        self._snapshot_in_flight[meta.index] = snapshot
        self.stats.snapshots_taken += 1
        # NB: followers may get it before it is durable here: it holds committed state
        # only. A member just added needs a snapshot that includes it (the core ignores
        # one whose membership lacks it), so this matters right after a conf change.
        self._offer_snapshot(meta, snapshot.data)
        self._snapshot_sink.write_snapshot(snapshot)

    # -- reads (concord/node/driver_reads.py) -------------------------------------------
    submit_read = driver_reads.submit_read
    _read_index = driver_reads.read_index
    _on_read_state = driver_reads.on_read_state
    _release_reads = driver_reads.release_reads
    _answer_read = driver_reads.answer_read

    def _expire(self, now: int) -> None:
        for index, write in list(self._writes.items()):
            if write.deadline_ms is not None and now >= write.deadline_ms:
                del self._writes[index]
                self._reply(Reply(write.request_id, ReplyStatus.UNKNOWN, index=index,
                                  leader_hint=self._hint()))
        for ctx, read in list(self._reads.items()):
            if now >= read.deadline_ms:
                del self._reads[ctx]
                self._reply(Reply(read.request_id, ReplyStatus.TIMEOUT, key=read.key))
        for pending in (self._waiting_reads, self._leader_reads):
            expired = [r for r in pending if now >= r.deadline_ms]
            for read in expired:
                pending.remove(read)
                self._reply(Reply(read.request_id, ReplyStatus.TIMEOUT, key=read.key))

    # -- helpers ------------------------------------------------------------------------

    @property
    def lease_valid(self) -> bool:
        return self.role is Role.LEADER and self._timer.now_ms() < self._lease_until_ms

    @property
    def lease_until_ms(self) -> int:
        """When the leader lease ends on the driver's clock (-1: no lease held)."""
        return self._lease_until_ms if self.role is Role.LEADER else -1

    @property
    def pending_writes(self) -> int:
        return len(self._writes)

    def _end_lease(self) -> None:
        self._lease_until_ms = -1

    def _fence_lease(self) -> None:
        """
        A leader transfer starts (or is pending): end the lease and drop the probes in
        flight, so that only a probe sent after the transfer was abandoned renews it.
        """
        self._lease_until_ms = -1
        self._lease_probes.clear()

    def _refuse(self, request_id: int) -> None:
        status = ReplyStatus.DROPPED if self.role is Role.LEADER else ReplyStatus.NOT_LEADER
        self._reply(Reply(request_id, status, leader_hint=self._hint()))

    def _hint(self) -> NodeId | None:
        return self.leader_id if self.leader_id != self.node_id else None

    def _next_ctx(self, prefix: bytes) -> bytes:
        self._ctx_counter += 1
        return prefix + _CTX_NUMBER.pack(self._ctx_counter)

    def _send(self, msg: Message) -> None:
        self.stats.messages_sent += 1
        self._transport.send(msg)
