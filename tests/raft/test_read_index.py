"""ReadIndex (Raft thesis §6.4), batched: one heartbeat round serves many reads."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft import MessageType, ReadState
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def test_reads_share_one_heartbeat_round_when_requested_together() -> None:
    """Thesis §6.4 batching: reads before a round share it: one heartbeat per follower."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    leader = net.nodes[A]
    for i in range(10):
        leader.read_index(b"r%d" % i)
    rd = net.process_ready(A)
    heartbeats = [m for m in rd.messages if m.type == MessageType.HEARTBEAT]
    assert [B, C] == sorted(m.to for m in heartbeats)
    assert 1 == len({m.context for m in heartbeats})
    assert [] == net.read_states[A]
    net.stabilize()
    assert [ReadState(2, b"r%d" % i) for i in range(10)] == net.read_states[A]


def test_later_reads_need_a_new_round_when_a_round_was_already_sent() -> None:
    """A read arriving after a round's heartbeats left is not served by that round."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes[A]
    leader.read_index(b"first")
    first = net.process_ready(A)
    leader.read_index(b"second")
    second = net.process_ready(A)
    net.queue.clear()
    for m in first.messages:
        net.deliver(m)
    for name in (B, C):
        for m in net.nodes[name].ready().messages:
            net.deliver(m)
    assert [ReadState(1, b"first")] == list(net.nodes[A].ready().read_states)
    for m in second.messages:
        net.deliver(m)
    net.stabilize()
    assert [ReadState(1, b"second")] == net.read_states[A]


def test_read_waits_when_no_entry_of_the_term_is_committed() -> None:
    """Thesis §6.4 step 1: the new leader first commits its no-op."""
    net = Network(["a", "b", "c"], pre_vote=False)
    net.nodes[A].campaign()
    rd = net.process_ready(A)
    for m in rd.messages:
        net.deliver(m)
    for name in (B, C):
        for m in net.process_ready(name).messages_after_persist:
            net.deliver(m)
    net.nodes[A].read_index(b"early")
    rd = net.process_ready(A)
    assert [] == [m for m in rd.messages if m.type == MessageType.HEARTBEAT]
    net.stabilize()
    assert [ReadState(1, b"early")] == net.read_states[A]


def test_follower_read_is_answered_by_leader_when_forwarded() -> None:
    """A follower forwards READ_INDEX; the leader's READ_INDEX_RESP becomes a ReadState."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    net.nodes[B].read_index(b"from-b")
    net.stabilize()
    assert [ReadState(2, b"from-b")] == net.read_states[B]
    kinds = [m.type for m in net.delivered if m.context == b"from-b"]
    assert [MessageType.READ_INDEX, MessageType.READ_INDEX_RESP] == kinds


def test_read_is_not_answered_when_leader_is_partitioned() -> None:
    """A deposed leader cannot confirm leadership, so it serves no stale read."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    net.nodes[A].read_index(b"stale?")
    net.stabilize()
    net.tick(A, 3)
    net.stabilize()
    assert [] == net.read_states[A]


def test_read_is_answered_at_once_when_cluster_has_one_voter() -> None:
    """A single voter needs no heartbeat round."""
    net = Network(["a"])
    net.elect("a")
    net.nodes[A].read_index(b"solo")
    rd = net.process_ready(A)
    assert [ReadState(1, b"solo")] == list(rd.read_states)
