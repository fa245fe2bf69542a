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
    assert () == tuple(second.messages)  # it waits for the round in flight (readonly.py)
    net.queue.clear()
    for m in first.messages:
        net.deliver(m)
    for name in (B, C):
        for m in net.nodes[name].ready().messages:
            net.deliver(m)
    assert [ReadState(1, b"first")] == list(net.process_ready(A).read_states)
    net.stabilize()
    assert [ReadState(1, b"first"), ReadState(1, b"second")] == net.read_states[A]


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


def _heartbeat_rounds(net: Network, name: NodeId) -> set[bytes]:
    """The contexts of the ReadIndex rounds `name` sent (heartbeats with a context)."""
    return {m.context for rd in net.readys[name] for m in rd.messages
            if m.type == MessageType.HEARTBEAT and m.context}


def test_reads_arriving_while_a_round_is_in_flight_share_the_next_round() -> None:
    """
    One round in flight at a time: the leader's own reads and the followers' forwarded
    ones arriving during a round's round trip take ONE next round, not one each, and
    none of them is answered by the round that was in flight when it arrived.
    """
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"x")
    leader = net.nodes[A]
    leader.read_index(b"first")
    first = net.process_ready(A)  # round 1 leaves
    net.queue.clear()
    leader.read_index(b"own")
    net.process_ready(A)
    for follower, ctx in ((B, b"from-b"), (C, b"from-c")):
        net.nodes[follower].read_index(ctx)
        net.process_ready(follower)
        while net.queue:
            net.deliver(net.queue.popleft())  # READ_INDEX reaches the leader in round 1
        net.process_ready(A)
    assert 1 == len(_heartbeat_rounds(net, A))
    for m in first.messages:
        net.deliver(m)
    for name in (B, C):
        net.process_ready(name)
    while net.queue:
        net.deliver(net.queue.popleft())  # round 1 acknowledged
    rd = net.process_ready(A)
    assert [ReadState(2, b"first")] == list(rd.read_states)
    assert 2 == len(_heartbeat_rounds(net, A))  # the next round left with that Ready
    net.stabilize()
    assert 2 == len(_heartbeat_rounds(net, A))
    assert [ReadState(2, b"first"), ReadState(2, b"own")] == net.read_states[A]
    assert [ReadState(2, b"from-b")] == net.read_states[B]
    assert [ReadState(2, b"from-c")] == net.read_states[C]


def test_reads_waiting_behind_a_lost_round_go_out_with_the_next_heartbeat() -> None:
    """A round whose heartbeats were lost holds later reads only until the next BEAT."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes[A]
    leader.read_index(b"lost")
    net.process_ready(A)
    net.queue.clear()  # round 1's heartbeats are lost
    leader.read_index(b"later")
    net.stabilize()
    assert [] == net.read_states[A]
    net.heartbeat()
    assert [ReadState(1, b"lost"), ReadState(1, b"later")] == net.read_states[A]
