"""membership_from_log: the membership of a snapshot written without one (issue 12 #1)."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft.messages import ConfChange, ConfState, Entry, EntryType, SnapshotMeta
from concord.storage.membership import membership_from_log

OLD = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
NEW = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")), learners=(NodeId("n4"),))


def _log(last: int, changes: dict[int, ConfChange], term: int = 1) -> list[Entry]:
    return [
        Entry(term, i, EntryType.CONF_CHANGE, changes[i].encode()) if i in changes
        else Entry(term, i, EntryType.NORMAL, b"x")
        for i in range(1, last + 1)
    ]


def test_membership_from_log_folds_the_changes_up_to_the_snapshot_when_the_log_starts_at_one() -> None:
    """Bootstrap, then the changes at or below the snapshot index (not those after it)."""
    log = _log(30, {5: ConfChange.add_learner(NodeId("n4")), 20: ConfChange.remove(NodeId("n1"))})
    assert NEW == membership_from_log(OLD, log, SnapshotMeta(10, 1, ConfState()))
    assert ConfState(voters=(NodeId("n2"), NodeId("n3")), learners=(NodeId("n4"),)) == (
        membership_from_log(OLD, log, SnapshotMeta(25, 1, ConfState())))


def test_membership_from_log_is_none_when_the_log_cannot_determine_it() -> None:
    """A log compacted below the snapshot, short of it, or of another term gives None."""
    log = _log(30, {})
    assert None is membership_from_log(OLD, log[5:], SnapshotMeta(10, 1, ConfState()))
    assert None is membership_from_log(OLD, log, SnapshotMeta(31, 1, ConfState()))
    assert None is membership_from_log(OLD, log, SnapshotMeta(10, 2, ConfState()))
    assert OLD == membership_from_log(OLD, log, SnapshotMeta(10, 1, ConfState()))
