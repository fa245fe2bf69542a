"""SnapshotMembership: the membership the writer's snapshots carry (issue 12 #1)."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft.messages import ConfState, SnapshotMeta
from concord.storage.membership import SnapshotMembership

OLD = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
NEW = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")), learners=(NodeId("n4"),))


def test_membership_is_unknown_when_no_report_carried_one() -> None:
    """Reports without a conf_state say "unchanged": nothing is known before the first."""
    m = SnapshotMembership(SnapshotMeta(10, 1, OLD), commit=20)
    m.committed(20, None)
    m.committed(25, None)
    assert (None, 25) == (m.at(25), m.commit)


def test_membership_reported_below_the_commit_holds_at_later_reports_when_unchanged() -> None:
    """A restarted worker reports its membership before replaying up to the commit."""
    m = SnapshotMembership(None, commit=100)
    m.committed(0, OLD)
    assert None is m.at(0)  # below the commit: the replica is not there
    m.committed(60, NEW)
    m.committed(100, None)
    assert (NEW, None) == (m.at(100), m.at(60))
    m.committed(130, None)
    assert NEW == m.at(130)


def test_membership_of_an_installed_snapshot_holds_when_the_leader_sent_one() -> None:
    """A snapshot from the leader replaces log and membership."""
    m = SnapshotMembership(SnapshotMeta(10, 1, OLD), commit=10)
    m.installed(SnapshotMeta(50, 2, NEW))
    assert (NEW, 50) == (m.at(50), m.commit)
    m.committed(55, None)
    assert NEW == m.at(55)
