"""The driver's Ready loop, with a scripted fake RawNode and fake IO."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from concord.errors import ProposalDroppedError
from concord.ids import NodeId
from concord.node.driver import (
    Consistency,
    Driver,
    DriverConfig,
    Reply,
    ReplyStatus,
    load_memory_storage,
)
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
from concord.raft.rawnode import Ready
from concord.raft.state import HardState, ReadState, Role, SoftState
from concord.raft.storage import MemoryStorage
from concord.sim.disk import RecoveredState
from concord.sim.machine import RegisterAdapter, RegisterMachine
from concord.sim.linearizability import OpKind

N1, N2 = NodeId("n1"), NodeId("n2")
VOTERS = ConfState(voters=(N1, N2, NodeId("n3")))
LEADER = SoftState(N1, Role.LEADER)
FOLLOWER = SoftState(N2, Role.FOLLOWER)


class FakeRaw:
    """A RawNode whose Readys are scripted by the test."""

    def __init__(self) -> None:
        self.readys: deque[Ready] = deque()
        self.next_propose: tuple[int, int] | None = (1, 1)
        self.stepped: list[Message] = []
        self.read_ctxs: list[bytes] = []
        self.persisted: list[int] = []
        self.applied: list[int] = []
        self.conf_changes: list[ConfChange] = []
        self.transfers: list[NodeId] = []
        self.lead_transferee: NodeId | None = None
        self.ticks = 0
        self.advanced: list[int] = []
        self.now_ms = 0
        self.observed_ms: list[int] = []

    def tick(self) -> None:
        self.ticks += 1

    def advance_election(self, ticks: int) -> None:
        self.advanced.append(ticks)

    def observe_timestamp(self, timestamp_ms: int) -> None:
        self.observed_ms.append(timestamp_ms)

    def set_time(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def step(self, msg: Message) -> None:
        self.stepped.append(msg)

    def propose(self, data: bytes, prompt_commit: bool = False) -> tuple[int, int]:
        if self.next_propose is None:
            raise ProposalDroppedError("not leader")
        return self.next_propose

    def propose_many(self, datas: Sequence[bytes], prompt_commit: bool = False) -> tuple[int, int]:
        return self.propose(datas[0], prompt_commit)  # first index: next_propose's

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        return self.propose(cc.encode())

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        self.conf_changes.append(cc)
        return ConfState(voters=VOTERS.voters, learners=(cc.changes[0].node_id,))

    def read_index(self, ctx: bytes) -> None:
        self.read_ctxs.append(ctx)

    def transfer_leadership(self, to: NodeId) -> None:
        self.transfers.append(to)
        self.lead_transferee = to

    def has_ready(self) -> bool:
        return bool(self.readys)

    def ready(self) -> Ready:
        return self.readys.popleft()

    def on_persisted(self, number: int) -> None:
        self.persisted.append(number)

    def on_applied(self, index: int) -> None:
        self.applied.append(index)


@dataclass
class World:
    now: int = 0
    sent: list[Message] = field(default_factory=list)
    persists: list[tuple[int, int, bool]] = field(default_factory=list)
    persisted_hard_states: list[HardState | None] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def now_ms(self) -> int:
        return self.now

    def send(self, msg: Message) -> None:
        self.sent.append(msg)

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None:
        self.persists.append((number, len(entries), must_sync))
        self.persisted_hard_states.append(hard_state)

    def by_id(self, request_id: int) -> Reply:
        (reply,) = [r for r in self.replies if r.request_id == request_id]
        return reply


def make(
    config: DriverConfig | None = None, storage: MemoryStorage | None = None
) -> tuple[Driver, FakeRaw, World, MemoryStorage, RegisterMachine]:
    raw, world = FakeRaw(), World()
    storage = storage or MemoryStorage(VOTERS)
    machine = RegisterMachine()
    driver = Driver(
        N1, raw, storage, world, world, world, machine, world.replies.append,
        config or DriverConfig(), VOTERS, HardState(),
    )
    return driver, raw, world, storage, machine


def msg(kind: MessageType, term: int = 1) -> Message:
    return Message(kind, N2, N1, term=term)


def put(key: str, value: int) -> bytes:
    return RegisterAdapter().encode(OpKind.PUT, key, (value,))


def become_leader(driver: Driver, raw: FakeRaw, number: int = 1, term: int = 1) -> None:
    raw.readys.append(Ready(number, soft_state=LEADER, hard_state=HardState(term, N1, 0)))
    driver.process_ready()


def test_messages_after_persist_wait_when_sink_has_not_acked() -> None:
    """Append responses leave only after on_persisted (durability before ack, docs/architecture.md)."""
    driver, raw, world, storage, _ = make()
    now_msg, held = msg(MessageType.HEARTBEAT_RESP), msg(MessageType.APPEND_RESP)
    entry = Entry(1, 1, data=put("a", 1))
    raw.readys.append(Ready(1, hard_state=HardState(1, None, 0), entries=(entry,),
                            must_sync=True, messages=(now_msg,),
                            messages_after_persist=(held,)))
    driver.process_ready()
    assert [now_msg] == world.sent
    assert [(1, 1, True)] == world.persists
    assert 0 == storage.last_index()
    driver.on_persisted(1)
    assert [now_msg, held] == world.sent
    assert 1 == storage.last_index()
    assert HardState(1, None, 0) == storage.hard_state
    assert [1] == raw.persisted


def test_empty_ready_is_acked_at_once_when_nothing_is_in_flight() -> None:
    """A Ready with nothing to persist skips the sink only when no earlier one waits."""
    driver, raw, world, _, _ = make()
    raw.readys.append(Ready(1, read_states=()))
    driver.process_ready()
    assert [1] == raw.persisted and [] == world.persists
    raw.readys.append(Ready(2, entries=(Entry(1, 1),), must_sync=True))
    raw.readys.append(Ready(3))
    driver.process_ready()
    assert [1] == raw.persisted
    assert [2, 3] == [p[0] for p in world.persists]


def test_commit_only_ready_is_acked_at_once_when_nothing_is_in_flight() -> None:
    """Only the commit moved: acked and its responses sent now; the hard state goes at the tick."""
    driver, raw, world, storage, _ = make()
    held = msg(MessageType.APPEND_RESP)
    raw.readys.append(Ready(1, hard_state=HardState(1, None, 3), must_sync=False,
                            messages_after_persist=(held,)))
    driver.process_ready()
    assert ([1], [held], []) == (raw.persisted, world.sent, world.persists)
    assert HardState(1, None, 3) == storage.hard_state
    driver.on_tick()
    assert [(1, 0, False)] == world.persists
    assert [HardState(1, None, 3)] == world.persisted_hard_states
    driver.on_tick()
    assert 1 == len(world.persists)


def test_commit_only_ready_waits_when_an_earlier_ready_is_in_flight() -> None:
    """Acks are cumulative: behind an unacked Ready, a commit-only one goes through the sink."""
    driver, raw, world, _, _ = make()
    held = msg(MessageType.APPEND_RESP)
    raw.readys.append(Ready(1, entries=(Entry(1, 1),), must_sync=True))
    raw.readys.append(Ready(2, hard_state=HardState(1, None, 1), must_sync=False,
                            messages_after_persist=(held,)))
    driver.process_ready()
    assert ([], [], [1, 2]) == (raw.persisted, world.sent, [p[0] for p in world.persists])
    driver.on_persisted(2)
    assert ([2], [held]) == (raw.persisted, world.sent)


def test_lazy_hard_state_is_persisted_with_the_next_ready_when_entries_follow() -> None:
    """A commit-only hard state acked early rides with the next Ready the sink gets."""
    driver, raw, world, _, _ = make()
    raw.readys.append(Ready(1, hard_state=HardState(1, None, 3), must_sync=False))
    raw.readys.append(Ready(2, entries=(Entry(1, 1),), must_sync=True))
    driver.process_ready()
    assert [(2, 1, True)] == world.persists
    assert [HardState(1, None, 3)] == world.persisted_hard_states
    driver.on_persisted(2)
    driver.on_tick()
    assert 1 == len(world.persists)


def test_write_completes_when_its_entry_is_applied_at_the_same_term() -> None:
    """A write is answered OK with the state machine's result once (index, term) applies."""
    driver, raw, world, _, machine = make()
    become_leader(driver, raw)
    raw.next_propose = (1, 1)
    driver.submit_write(7, put("a", 5))
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1, data=put("a", 5)),)))
    driver.process_ready()
    assert ReplyStatus.OK == world.by_id(7).status
    assert {"revision": 1} == world.by_id(7).result
    assert 5 == machine.get("a")
    assert [1] == raw.applied


def test_write_is_dropped_when_another_term_commits_at_its_index() -> None:
    """Log Matching: a different term at the write's index means it never commits."""
    driver, raw, world, _, machine = make()
    become_leader(driver, raw)
    driver.submit_write(7, put("a", 5))
    raw.readys.append(Ready(2, committed_entries=(Entry(2, 1, data=put("a", 9)),)))
    driver.process_ready()
    assert ReplyStatus.DROPPED == world.by_id(7).status
    assert 9 == machine.get("a")


def test_pending_write_is_unknown_when_leadership_is_lost() -> None:
    """After losing leadership a pending write may still commit: the answer is UNKNOWN."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    driver.submit_write(7, put("a", 5))
    raw.readys.append(Ready(2, soft_state=FOLLOWER))
    driver.process_ready()
    assert ReplyStatus.UNKNOWN == world.by_id(7).status


def test_pending_write_gets_exact_answer_when_applied_within_grace() -> None:
    """With unknown_grace_ms, an orphaned write applied in time is answered exactly."""
    driver, raw, world, _, _ = make(DriverConfig(unknown_grace_ms=100))
    become_leader(driver, raw)
    driver.submit_write(7, put("a", 5))
    raw.next_propose = (2, 1)
    driver.submit_write(8, put("a", 6))
    raw.readys.append(Ready(2, soft_state=FOLLOWER))
    driver.process_ready()
    assert [] == world.replies
    raw.readys.append(Ready(3, committed_entries=(Entry(1, 1, data=put("a", 5)),)))
    driver.process_ready()
    assert ReplyStatus.OK == world.by_id(7).status
    world.now = 100
    driver.on_tick()
    assert ReplyStatus.UNKNOWN == world.by_id(8).status


def test_write_is_refused_with_hint_when_not_leader() -> None:
    """A follower's refusal is NOT_LEADER with the leader's id; the write never happened."""
    driver, raw, world, _, _ = make()
    raw.readys.append(Ready(1, soft_state=FOLLOWER))
    driver.process_ready()
    raw.next_propose = None
    driver.submit_write(7, put("a", 5))
    assert Reply(7, ReplyStatus.NOT_LEADER, leader_hint=N2) == world.by_id(7)


def test_strong_read_waits_when_applied_is_below_read_index() -> None:
    """A strong read is served only once a ReadState arrived and applied >= its index."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    driver.submit_read(9, "a", Consistency.STRONG)
    (ctx,) = raw.read_ctxs
    raw.readys.append(Ready(2, read_states=(ReadState(1, ctx),)))
    driver.process_ready()
    assert [] == world.replies
    raw.readys.append(Ready(3, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    assert Reply(9, ReplyStatus.OK, index=1, key="a") == world.by_id(9)


def test_strong_read_times_out_when_no_read_state_arrives() -> None:
    """A read index the core dropped ends as TIMEOUT (reads change nothing)."""
    driver, raw, world, _, _ = make(DriverConfig(read_timeout_ms=50))
    driver.submit_read(9, "a", Consistency.STRONG)
    world.now = 50
    driver.on_tick()
    assert ReplyStatus.TIMEOUT == world.by_id(9).status


def test_leader_read_takes_read_index_round_when_no_lease_is_held() -> None:
    """A new leader without a lease serves leader reads through ReadIndex, not NOT_LEADER."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    driver.submit_read(9, "a", Consistency.LEADER)
    assert [] == world.replies
    (ctx,) = raw.read_ctxs
    raw.readys.append(Ready(2, read_states=(ReadState(1, ctx),)))
    driver.process_ready()
    assert [] == world.replies  # applied 0 < read index 1
    raw.readys.append(Ready(3, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    assert Reply(9, ReplyStatus.OK, index=1, key="a") == world.by_id(9)


def test_leader_read_is_refused_when_node_is_not_leader() -> None:
    """A follower answers leader reads with NOT_LEADER and the leader as hint."""
    driver, raw, world, _, _ = make()
    raw.readys.append(Ready(1, soft_state=FOLLOWER))
    driver.process_ready()
    driver.submit_read(9, "a", Consistency.LEADER)
    assert Reply(9, ReplyStatus.NOT_LEADER, leader_hint=N2, key="a") == world.by_id(9)
    assert [] == raw.read_ctxs


def test_leader_read_is_served_when_lease_probe_confirmed_and_until_it_expires() -> None:
    """A quorum-confirmed probe at T gives a lease until T + lease_ms; then reads stop."""
    config = DriverConfig(tick_ms=10, election_ticks=10, lease_margin_ms=5)
    driver, raw, world, _, _ = make(config)
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    world.now = 10
    driver.on_tick()
    (probe,) = raw.read_ctxs
    raw.readys.append(Ready(3, read_states=(ReadState(1, probe),)))
    driver.process_ready()
    world.now = 10 + config.lease_ms - 1
    driver.submit_read(9, "a", Consistency.LEADER)
    assert ReplyStatus.OK == world.by_id(9).status
    world.now = 10 + config.lease_ms
    driver.submit_read(10, "a", Consistency.LEADER)
    assert [] == [r for r in world.replies if r.request_id == 10]
    assert [probe] == raw.read_ctxs[:-1]  # and one ReadIndex round for read 10


@dataclass
class Timer:
    now: int = 0

    def now_ms(self) -> int:
        return self.now


def test_lease_ends_on_time_when_wall_clock_steps_back() -> None:
    """The lease runs on the timer (CLOCK_MONOTONIC), so a wall clock stepped back an hour cannot stretch it."""
    config = DriverConfig(tick_ms=10, election_ticks=10, lease_margin_ms=5)
    raw, world, timer = FakeRaw(), World(), Timer()
    world.now = 1_000_000_000  # the wall clock
    driver = Driver(N1, raw, MemoryStorage(VOTERS), world, world, world, RegisterMachine(),
                    world.replies.append, config, VOTERS, HardState(), timer=timer)
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    timer.now = 10
    driver.on_tick()
    raw.readys.append(Ready(3, read_states=(ReadState(1, raw.read_ctxs[0]),)))
    driver.process_ready()
    assert driver.lease_valid
    world.now -= 3_600_000  # NTP steps the wall clock back an hour
    timer.now = 10 + config.lease_ms
    probes = len(raw.read_ctxs)
    driver.submit_read(9, "a", Consistency.LEADER)
    # Not served under the lease: the read waits for a ReadIndex round of its own.
    assert [] == [r for r in world.replies if r.request_id == 9]
    assert probes + 1 == len(raw.read_ctxs)
    assert not driver.lease_valid


def test_lease_ends_when_timer_steps_back() -> None:
    """A timer that steps back (only a faked CLOCK_MONOTONIC does) ends the lease at the next tick."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    world.now = 3_600_000
    driver.on_tick()
    raw.readys.append(Ready(3, read_states=(ReadState(1, raw.read_ctxs[0]),)))
    driver.process_ready()
    assert driver.lease_valid
    world.now = 1
    driver.on_tick()
    assert not driver.lease_valid


def test_lease_ends_when_leadership_transfer_starts() -> None:
    """TimeoutNow overrides the voters' lease, so the leader stops lease reads at once."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    driver.on_tick()
    raw.readys.append(Ready(3, read_states=(ReadState(1, raw.read_ctxs[0]),)))
    driver.process_ready()
    assert driver.lease_valid
    driver.transfer_leader(N2)
    assert not driver.lease_valid
    assert [N2] == raw.transfers


def leader_with_lease(config: DriverConfig | None = None) -> tuple[Driver, FakeRaw, World]:
    """A leader that applied its term's entry and holds a lease from a probe at t=0."""
    driver, raw, world, _, _ = make(config)
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    driver.on_tick()
    raw.readys.append(Ready(3, read_states=(ReadState(1, raw.read_ctxs.pop()),)))
    driver.process_ready()
    assert driver.lease_valid
    return driver, raw, world


def test_lease_stays_ended_when_probe_in_flight_at_transfer_start_is_confirmed() -> None:
    """A probe sent before a transfer started grants nothing, even once it is abandoned."""
    driver, raw, world = leader_with_lease()
    world.now = 10
    driver.on_tick()
    in_flight = raw.read_ctxs.pop()
    driver.transfer_leader(N2)
    raw.lead_transferee = None  # the core abandoned the transfer (election timeout)
    raw.readys.append(Ready(4, read_states=(ReadState(1, in_flight),)))
    driver.process_ready()
    assert not driver.lease_valid
    assert -1 == driver.lease_until_ms


def test_no_lease_probe_goes_out_when_transfer_is_pending() -> None:
    """While the core has a transfer pending, ticks send no probe and renew nothing."""
    driver, raw, world = leader_with_lease()
    driver.transfer_leader(N2)
    for now in (10, 20, 30):
        world.now = now
        driver.on_tick()
    assert [] == raw.read_ctxs
    assert not driver.lease_valid


def test_lease_ends_when_peer_asks_leader_to_transfer() -> None:
    """A TRANSFER_LEADER from a follower fences the lease like a local request."""
    driver, raw, world = leader_with_lease()
    world.now = 10
    driver.on_tick()
    in_flight = raw.read_ctxs.pop()
    driver.on_message(Message(MessageType.TRANSFER_LEADER, N1, N2, term=1, context=b"n2"))
    raw.readys.append(Ready(4, read_states=(ReadState(1, in_flight),)))
    driver.process_ready()
    assert not driver.lease_valid


def test_lease_returns_when_probe_sent_after_transfer_was_abandoned_is_confirmed() -> None:
    """Once the core abandoned the transfer, the next confirmed probe grants a lease."""
    driver, raw, world = leader_with_lease()
    driver.transfer_leader(N2)
    raw.lead_transferee = None
    world.now = 10
    driver.on_tick()
    raw.readys.append(Ready(4, read_states=(ReadState(1, raw.read_ctxs.pop()),)))
    driver.process_ready()
    assert driver.lease_valid
    assert 10 + driver.config.lease_ms == driver.lease_until_ms


def test_vote_requests_are_held_when_node_just_started() -> None:
    """A restarted node does not vote for an election timeout (it may have granted a lease)."""
    driver, raw, world, _, _ = make(DriverConfig(tick_ms=10, election_ticks=10))
    driver.on_message(msg(MessageType.VOTE, term=2))
    driver.on_message(msg(MessageType.APPEND, term=2))
    assert [MessageType.APPEND] == [m.type for m in raw.stepped]
    world.now = 100
    driver.on_message(msg(MessageType.VOTE, term=2))
    assert [MessageType.APPEND, MessageType.VOTE] == [m.type for m in raw.stepped]


def test_conf_change_entry_is_applied_through_the_core_when_committed() -> None:
    """CONF_CHANGE entries go to apply_conf_change; the reply carries the new ConfState."""
    driver, raw, world, _, machine = make()
    become_leader(driver, raw)
    cc = ConfChange.add_learner(NodeId("n4"))
    driver.submit_conf_change(3, cc)
    raw.readys.append(Ready(2, committed_entries=(
        Entry(1, 1, EntryType.CONF_CHANGE, cc.encode()),)))
    driver.process_ready()
    assert [cc] == raw.conf_changes
    assert (NodeId("n4"),) == driver.conf_state.learners
    assert driver.conf_state == world.by_id(3).result
    assert 1 == machine.applied_index


def test_snapshot_from_leader_restores_state_when_received() -> None:
    """A snapshot in a Ready replaces the state machine; writes inside it become UNKNOWN."""
    source = RegisterMachine()
    source.apply(1, 0, put("a", 3))
    source.apply_noop(2, 0)
    snap = Snapshot(SnapshotMeta(2, 1, VOTERS), source.snapshot())
    driver, raw, world, storage, machine = make()
    become_leader(driver, raw)
    driver.submit_write(7, put("a", 5))
    raw.readys.append(Ready(2, soft_state=FOLLOWER, snapshot=snap, must_sync=True))
    driver.process_ready()
    assert 3 == machine.get("a") and 2 == driver.applied_index
    assert ReplyStatus.UNKNOWN == world.by_id(7).status
    driver.on_persisted(2)
    assert 2 == storage.snapshot().meta.index


def test_snapshot_written_compacts_the_log_when_keep_is_small() -> None:
    """After a driver-taken snapshot is durable, memory keeps only the configured tail."""
    taken: list[Snapshot] = []

    class Sink:
        def write_snapshot(self, snapshot: Snapshot) -> None:
            taken.append(snapshot)

    raw, world = FakeRaw(), World()
    storage = MemoryStorage(VOTERS)
    entries = tuple(Entry(1, i, data=put("a", i)) for i in range(1, 6))
    storage.append(entries)
    config = DriverConfig(snapshot_every_entries=5, snapshot_keep_entries=2)
    driver = Driver(N1, raw, storage, world, world, world, RegisterMachine(),
                    world.replies.append, config, VOTERS, HardState(), snapshot_sink=Sink())
    raw.readys.append(Ready(1, committed_entries=entries))
    driver.process_ready()
    (snap,) = taken
    assert 5 == snap.meta.index
    driver.on_snapshot_written(snap.meta)
    assert 5 == storage.snapshot().meta.index
    assert 4 == storage.first_index()


def test_recovery_raises_commit_when_snapshot_is_newer_than_hard_state() -> None:
    """A snapshot holds committed entries only, so commit is raised to its index."""
    storage = MemoryStorage(VOTERS)
    snap = Snapshot(SnapshotMeta(5, 2, VOTERS), b"{}")
    recovered = RecoveredState(snap, HardState(2, N1, 3), [Entry(2, 6)])
    hard_state = load_memory_storage(storage, recovered)
    assert HardState(2, N1, 5) == hard_state
    assert (6, 7) == (storage.last_index(), storage.first_index() + 1)


def test_core_learns_applied_time_when_started_or_snapshot_installed() -> None:
    """The log may start after a snapshot: the core is told the state machine's time (at
    start and after each installed snapshot), so it never stamps older entries as leader."""
    machine = RegisterMachine()
    machine.apply_noop(1, 7_000)
    raw, world = FakeRaw(), World()
    driver = Driver(N1, raw, MemoryStorage(VOTERS), world, world, world, machine,
                    world.replies.append, DriverConfig(), VOTERS, HardState())
    assert [7_000] == raw.observed_ms
    other = RegisterMachine()
    for i in range(1, 4):
        other.apply_noop(i, 9_000 + i)
    snap = Snapshot(SnapshotMeta(3, 1, VOTERS), other.snapshot())
    raw.readys.append(Ready(1, snapshot=snap))
    driver.process_ready()
    driver.on_persisted(1)
    assert [7_000, 9_003] == raw.observed_ms


def test_empty_command_is_rejected_when_submitted() -> None:
    """An empty entry is the leader's no-op: a client command can never be empty."""
    driver, _, _, _, _ = make()
    with pytest.raises(ValueError):
        driver.submit_write(1, b"")


def test_leader_read_waits_when_commit_is_ahead_of_applied() -> None:
    """A leader that committed (via followers) but has not applied yet must not serve."""
    driver, raw, world, _, _ = make()
    become_leader(driver, raw)
    raw.readys.append(Ready(2, committed_entries=(Entry(1, 1),)))
    driver.process_ready()
    driver.on_tick()
    raw.readys.append(Ready(3, hard_state=HardState(1, N1, 2),
                            read_states=(ReadState(1, raw.read_ctxs[0]),)))
    driver.process_ready()
    driver.submit_read(9, "a", Consistency.LEADER)
    assert [] == world.replies
    raw.readys.append(Ready(4, committed_entries=(Entry(1, 2, data=put("a", 1)),)))
    driver.process_ready()
    assert Reply(9, ReplyStatus.OK, index=2, key="a") == world.by_id(9)


def test_ticks_missed_while_starting_count_toward_the_first_election_until_a_leader_is_known() -> None:
    """A driver first ticked 95 ms after it started (its owner was replaying the log)
    hands the 8 ticks of 10 ms it missed to the core; once ticked on time it hands none;
    after a leader is known, a stall is no longer counted."""
    driver, raw, world, _, _ = make(DriverConfig(tick_ms=10, election_ticks=10))
    world.now = 95
    driver.on_tick()
    assert [8] == raw.advanced
    world.now = 105
    driver.on_tick()
    assert [8] == raw.advanced
    raw.readys.append(Ready(1, soft_state=FOLLOWER))
    driver.process_ready()
    world.now = 500
    driver.on_tick()
    assert [8] == raw.advanced


def test_batch_of_writes_is_answered_each_by_its_index_when_proposed_together() -> None:
    """submit_writes proposes in order: the i-th write waits on first + i; a refused batch
    answers every write of it."""
    driver, raw, world, _, machine = make()
    become_leader(driver, raw)
    raw.next_propose = (1, 1)
    assert 1 == driver.submit_writes([(7, put("a", 1)), (8, put("b", 2)), (9, put("a", 3))])
    raw.readys.append(Ready(2, committed_entries=tuple(
        Entry(1, i, data=put(k, v)) for i, (k, v) in zip((1, 2, 3), (("a", 1), ("b", 2), ("a", 3))))))
    driver.process_ready()
    assert [ReplyStatus.OK] * 3 == [world.by_id(i).status for i in (7, 8, 9)]
    assert (3, 2) == (machine.get("a"), machine.get("b"))
    raw.next_propose = None
    assert driver.submit_writes([(10, put("a", 4)), (11, put("a", 5))]) is None
    assert [ReplyStatus.DROPPED] * 2 == [world.by_id(i).status for i in (10, 11)]  # as one refused
    with pytest.raises(ValueError):
        driver.submit_writes([(12, put("a", 6)), (13, b"")])
