"""The simulator's parts (time, randomness, network, disk, buggify) and whole runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from concord.ids import NodeId
from concord.raft.messages import Entry, Message, MessageType
from concord.raft.state import HardState
from concord.sim import buggify as buggify_mod
from concord.sim.buggify import Buggify, buggify, knob
from concord.sim.cluster import SimConfig, Simulation, run_seed
from concord.sim.disk import FakeDisk, SimLogWriter
from concord.sim.loop import EventLoop
from concord.sim.machine import RegisterAdapter
from concord.sim.network import LinkFaults, Network
from concord.sim.rng import SimRandom

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def test_events_run_in_time_then_schedule_order_when_times_tie() -> None:
    """The heap orders by (time, seq): ties run in the order they were scheduled."""
    loop = EventLoop()
    seen: list[str] = []
    loop.at(5, lambda: seen.append("late"))
    loop.at(1, lambda: seen.append("first"))
    loop.at(1, lambda: seen.append("second"))
    loop.at(9, lambda: seen.append("never")).cancel()
    loop.run_until(10)
    assert ["first", "second", "late"] == seen
    assert 10 == loop.now


def test_forked_streams_are_independent_when_parent_draws_change() -> None:
    """A child stream depends on the seed and its name only, not on other draws."""
    one, two = SimRandom(7), SimRandom(7)
    two.random()
    assert one.fork("disk").random() == two.fork("disk").random()
    assert SimRandom(7).fork("disk").random() != SimRandom(7).fork("network").random()


def test_buggify_is_inert_when_no_simulation_runs() -> None:
    """Outside a run, buggify() is always False and knob() the default."""
    assert buggify_mod.active() is None
    assert not any(buggify("any.site") for _ in range(1000))
    assert 3 == knob("any.knob", 3, [1, 2])


def test_buggify_fires_sometimes_when_site_is_on() -> None:
    """In a run, an enabled site fires with p = 0.25 per call; the choice is seeded."""
    state = Buggify(seed=1)
    on_sites = [f"s{i}" for i in range(40) if state.site_on(f"s{i}")]
    assert 0 < len(on_sites) < 40
    fired = sum(state.fire(on_sites[0]) for _ in range(400))
    assert 50 < fired < 150
    assert not Buggify(seed=1, enabled=False).fire(on_sites[0])


def make_network(faults: LinkFaults | None = None) -> tuple[EventLoop, Network, list[Message]]:
    loop = EventLoop()
    net = Network(loop, SimRandom(3), faults or LinkFaults(min_delay_ms=1, max_delay_ms=9))
    got: list[Message] = []
    for node in (A, B, C):
        net.register(node, got.append)
    return loop, net, got


def heartbeat(frm: NodeId, to: NodeId, index: int) -> Message:
    return Message(MessageType.HEARTBEAT, to, frm, term=1, index=index)


def test_link_delivers_in_order_when_reorder_is_off() -> None:
    """Without reorder faults a link is FIFO, like one TCP connection."""
    loop, net, got = make_network()
    for i in range(50):
        net.send(heartbeat(A, B, i))
    loop.run_until(100)
    assert list(range(50)) == [m.index for m in got]


def test_partition_drops_messages_when_crossing_it() -> None:
    """A two-way partition drops both directions; a one-way block only one."""
    loop, net, got = make_network()
    net.partition([A], [B])
    net.block(C, A)
    for frm, to in ((A, B), (B, A), (A, C), (C, A)):
        net.send(heartbeat(frm, to, 0))
    loop.run_until(100)
    assert [(A, C)] == [(m.frm, m.to) for m in got]
    net.heal()
    net.send(heartbeat(A, B, 1))
    loop.run_until(200)
    assert 2 == len(got)


def test_clog_holds_messages_when_node_is_clogged() -> None:
    """A clogged node's traffic arrives only after the clog ends, still in order."""
    loop, net, got = make_network()
    net.clog(B, until_ms=500)
    net.send(heartbeat(A, B, 1))
    net.send(heartbeat(A, B, 2))
    loop.run_until(499)
    assert [] == got
    loop.run_until(500)
    assert [1, 2] == [m.index for m in got]


def test_crash_loses_unsynced_writes_when_not_fsynced() -> None:
    """Synced records survive a crash; unsynced ones are lost (tear_p = 0)."""
    disk = FakeDisk()
    disk.write([Entry(1, 1)], HardState(1, A, 0), None)
    disk.sync(1)
    disk.write([Entry(1, 2)], HardState(1, A, 1), None)
    disk.crash(SimRandom(1), tear_p=0.0)
    recovered = disk.recover()
    assert [1] == [e.index for e in recovered.entries]
    assert HardState(1, A, 0) == recovered.hard_state


def test_crash_keeps_at_most_a_prefix_when_tearing() -> None:
    """A torn crash keeps a prefix of unsynced records, never anything out of order."""
    for seed in range(30):
        disk = FakeDisk()
        disk.write([Entry(1, 1), Entry(1, 2)], None, None)
        disk.write([Entry(1, 3), Entry(1, 4)], None, None)
        disk.crash(SimRandom(seed), tear_p=1.0)
        indexes = [e.index for e in disk.recover().entries]
        assert list(range(1, len(indexes) + 1)) == indexes


def test_writer_acks_after_fsync_when_writes_are_grouped() -> None:
    """Writes arriving during an fsync are acknowledged together by the next one."""
    loop, disk = EventLoop(), FakeDisk()
    acks: list[object] = []
    writer = SimLogWriter(loop, disk, SimRandom(1), acks.append, (5, 5))
    writer.persist(1, [Entry(1, 1)], None, None, True)
    writer.persist(2, [Entry(1, 2)], None, None, True)
    loop.run_until(4)
    assert [] == acks
    loop.run_until(5)
    assert [1] == acks
    loop.run_until(10)
    assert [1, 2] == acks
    assert [1, 2] == [e.index for e in disk.recover().entries]


@pytest.mark.sim
@pytest.mark.slow
def test_same_seed_gives_same_digest_when_run_twice() -> None:
    """A seed replays exactly: two runs give the same trace digest (FDB's unseed check)."""
    first, second = run_seed(11, 3), run_seed(11, 3)
    assert first.digest == second.digest
    assert first.ops == second.ops
    assert run_seed(12, 3).digest != first.digest


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_same_seed_gives_same_digest_when_hash_seed_differs() -> None:
    """Replays across processes agree even with different PYTHONHASHSEED values."""
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-m", "concord.sim", "--seed", "21", "--nodes", "5"],
            env=env, capture_output=True, text=True, timeout=100, check=False,
        )
        digests.add(out.stdout.split("digest=")[1].split()[0])
    assert 1 == len(digests)


@pytest.mark.sim
@pytest.mark.slow
def test_run_passes_when_cluster_has_no_faults() -> None:
    """Without faults, every check passes and clients complete many operations."""
    result = Simulation(SimConfig(seed=5, nodes=3, buggify=False, faults=False)).run()
    assert [] == result.violations
    assert 100 < result.ops


@pytest.mark.sim
@pytest.mark.slow
def test_register_machine_runs_when_chosen_instead_of_kv() -> None:
    """The simulator runs the minimal register machine too (same Protocol)."""
    result = Simulation(SimConfig(seed=6, nodes=3), adapter=RegisterAdapter()).run()
    assert [] == result.violations


@pytest.mark.sim
@pytest.mark.slow
def test_cli_prints_seed_line_when_replaying_one_seed(capsys: pytest.CaptureFixture[str]) -> None:
    """`--seed S` prints `seed=S nodes=N buggify=on ... ok` and exits 0 on a good seed."""
    from concord.sim.__main__ import main

    assert 0 == main(["--seed", "3", "--nodes", "3"])
    out = capsys.readouterr().out
    assert "seed=3 nodes=3 buggify=on" in out and out.rstrip().endswith("ok")


@pytest.mark.sim
@pytest.mark.slow
def test_cli_summarizes_when_running_many_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    """`--seeds N` runs N seeds and prints a summary line with the failure count."""
    from concord.sim.__main__ import main

    assert 0 == main(["--seeds", "2", "--start-seed", "40", "--nodes", "3", "--workers", "1"])
    assert "seeds=2 nodes=3 buggify=on failures=0" in capsys.readouterr().out


@pytest.mark.sim
@pytest.mark.slow
def test_joint_replace_program_catches_commit_by_incoming_majority_when_planted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The joint-replacement program splits at the joint entry; a core that commits by
    the incoming majority alone then fails the commit-quorum check (seed 3, 3 nodes; seed 1
    no longer split once the lease probe rode on the tick's heartbeat)."""
    import concord.raft.tracker as tracker
    from concord.raft.quorum import majority_committed_index

    config = SimConfig(seed=3, nodes=3, trace=True, program="joint-replace")
    clean = Simulation(config).run()
    assert [] == clean.violations
    assert any("joint-replace split" in line for line in clean.trace_lines)
    monkeypatch.setattr(
        tracker, "joint_committed_index",
        lambda incoming, outgoing, acked: majority_committed_index(incoming, acked),
    )
    planted = Simulation(config).run()
    assert ["commit_quorum"] == [v.check for v in planted.violations]


@pytest.mark.sim
@pytest.mark.slow
def test_divergent_snapshot_program_catches_a_kept_suffix_when_planted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The divergent-snapshot program installs a snapshot over a conflicting log; keeping
    the entries after the snapshot index fails the stored-log check (seed 8, 3 nodes; on
    seed 3 the plant stopped firing once the lease probe rode on the tick's heartbeat)."""
    from concord.raft.messages import Entry, Snapshot
    from concord.raft.storage import MemoryStorage

    config = SimConfig(seed=8, nodes=3, trace=True, program="divergent-snapshot")
    clean = Simulation(config).run()
    assert [] == clean.violations
    assert any("divergent-snapshot" in line and "rejoins" in line for line in clean.trace_lines)

    def keep_suffix(self: MemoryStorage, snapshot: Snapshot) -> None:
        kept = [e for e in self._ents if e.index > snapshot.meta.index]
        self._snapshot = snapshot
        self._ents = [Entry(term=snapshot.meta.term, index=snapshot.meta.index), *kept]

    monkeypatch.setattr(MemoryStorage, "apply_snapshot", keep_suffix)
    planted = Simulation(config).run()
    assert ["stored_log"] == [v.check for v in planted.violations]


@pytest.mark.sim
@pytest.mark.slow
def test_vote_durability_check_fires_when_votes_leave_before_persist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vote answered before its hard state is durable fails the vote-durability check."""
    import concord.raft.replication as core
    from concord.raft.messages import MessageType as MT

    monkeypatch.setattr(core, "_AFTER_PERSIST_TYPES", frozenset({MT.APPEND_RESP}))
    planted = Simulation(SimConfig(seed=1000, nodes=3)).run()
    assert ["vote_durable"] == [v.check for v in planted.violations]


@pytest.mark.sim
@pytest.mark.slow
def test_vote_crash_program_catches_votes_answered_before_persist_when_planted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    The vote-crash program crashes a voter between its vote and the vote's fsync, then
    lets it campaign in the same term: with votes answered before persist (the plant
    `vote_before_persist`), two leaders of one term follow, caught by election safety
    even with the vote-durability invariant switched off (seed 8, 3 nodes; seed 1 reached
    leader completeness first once followers stopped getting commit-only appends, seed 5
    once the lease probe rode on the tick's heartbeat).
    """
    import concord.raft.replication as core
    from concord.raft.messages import MessageType as MT
    from concord.sim.checks import SafetyChecker

    config = SimConfig(seed=8, nodes=3, trace=True, program="vote-crash")
    clean = Simulation(config).run()
    assert [] == clean.violations
    assert any("vote-crash crash" in line for line in clean.trace_lines)
    monkeypatch.setattr(core, "_AFTER_PERSIST_TYPES", frozenset({MT.APPEND_RESP, MT.PRE_VOTE_RESP}))
    planted = Simulation(config).run()
    assert ["vote_durable"] == [v.check for v in planted.violations]
    monkeypatch.setattr(SafetyChecker, "check_vote_durable", lambda self, *args: None)
    outcome = Simulation(config).run()
    assert ["election_safety"] == [v.check for v in outcome.violations]
    assert any("before its term-" in line and "is durable" in line for line in outcome.trace_lines)


def plant_read_index_minority(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The plant `read_index_minority` in-process: a ReadIndex round is released once the
    heartbeat answers reach half the voters (`len(acks) >= len(voters) // 2`), any node
    counting; every other use of the quorum rule is unchanged.
    """
    import concord.raft.readonly as readonly
    import concord.raft.tracker as tracker
    from concord.raft.quorum import VoteResult

    class ReadAcks(dict[NodeId, bool]):
        pass

    recv_ack = readonly.ReadOnly.recv_ack
    vote_result = tracker.ProgressTracker.vote_result

    def planted_recv_ack(self: readonly.ReadOnly, node_id: NodeId, ctx: bytes) -> dict[NodeId, bool] | None:
        acks = recv_ack(self, node_id, ctx)
        return None if acks is None else ReadAcks(acks)

    def planted_vote_result(self: tracker.ProgressTracker, votes: dict[NodeId, bool]) -> VoteResult:
        if isinstance(votes, ReadAcks):
            won = len(votes) >= len(self.config.voters) // 2
            return VoteResult.WON if won else VoteResult.PENDING
        return vote_result(self, votes)

    monkeypatch.setattr(readonly.ReadOnly, "recv_ack", planted_recv_ack)
    monkeypatch.setattr(tracker.ProgressTracker, "vote_result", planted_vote_result)


@pytest.mark.sim
@pytest.mark.slow
def test_minority_reads_program_catches_a_read_round_without_quorum_when_planted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    The minority-reads program leaves the leader with a learner and no other voter of
    three, and reads at it: a core that releases a read round at half the voters' answers
    (the plant `read_index_minority`; with three voters only a learner's answer gets it
    there) fails the read-quorum check once the program's learner is in place (seed 3,
    3 nodes; seed 1 no longer split once the lease probe rode on the tick's heartbeat).
    """
    config = SimConfig(seed=3, nodes=3, trace=True, program="minority-reads", leases=False)
    clean = Simulation(config).run()
    assert [] == clean.violations
    split = [line for line in clean.trace_lines if "minority-reads" in line and "keeps only" in line]
    assert split
    plant_read_index_minority(monkeypatch)
    planted = Simulation(config).run()
    assert ["read_quorum"] == [v.check for v in planted.violations]
    learner = next(line for line in clean.trace_lines if "minority-reads leader=" in line)
    started_at = int(learner.split()[0])
    learner_id = learner.split("learner=")[1].split()[0]
    violation = planted.violations[0]
    # NB: caught once the program's learner answers heartbeats (the learner is its doing),
    # in the split or just before it (the lease probes of the node core's rounds).
    assert violation.time_ms >= started_at and learner_id in violation.detail, (learner, violation)
