"""Leader transfer (Raft thesis §3.10): TIMEOUT_NOW after catching the target up."""

from __future__ import annotations

import pytest

from concord.errors import ProposalDroppedError
from concord.ids import NodeId
from concord.raft import MessageType, Role
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def test_target_becomes_leader_when_transfer_is_requested() -> None:
    """Thesis §3.10: the target campaigns at once, past pre-vote and stickiness."""
    net = Network(["a", "b", "c"], check_quorum=True, pre_vote=True)
    net.elect("a")
    term = net.term("a")
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    assert (Role.LEADER, term + 1) == (net.role("b"), net.term("b"))
    assert Role.FOLLOWER == net.role("a")
    votes = [m for m in net.delivered if m.type == MessageType.VOTE and m.frm == B]
    assert [b"transfer", b"transfer"] == [m.context for m in votes]
    assert [] == [m for m in net.delivered if m.type == MessageType.PRE_VOTE and m.frm == B]


def test_target_is_caught_up_first_when_it_lags() -> None:
    """Thesis §3.10 step 1: the leader replicates to the target before TIMEOUT_NOW."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    for i in range(5):
        net.propose("a", b"x%d" % i)
    net.heal()
    net.delivered.clear()
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    kinds = [m.type for m in net.delivered if m.to == B and m.frm == A]
    assert MessageType.APPEND in kinds
    assert kinds.index(MessageType.APPEND) < kinds.index(MessageType.TIMEOUT_NOW)
    assert Role.LEADER == net.role("b")
    assert [b"x%d" % i for i in range(5)] == net.applied[B]


def test_proposals_are_dropped_when_transfer_is_in_progress() -> None:
    """Thesis §3.10: the leader stops accepting client requests while transferring."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    with pytest.raises(ProposalDroppedError):
        net.nodes[A].propose(b"x")


def test_transfer_is_aborted_when_it_takes_an_election_timeout() -> None:
    """Thesis §3.10: without success in an election timeout the leader resumes."""
    net = Network(["a", "b", "c"], election_ticks=10)
    net.elect("a")
    net.isolate("b")
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    net.tick(A, 10)
    net.stabilize()
    assert Role.LEADER == net.role("a")
    assert (2, 1) == net.nodes[A].propose(b"resumed")


def test_lead_transferee_is_reported_when_transfer_is_pending_until_aborted() -> None:
    """The driver fences its read lease on this (node/driver.py): set from the start."""
    net = Network(["a", "b", "c"], election_ticks=10)
    net.elect("a")
    net.isolate("b")
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    assert B == net.nodes[A].lead_transferee
    net.tick(A, 10)
    assert net.nodes[A].lead_transferee is None


def test_transfer_is_forwarded_when_requested_on_a_follower() -> None:
    """A follower forwards the request to its leader."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.nodes[C].transfer_leadership(B)
    net.stabilize()
    assert Role.LEADER == net.role("b")


def test_transfer_is_ignored_when_target_is_a_learner() -> None:
    """Only voters can lead."""
    net = Network(["a", "b", "c"], voters=["a", "b"], learners=["c"])
    net.elect("a")
    net.nodes[A].transfer_leadership(C)
    net.stabilize()
    assert (Role.LEADER, None) == (net.role("a"), net.nodes[A].status().lead_transferee)
