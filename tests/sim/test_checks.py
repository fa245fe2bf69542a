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
