"""The Raft safety checker on hand-made observations."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft.messages import Entry
from concord.raft.storage import MemoryStorage
from concord.sim.checks import SafetyChecker

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


def log_with(*terms: int) -> MemoryStorage:
    storage = MemoryStorage()
    storage.append([Entry(term, i + 1) for i, term in enumerate(terms)])
    return storage


def test_two_leaders_in_one_term_are_reported_when_observed() -> None:
    """Election safety: one leader per term."""
    checker = SafetyChecker()
    checker.on_leader(N1, 3)
    checker.on_leader(N1, 3)
    assert [] == checker.violations
    checker.on_leader(N2, 3)
    assert ["election_safety"] == [v.check for v in checker.violations]


def test_log_matching_is_reported_when_same_index_and_term_differ() -> None:
    """Two entries with one (index, term) must have the same data and predecessor term."""
    checker = SafetyChecker()
    checker.on_append(N1, 1, [Entry(2, 2, data=b"a")])
    checker.on_append(N2, 1, [Entry(2, 2, data=b"a")])
    assert [] == checker.violations
    checker.on_append(N3, 1, [Entry(2, 2, data=b"b")])
    checker.on_append(N3, 2, [Entry(2, 2, data=b"a")])
    assert ["log_matching", "log_matching"] == [v.check for v in checker.violations]


def test_state_machine_safety_is_reported_when_nodes_apply_different_entries() -> None:
    """Every node applies the same entry at each index."""
    checker = SafetyChecker()
    checker.on_apply(N1, Entry(1, 1, data=b"x"), 1)
    checker.on_apply(N2, Entry(1, 1, data=b"x"), 1)
    checker.on_apply(N3, Entry(2, 1, data=b"y"), 2)
    assert ["state_machine_safety"] == [v.check for v in checker.violations]


def test_leader_completeness_is_reported_when_higher_term_leader_lacks_entry() -> None:
    """A leader of a term above the committing term must hold the committed entry."""
    checker = SafetyChecker()
    checker.on_apply(N1, Entry(2, 1), 2)
    checker.on_leader(N2, 4)
    checker.check_leader_logs({N2: log_with(1, 4)})
    assert ["leader_completeness"] == [v.check for v in checker.violations]


def test_leader_completeness_holds_when_stale_term_leader_is_elected_later() -> None:
    """A term-8 leader elected after term 9 committed an entry need not hold it (§5.4)."""
    checker = SafetyChecker()
    checker.on_apply(N1, Entry(2, 2), 9)
    checker.on_leader(N3, 8)
    checker.check_leader_logs({N3: log_with(2, 8)})
    assert [] == checker.violations


def test_quorum_needs_every_half_when_configuration_is_joint() -> None:
    """Thesis §4.3: a joint configuration's quorum is a majority of both halves."""
    from concord.sim.checks import has_quorum

    n4 = NodeId("n4")
    joint = (frozenset({N1, N2, n4}), frozenset({N1, N2, N3}))
    assert has_quorum([joint], {N1, N2})
    assert not has_quorum([joint], {N1, n4})  # the incoming majority alone
    assert has_quorum([joint, (frozenset({N1, N2, n4}), frozenset())], {N1, n4})


def test_read_round_is_reported_when_acknowledged_by_a_minority() -> None:
    """A released read round needs a voter majority (a learner's answer does not count)."""
    checker = SafetyChecker()
    config = (frozenset({N1, N2, N3}), frozenset[NodeId]())
    checker.check_read_quorum(N1, 2, {N1, N2}, [config])
    assert [] == checker.violations
    checker.check_read_quorum(N1, 2, {N1, NodeId("n4")}, [config])
    assert ["read_quorum"] == [v.check for v in checker.violations]


def test_commit_is_reported_when_not_durable_on_a_majority() -> None:
    """An entry counted committed must be on the disks of a majority of every half."""
    checker = SafetyChecker()
    joint = (frozenset({N1, N2, NodeId("n4")}), frozenset({N1, N2, N3}))
    checker.check_commit_quorum(N1, 2, 7, {N1, N2}, [joint])
    assert [] == checker.violations
    checker.check_commit_quorum(N1, 2, 8, {N1, NodeId("n4")}, [joint])
    assert ["commit_quorum"] == [v.check for v in checker.violations]


def test_vote_is_reported_when_sent_before_it_is_durable() -> None:
    """A granted vote leaves only once the disk holds it (or a later term)."""
    checker = SafetyChecker()
    checker.check_vote_durable(N1, N2, 3, 3, N2)
    checker.check_vote_durable(N1, N2, 3, 4, None)
    assert [] == checker.violations
    checker.check_vote_durable(N1, N2, 3, 2, N3)
    assert ["vote_durable"] == [v.check for v in checker.violations]


def test_stored_entries_are_reported_when_a_snapshot_kept_a_conflicting_suffix() -> None:
    """Entries kept after a snapshot must follow the snapshot's term as they did when appended."""
    from concord.raft.messages import ConfState, Snapshot, SnapshotMeta

    checker = SafetyChecker()
    stale = MemoryStorage()
    checker.on_append(N2, 0, [Entry(1, 1), Entry(2, 2), Entry(2, 3)])
    stale.append([Entry(1, 1), Entry(2, 2), Entry(2, 3)])
    checker.check_stored(N2, stale, 1)
    assert [] == checker.violations
    snap = Snapshot(SnapshotMeta(2, 3, ConfState(voters=(N1, N2, N3))), b"")
    # What a snapshot install that keeps the suffix would leave: (2, 3) after (2, 3)...
    kept = MemoryStorage()
    kept.apply_snapshot(snap)
    kept.append([Entry(2, 3)])
    checker.check_stored(N2, kept, 2)
    assert ["stored_log"] == [v.check for v in checker.violations]
