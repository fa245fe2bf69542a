"""
RawNode: the consensus core's only public entry point (etcd-io/raft RawNode,
raft-rs numbered Readys). Synchronous and not thread-safe.

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.

The loop that owns a RawNode:
  1. feeds inputs: tick(), set_time(now_ms), step(msg), propose(data), read_index(ctx)...
  2. when has_ready(): rd = ready();
     - sends rd.messages now;
     - persists rd.entries (appending index i truncates from i on), rd.hard_state and
       rd.snapshot (fsync if rd.must_sync), writes them into its MemoryStorage
       (append / set_hard_state / apply_snapshot), then calls on_persisted(rd.number)
       and only then sends rd.messages_after_persist;
     - applies rd.committed_entries in order (apply_conf_change for CONF_CHANGE entries),
       then calls on_applied(last index);
     - answers rd.read_states once applied >= index.

Bootstrap and restart:
  - A new cluster: each member's storage is `MemoryStorage(ConfState(voters=members))`
    (the bootstrap membership acts as a snapshot at index 0). A node joining later starts
    the same way (it is no voter there, so it never campaigns) and catches up from the
    leader, applying the CONF_CHANGE entries that add it.
  - A restart: load the recovered snapshot (apply_snapshot), then the hard state
    (set_hard_state) and the entries (append) into a MemoryStorage, create the RawNode,
    and restore the state machine from the snapshot. Committed entries past the snapshot
    come back in Readys; apply them again (CONF_CHANGE ones with apply_conf_change).
  - Within one Ready, persist the snapshot before the entries.

Beyond the etcd-io/raft RawNode API:
  - `Status` also carries `conf_state`, `lead_transferee` and `committed`.
  - `RawNode.raft` exposes the core for tests and describe; not part of the API.
  - Messages a node addresses to itself (its own vote, the leader's own append ack) never
    appear in a Ready: they are stepped inside on_persisted(number) for the Ready they
    belong to. So the leader counts its own entries toward a quorum only once persisted.
  - `must_sync` is also true when a snapshot is to be persisted.
  - RaftConfig also has `snapshot_inflight_chunks` (chunks in flight per follower) and
    `step_down_on_removal` (default True); the Rng Protocol lives in config.py and is
    exported by concord.raft.
  - MemoryStorage also has `hard_state` (property) and `last_timestamp_ms()`.
  - messages.py also has `LOCAL_MESSAGE_TYPES`, `CAMPAIGN_TRANSFER` and the ConfChange
    helpers `add_voter`, `add_learner`, `remove`, `encode`, `decode`.
  - `step` raises ValueError for local message types and for messages addressed to
    another node (a routing bug in the caller).
  - After a snapshot in a Ready is persisted, `applied` moves to its index (the caller
    installs it while persisting).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from concord.errors import RaftInvariantError
from concord.ids import NodeId
from concord.raft.config import RaftConfig, Rng
from concord.raft.core import Raft
from concord.raft.messages import LOCAL_MESSAGE_TYPES, ConfChange, ConfState, Entry, Message
from concord.raft.messages import MessageType, Snapshot
from concord.raft.progress import ProgressState
from concord.raft.state import HardState, ReadState, SoftState
from concord.raft.storage import Storage


@dataclass(frozen=True, slots=True)
class Ready:
    """
    One batch of outputs. Process it fully, in the order of the module docstring.

    Attributes:
        number: monotonic from 1; acknowledgements (on_persisted) are cumulative up to it.
        soft_state: None if unchanged since the last Ready; not persisted.
        hard_state: None if unchanged; persist.
        entries: persist; appending index i truncates everything from i on.
        snapshot: persist and install (this follower received it).
        must_sync: term, vote, entries (or snapshot) changed: the writer must fsync.
        messages: safe to send now.
        messages_after_persist: vote and append responses: send only after
            on_persisted(number).
        committed_entries: apply in order, then on_applied(last index).
        read_states: ReadState(index, request_ctx); serve once applied >= index.
    """

    number: int
    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    must_sync: bool = False
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    """The leader's view of one peer."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool
    inflight: int
    pending_snapshot: int


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a node's state, for logs, admin and tests."""

    id: NodeId
    hard_state: HardState
    soft_state: SoftState
    applied: int
    committed: int
    conf_state: ConfState
    lead_transferee: NodeId | None = None
    progress: dict[NodeId, ProgressStatus] = field(default_factory=dict)


@dataclass(slots=True)
class _ReadyRecord:
    """What becomes durable when a Ready is acknowledged."""

    number: int
    last_entry: tuple[int, int] | None
    snapshot_index: int | None
    self_messages: list[Message]


class RawNode:
    """
    The consensus core behind a synchronous Ready interface.

    Args:
        config: this node's settings (validated).
        storage: durable state, written by the caller from Readys.
        rng: election jitter (random.Random satisfies it).
    """

    def __init__(self, config: RaftConfig, storage: Storage, rng: Rng) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._number = 0
        self._persisted = 0
        self._records: deque[_ReadyRecord] = deque()

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""
        self.raft.tick()

    def advance_election(self, ticks: int) -> None:
        """Count `ticks` missed ticks toward a leaderless follower's election timeout
        (capped so the wait left stays randomised; Raft.advance_election)."""
        self.raft.advance_election(ticks)

    def set_time(self, now_ms: int) -> None:
        """Cluster time; the leader stamps entries with max(previous stamp, now_ms)."""
        self.raft.now_ms = now_ms

    def step(self, msg: Message) -> None:
        """
        Process a message from a peer.

        Raises:
            ValueError: a local message type, or a message addressed to another node.
        """
        if msg.type in LOCAL_MESSAGE_TYPES:
            raise ValueError(f"cannot step local message type {msg.type.name}")
        if msg.to != self.raft.id:
            raise ValueError(f"message for {msg.to} stepped into node {self.raft.id}")
        self.raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (with pre-vote if configured)."""
        self.raft.step(Message(MessageType.HUP, self.raft.id, self.raft.id))

    def propose(self, data: bytes, prompt_commit: bool = False) -> tuple[int, int]:
        """
        Append a command to the log (leader only).

        With `prompt_commit` the followers are told the entry's commit at once (an
        APPEND of its own), not with the next append or heartbeat: for entries whose
        effect other members' admission of requests depends on (auth changes).

        Returns:
            (index, term) assigned to the entry.

        Raises:
            ProposalDroppedError: not the leader, or a leader transfer is in progress.
        """
        return self.raft.propose(data, prompt_commit)

    def propose_many(self, datas: Sequence[bytes], prompt_commit: bool = False) -> tuple[int, int]:
        """
        `propose` for several commands at once, one entry each, in order (one check,
        one append to the log; the entries go out in the same Ready either way).

        Returns:
            (index of the first entry, term); the i-th command's entry is first + i.

        Raises:
            ProposalDroppedError: as `propose` (no entry is appended).
            ValueError: no commands.
        """
        return self.raft.propose_many(datas, prompt_commit)

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """
        Propose a membership change (leader only, one at a time).

        Raises:
            ProposalDroppedError: not the leader, transferring, another change is not
                yet applied, or the change is invalid for the current configuration.
        """
        return self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry's change; the new membership."""
        return self.raft.apply_conf_change(cc)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read; answered by a ReadState with `ctx`, or dropped."""
        self.raft.step(Message(MessageType.READ_INDEX, self.raft.id, self.raft.id, context=ctx))

    def transfer_leadership(self, to: NodeId) -> None:
        """Ask the leader (this node, or forwarded to it) to hand leadership to `to`."""
        self.raft.step(
            Message(
                MessageType.TRANSFER_LEADER, self.raft.id, self.raft.id, context=to.encode("utf-8")
            )
        )

    @property
    def lead_transferee(self) -> NodeId | None:
        """The target of the leader transfer in progress (leader only), or None."""
        return self.raft.lead_transferee

    def observe_timestamp(self, timestamp_ms: int) -> None:
        """
        Cluster time the application has seen applied (e.g. the last entry inside a
        snapshot it restored, which the log no longer holds): entries this node stamps
        as leader are never older.
        """
        if timestamp_ms > self.raft.max_timestamp_seen_ms:
            self.raft.max_timestamp_seen_ms = timestamp_ms

    def report_unreachable(self, to: NodeId) -> None:
        """The transport failed to reach `to`: stop pipelining to it."""
        self.raft.step(Message(MessageType.UNREACHABLE, self.raft.id, to))

    # ----------------------------------------------------------------- outputs

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or r.msgs_after_persist
            or r.read_states
            or r.has_flush_work()
            or r.lead != self._prev_soft.leader_id
            or r.role != self._prev_soft.role
            or self._hard_state_changed()
            or log.unstable.has_next_entries()
            or log.unstable.next_snapshot() is not None
            or log.has_next_committed_entries()
        )

    def _hard_state_changed(self) -> bool:
        r = self.raft
        prev = self._prev_hard
        return prev.term != r.term or prev.vote != r.vote or prev.commit != r.log.committed

    def ready(self) -> Ready:
        """The pending outputs, handed over once (a later ready() will not repeat them)."""
        r = self.raft
        r.flush()
        log = r.log
        soft = r.soft_state()
        soft_state = soft if soft != self._prev_soft else None
        hard = r.hard_state()
        hard_state = hard if hard != self._prev_hard else None
        entries = log.unstable.next_entries()
        snapshot = log.unstable.next_snapshot()
        committed = log.next_committed_entries()
        must_sync = bool(entries) or snapshot is not None or (
            hard_state is not None
            and (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)
        )
        after: list[Message] = []
        own: list[Message] = []
        for m in r.msgs_after_persist:
            (own if m.to == r.id else after).append(m)
        self._number += 1
        number = self._number
        rd = Ready(
            number=number,
            soft_state=soft_state,
            hard_state=hard_state,
            entries=tuple(entries),
            snapshot=snapshot,
            must_sync=must_sync,
            messages=tuple(r.msgs),
            messages_after_persist=tuple(after),
            committed_entries=tuple(committed),
            read_states=tuple(r.read_states),
        )
        # Accept: what was handed out is not handed out again.
        self._prev_soft = soft
        self._prev_hard = hard
        log.unstable.accept_in_progress()
        if committed:
            log.applying = committed[-1].index
        if snapshot is not None and log.applying < snapshot.meta.index:
            log.applying = snapshot.meta.index
        r.msgs = []
        r.msgs_after_persist = []
        r.read_states = []
        last_entry = (entries[-1].index, entries[-1].term) if entries else None
        self._records.append(
            _ReadyRecord(number, last_entry, snapshot.meta.index if snapshot else None, own)
        )
        return rd

    def on_persisted(self, number: int) -> None:
        """
        Everything in Readys up to `number` is durable (and in the caller's storage).

        Raises:
            RaftInvariantError: `number` was never handed out.
        """
        if number > self._number:
            raise RaftInvariantError(f"persisted ready {number} beyond last ready {self._number}")
        r = self.raft
        log = r.log
        while self._records and self._records[0].number <= number:
            rec = self._records.popleft()
            if rec.snapshot_index is not None:
                log.unstable.stable_snap_to(rec.snapshot_index)
                if log.applied < rec.snapshot_index:
                    log.applied = rec.snapshot_index
                if log.applying < rec.snapshot_index:
                    log.applying = rec.snapshot_index
            if rec.last_entry is not None:
                log.unstable.stable_to(*rec.last_entry)
            for m in rec.self_messages:
                r.step(m)
        if number > self._persisted:
            self._persisted = number

    def on_applied(self, index: int) -> None:
        """
        Committed entries up to `index` are applied to the state machine.

        Raises:
            RaftInvariantError: index is below applied or beyond committed.
        """
        self.raft.log.applied_to(index)
        self.raft.maybe_auto_leave()
        self.raft.campaign_deferred_transfer(tick=False)

    def status(self) -> Status:
        r = self.raft
        progress: dict[NodeId, ProgressStatus] = {}
        if r.role.name == "LEADER":
            for node_id, pr in r.tracker.progress.items():
                progress[node_id] = ProgressStatus(
                    pr.match,
                    pr.next,
                    pr.state,
                    pr.is_learner,
                    pr.recent_active,
                    pr.inflights.count(),
                    pr.pending_snapshot,
                )
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.log.applied,
            committed=r.log.committed,
            conf_state=r.tracker.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=progress,
        )
