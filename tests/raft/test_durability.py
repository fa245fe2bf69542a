"""Durability before acknowledgement (docs/architecture.md "Invariants"; Raft §5 Figure 2 "respond after
persisting"): messages_after_persist, must_sync, the leader's own persistence."""

from __future__ import annotations

import random

import pytest

from concord.errors import RaftInvariantError
from concord.ids import NodeId
from concord.raft import ConfState, Entry, MemoryStorage, MessageType, RaftConfig, RawNode
from concord.raft.messages import Message
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def follower() -> RawNode:
    storage = MemoryStorage(ConfState(voters=(A, B, C)))
    return RawNode(RaftConfig(id=B), storage, random.Random(1))


def append(index: int, *terms: int, commit: int = 0) -> Message:
    entries = tuple(Entry(t, index + 1 + i) for i, t in enumerate(terms))
    prev_term = 0 if index == 0 else 1
    return Message(
        MessageType.APPEND, B, A, 1, log_term=prev_term, index=index, entries=entries, commit=commit
    )


def test_append_response_waits_for_persist_when_entries_arrive() -> None:
    """A follower acknowledges entries only after they are durable."""
    node = follower()
    node.step(append(0, 1, 1))
    rd = node.ready()
    assert () == rd.messages
    assert [(MessageType.APPEND_RESP, 2)] == [(m.type, m.index) for m in rd.messages_after_persist]
    assert rd.must_sync


def test_responses_belong_to_their_ready_when_more_entries_arrive_before_persist() -> None:
    """Each Ready carries only the responses for what it persists."""
    node = follower()
    node.step(append(0, 1))
    first = node.ready()
    node.step(append(1, 1))
    second = node.ready()
    assert [1] == [m.index for m in first.messages_after_persist]
    assert [2] == [m.index for m in second.messages_after_persist]
    assert [2] == [e.index for e in second.entries]


def test_entries_are_not_applied_when_not_yet_persisted() -> None:
    """Committed entries are handed out only once they are durable locally."""
    node = follower()
    node.step(append(0, 1, 1, commit=2))
    rd = node.ready()
    assert () == rd.committed_entries
    node.on_persisted(rd.number)  # NB: test storage left empty on purpose: nothing read
    assert node.has_ready()


def test_leader_commits_only_when_its_own_entries_are_persisted() -> None:
    """With one follower reachable, the leader's own durable copy is the deciding vote."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    leader = net.nodes[A]
    index, _ = leader.propose(b"x")
    rd = leader.ready()
    for m in rd.messages:
        net.deliver(m)
    for m in net.process_ready(B).messages_after_persist:
        net.deliver(m)
    assert index - 1 == leader.raft.log.committed
    net.storages[A].append(rd.entries)
    leader.on_persisted(rd.number)
    assert index == leader.raft.log.committed


def test_invariant_error_is_raised_when_commit_exceeds_the_log() -> None:
    """A heartbeat committing past our last index means lost durable state: fail-stop."""
    node = follower()
    with pytest.raises(RaftInvariantError):
        node.step(Message(MessageType.HEARTBEAT, B, A, 1, commit=10))


def test_invariant_error_is_raised_when_applied_exceeds_committed() -> None:
    """on_applied beyond the commit index is a caller bug."""
    node = follower()
    with pytest.raises(RaftInvariantError):
        node.on_applied(3)


def test_restart_loses_nothing_when_ready_was_persisted() -> None:
    """After a crash the node recovers its term, vote and log from storage."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    before = (net.term("b"), net.log_entries("b"))
    net.restart(B)
    assert before == (net.term("b"), net.log_entries("b"))
    net.stabilize()
    assert [b"x"] == net.applied[B]
