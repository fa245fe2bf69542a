"""Leader transfer (Raft thesis §3.10): TIMEOUT_NOW after catching the target up."""

from __future__ import annotations

import pytest

from concord.errors import ProposalDroppedError
from concord.ids import NodeId
from concord.raft import ConfChange, Entry, EntryType, MessageType, Role
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


def _ready_applied_later(net: Network, name: NodeId, later: list[Entry]) -> None:
    """One Ready of `name` persisted and sent; its committed entries are kept in `later`
    instead of applied (a node whose apply lags its log)."""
    node = net.nodes[name]
    rd = node.ready()
    net.queue.extend(rd.messages)
    if rd.entries:
        net.storages[name].append(rd.entries)
    if rd.hard_state is not None:
        net.storages[name].set_hard_state(rd.hard_state)
    node.on_persisted(rd.number)
    net.queue.extend(rd.messages_after_persist)
    later.extend(rd.committed_entries)


def _run_with_late_apply(net: Network, name: NodeId, later: list[Entry]) -> None:
    for _ in range(1000):
        busy = False
        for other in net.names:
            if net.nodes[other].has_ready():
                busy = True
                if other == name:
                    _ready_applied_later(net, other, later)
                else:
                    net.process_ready(other)
        while net.queue:
            busy = True
            net.deliver(net.queue.popleft())
        if not busy:
            return
    raise AssertionError("network did not stabilize")


def _promote_c_applied_later(net: Network) -> list[Entry]:
    """c's promotion is committed everywhere; c knows it and has not applied it yet."""
    net.elect("a")
    net.nodes[A].propose_conf_change(ConfChange.add_voter(C))
    later: list[Entry] = []
    _run_with_late_apply(net, C, later)
    assert [EntryType.CONF_CHANGE] == [e.type for e in later if e.data]
    assert C in net.nodes[A].raft.tracker.voter_ids()
    net.nodes[A].transfer_leadership(C)
    _run_with_late_apply(net, C, later)
    assert [C] == [m.to for m in net.delivered if m.type == MessageType.TIMEOUT_NOW]
    assert Role.FOLLOWER == net.role("c")
    return later


def _apply(net: Network, name: NodeId, entries: list[Entry]) -> None:
    node = net.nodes[name]
    for entry in entries:
        if entry.type == EntryType.CONF_CHANGE:
            node.apply_conf_change(ConfChange.decode(entry.data))
    node.on_applied(entries[-1].index)


def test_freshly_promoted_target_campaigns_once_it_applies_its_promotion() -> None:
    """TIMEOUT_NOW reaches a member before it applied its own (committed) promotion: it
    is not yet a voter to itself, so it waits, and campaigns as soon as it applies it."""
    net = Network(["a", "b", "c"], voters=["a", "b"], learners=["c"])
    later = _promote_c_applied_later(net)
    _apply(net, C, later)
    net.stabilize()
    assert (Role.LEADER, Role.FOLLOWER) == (net.role("c"), net.role("a"))


def test_deferred_transfer_is_dropped_when_apply_takes_an_election_timeout() -> None:
    """The deferral lasts one election timeout, like the leader's transfer itself."""
    net = Network(["a", "b", "c"], voters=["a", "b"], learners=["c"], election_ticks=10)
    later = _promote_c_applied_later(net)
    net.tick(C, 10)
    _apply(net, C, later)
    net.stabilize()
    assert (Role.FOLLOWER, Role.LEADER) == (net.role("c"), net.role("a"))


def test_target_is_told_the_commit_before_timeout_now() -> None:
    """The target holds its promotion but never heard it committed (its commit news was
    lost): the leader's TIMEOUT_NOW follows a heartbeat with the commit, so it campaigns
    (after applying the promotion) instead of refusing as a non-voter."""
    net = Network(["a", "b", "c"], voters=["a", "b"], learners=["c"])
    net.elect("a")
    net.drop = lambda m: m.to == C and m.type == MessageType.APPEND and not m.entries
    index, _ = net.nodes[A].propose_conf_change(ConfChange.add_voter(C))
    net.stabilize()
    net.drop = None
    assert (index, index - 1) == (net.committed("a"), net.committed("c"))
    net.nodes[A].transfer_leadership(C)
    net.stabilize()
    assert (Role.LEADER, Role.FOLLOWER) == (net.role("c"), net.role("a"))
