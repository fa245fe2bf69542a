"""How followers learn the commit index: never by an APPEND of its own."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft import Message, MessageType, ReadState
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def _held_ack(net: Network, held: list[Message], frm: NodeId, index: int) -> None:
    """From now on, hold back `frm`'s append acknowledgement of `index` (once)."""

    def drop(m: Message) -> bool:
        if not held and m.type == MessageType.APPEND_RESP and m.frm == frm and m.index == index:
            held.append(m)
            return True
        return False

    net.drop = drop


def test_commit_rides_on_next_heartbeat_when_no_entries_follow() -> None:
    """A commit index gets no APPEND of its own; the next heartbeat carries it."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.delivered.clear()
    index, _ = net.nodes[A].propose(b"x")
    net.stabilize()
    appends = [m for m in net.delivered if m.type == MessageType.APPEND and m.to == B]
    assert [1] == [len(m.entries) for m in appends]
    assert (index, index - 1) == (net.committed("a"), net.committed("b"))
    net.heartbeat()
    assert index == net.committed("b")
    assert [b"x"] == net.applied[B]


def test_commit_rides_on_next_append_when_entries_follow() -> None:
    """The next proposal's APPEND tells the follower the previous entry's commit."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    first, _ = net.nodes[A].propose(b"x")
    net.stabilize()
    net.delivered.clear()
    net.nodes[A].propose(b"y")
    net.stabilize()
    appends = [m for m in net.delivered if m.type == MessageType.APPEND and m.to == B]
    assert [(1, first)] == [(len(m.entries), m.commit) for m in appends]
    assert [b"x"] == net.applied[B]


def test_prompt_commit_entry_gets_an_append_at_once() -> None:
    """An entry proposed with prompt_commit (an auth change) is announced committed by an
    APPEND of its own: followers apply it without waiting for a heartbeat."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    index, _ = net.nodes[A].propose(b"revoke", prompt_commit=True)
    net.stabilize()
    assert (index, index) == (net.committed("a"), net.committed("b"))
    assert [b"revoke"] == net.applied[B]


def test_follower_read_learns_commit_from_answer_when_its_ack_came_late() -> None:
    """Thesis §6.4 on a follower: its acknowledgement reached the leader after the
    round's heartbeat left; the READ_INDEX_RESP carries the commit, no heartbeat wait."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    held: list[Message] = []
    _held_ack(net, held, B, 2)
    index, _ = net.nodes[A].propose(b"x")
    net.stabilize()
    assert (2, 1, 1) == (index, net.committed("b"), len(held))
    net.nodes[B].read_index(b"r")
    net.process_ready(B)  # READ_INDEX to the leader
    net.deliver(net.queue.popleft())
    net.process_ready(A)  # the round's heartbeats: commit 1 for b (its match)
    net.deliver(held[0])  # b's acknowledgement arrives now
    net.stabilize()
    assert [ReadState(2, b"r")] == net.read_states[B]
    assert 2 == net.committed("b")


def test_follower_read_is_told_commit_when_its_match_reaches_read_index() -> None:
    """The leader answered a follower's ReadIndex before it knew the follower holds the
    read index (the acknowledgement was lost; the round's heartbeat response makes the
    leader probe again): a heartbeat tells it the commit once its match gets there."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    held: list[Message] = []
    _held_ack(net, held, B, 2)
    net.nodes[A].propose(b"x")
    net.stabilize()
    assert (1, 1) == (net.committed("b"), len(held))
    net.nodes[B].read_index(b"r")
    net.stabilize()
    assert [ReadState(2, b"r")] == net.read_states[B]
    assert 2 == net.committed("b")
