"""RawNode's Ready contract: numbering, durability before acknowledgement, must_sync."""

from __future__ import annotations

import random

import pytest

from concord.errors import ProposalDroppedError, RaftInvariantError
from concord.ids import NodeId
from concord.raft import ConfState, MemoryStorage, MessageType, RaftConfig, RawNode, Role
from concord.raft.messages import Entry, Message
from concord.raft.progress import ProgressState
from concord.raft.state import HardState, SoftState
from tests.raft.network import Network

N1 = NodeId("n1")
N2 = NodeId("n2")
N3 = NodeId("n3")


def single_node() -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage(ConfState(voters=(N1,)))
    return RawNode(RaftConfig(id=N1), storage, random.Random(1)), storage


def persist(node: RawNode, storage: MemoryStorage) -> None:
    rd = node.ready()
    if rd.entries:
        storage.append(rd.entries)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)
    node.on_persisted(rd.number)
    if rd.committed_entries:
        node.on_applied(rd.committed_entries[-1].index)


def test_single_node_becomes_leader_when_votes_are_persisted() -> None:
    """Raft §5.2: a lone voter wins once its own (pre-)votes are durable."""
    node, storage = single_node()
    node.campaign()
    rd = node.ready()
    assert 1 == rd.number
    assert SoftState(None, Role.PRE_CANDIDATE) == rd.soft_state
    assert () == rd.messages_after_persist  # the self-vote never leaves the node
    node.on_persisted(rd.number)
    rd = node.ready()
    assert HardState(1, N1, 0) == rd.hard_state
    assert rd.must_sync
    node.on_persisted(rd.number)
    assert Role.LEADER == node.raft.role
    rd = node.ready()
    assert SoftState(N1, Role.LEADER) == rd.soft_state
    assert [Entry(1, 1)] == list(rd.entries)  # Raft §8: the no-op of the new term
    assert () == rd.committed_entries  # the leader's own entry is not durable yet
    storage.append(rd.entries)
    node.on_persisted(rd.number)
    rd = node.ready()
    assert [Entry(1, 1)] == list(rd.committed_entries)
    assert HardState(1, N1, 1) == rd.hard_state


def test_leader_counts_itself_only_when_its_entries_are_persisted() -> None:
    """A proposal commits in a one-node cluster only after on_persisted of its Ready."""
    node, storage = single_node()
    node.campaign()
    for _ in range(4):
        persist(node, storage)
    index, term = node.propose(b"x")
    assert (2, 1) == (index, term)
    rd = node.ready()
    assert [2] == [e.index for e in rd.entries]
    assert 1 == node.raft.log.committed
    storage.append(rd.entries)
    node.on_persisted(rd.number)
    assert 2 == node.raft.log.committed


def test_ready_hands_out_entries_once_when_not_yet_persisted() -> None:
    """Entries handed out in one Ready are not repeated in the next (in progress)."""
    node, storage = single_node()
    node.campaign()
    for _ in range(4):
        persist(node, storage)
    node.propose(b"a")
    first = node.ready()
    node.propose(b"b")
    second = node.ready()
    assert [2] == [e.index for e in first.entries]
    assert [3] == [e.index for e in second.entries]
    assert second.number == first.number + 1


def test_propose_raises_when_not_leader() -> None:
    """Proposals on a follower are dropped with ProposalDroppedError."""
    node, _ = single_node()
    with pytest.raises(ProposalDroppedError):
        node.propose(b"x")


def test_on_persisted_raises_when_number_was_never_handed_out() -> None:
    """Acknowledging a Ready that does not exist is a caller bug."""
    node, _ = single_node()
    with pytest.raises(RaftInvariantError):
        node.on_persisted(5)


def test_step_raises_when_message_is_local() -> None:
    """Local message types never come from the network."""
    node, _ = single_node()
    with pytest.raises(ValueError):
        node.step(Message(MessageType.HUP, N1, N2, 1))


def test_vote_response_waits_for_persist_when_granting_a_vote() -> None:
    """Raft §5.2 / Figure 2: a vote is durable before the candidate hears of it."""
    storage = MemoryStorage(ConfState(voters=(N1, N2, N3)))
    node = RawNode(RaftConfig(id=N2, pre_vote=False), storage, random.Random(1))
    node.step(Message(MessageType.VOTE, N2, N1, term=1, index=0, log_term=0))
    rd = node.ready()
    assert () == rd.messages
    assert [MessageType.VOTE_RESP] == [m.type for m in rd.messages_after_persist]
    assert not rd.messages_after_persist[0].reject
    assert HardState(1, N1, 0) == rd.hard_state
    assert rd.must_sync


def test_must_sync_is_false_when_only_commit_changed() -> None:
    """Commit index changes alone need no fsync (it can be recomputed)."""
    storage = MemoryStorage(ConfState(voters=(N1, N2, N3)))
    node = RawNode(RaftConfig(id=N2), storage, random.Random(1))
    node.step(
        Message(MessageType.APPEND, N2, N1, 1, 0, 0, entries=(Entry(1, 1),), commit=0)
    )
    rd = node.ready()
    assert rd.must_sync
    storage.append(rd.entries)
    storage.set_hard_state(rd.hard_state or HardState())
    node.on_persisted(rd.number)
    node.step(Message(MessageType.HEARTBEAT, N2, N1, 1, commit=1))
    rd = node.ready()
    assert HardState(1, None, 1) == rd.hard_state
    assert not rd.must_sync
    assert [MessageType.HEARTBEAT_RESP] == [m.type for m in rd.messages]
    assert [Entry(1, 1)] == list(rd.committed_entries)


def test_replication_falls_back_to_probe_when_peer_is_reported_unreachable() -> None:
    """report_unreachable stops pipelining to the peer until it answers again."""
    net = Network(["n1", "n2", "n3"])
    net.elect("n1")
    leader = net.nodes[N1]
    assert ProgressState.REPLICATE == leader.status().progress[N2].state
    leader.report_unreachable(N2)
    assert ProgressState.PROBE == leader.status().progress[N2].state
    net.propose("n1", b"x")
    net.tick_all(1)
    assert ProgressState.REPLICATE == leader.status().progress[N2].state
    assert [b"x"] == net.applied[N2]


def test_status_reports_progress_when_leader() -> None:
    """Status carries hard and soft state, applied, membership and each peer's progress."""
    net = Network(["n1", "n2", "n3"])
    net.elect("n1")
    status = net.nodes[N1].status()
    assert (HardState(1, N1, 1), SoftState(N1, Role.LEADER)) == (
        status.hard_state,
        status.soft_state,
    )
    assert (1, (N1, N2, N3)) == (status.applied, status.conf_state.voters)
    assert [1, 1, 1] == [status.progress[n].match for n in (N1, N2, N3)]
    assert {} == net.nodes[N2].status().progress


def test_proposals_get_consecutive_indexes_in_one_ready_when_proposed_together() -> None:
    """propose_many appends one entry per command, in order, like as many proposes; a
    refused batch appends nothing, and an empty one is an error."""
    node, storage = single_node()
    node.campaign()
    while node.has_ready():
        persist(node, storage)
    last = storage.last_index()
    assert (last + 1, 1) == node.propose_many([b"a", b"b", b"c"])
    rd = node.ready()
    assert [(last + 1, b"a"), (last + 2, b"b"), (last + 3, b"c")] == [
        (e.index, e.data) for e in rd.entries]
    with pytest.raises(ValueError):
        node.propose_many([])
    node.raft.become_follower(2, None)
    with pytest.raises(ProposalDroppedError):
        node.propose_many([b"d"])
    assert last + 3 == node.raft.log.last_index()
