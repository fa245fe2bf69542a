"""Log replication: Raft §5.3, batching, pipelining, probing and fast backtracking."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft import MessageType
from concord.raft.progress import ProgressState
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def test_entries_are_applied_everywhere_when_leader_proposes() -> None:
    """Raft §5.3: proposals reach every log and are applied in order."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    for i in range(20):
        net.propose("a", b"v%d" % i)
    expected = [b"v%d" % i for i in range(20)]
    assert [expected] * 3 == [net.applied[n] for n in (A, B, C)]
    assert [21, 21, 21] == [net.committed(n) for n in "abc"]


def test_proposals_share_appends_when_made_between_readys() -> None:
    """Proposals before one Ready go out in one APPEND per follower (batching)."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    node = net.nodes[A]
    for i in range(50):
        node.propose(b"x%d" % i)
    rd = node.ready()
    appends = [m for m in rd.messages if m.type == MessageType.APPEND]
    assert [B, C] == sorted(m.to for m in appends)
    assert [50, 50] == [len(m.entries) for m in appends]


def test_appends_are_split_when_entries_exceed_max_size_per_msg() -> None:
    """max_size_per_msg bounds each APPEND (16 bytes overhead + data per entry)."""
    net = Network(["a", "b", "c"], max_size_per_msg=100)
    net.elect("a")
    node = net.nodes[A]
    for i in range(10):
        node.propose(b"0123456789" + bytes([i]))
    net.stabilize()
    net.heartbeat()
    appends = [m for m in net.delivered if m.type == MessageType.APPEND and m.to == B]
    assert all(len(m.entries) <= 3 for m in appends)
    assert [b"0123456789" + bytes([i]) for i in range(10)] == net.applied[B]


def test_inflight_appends_are_bounded_when_follower_does_not_answer() -> None:
    """Pipelining stops at max_inflight_msgs unacknowledged APPENDs per follower."""
    net = Network(["a", "b", "c"], max_inflight_msgs=3, max_size_per_msg=1)
    net.elect("a")
    node = net.nodes[A]
    for i in range(10):
        node.propose(b"x%d" % i)
    rd = node.ready()
    to_b = [m for m in rd.messages if m.type == MessageType.APPEND and m.to == B]
    assert 3 == len(to_b)
    assert [1, 1, 1] == [len(m.entries) for m in to_b]
    assert ProgressState.REPLICATE == node.raft.tracker.progress[B].state


def test_probe_finds_the_match_in_few_round_trips_when_follower_log_diverges() -> None:
    """Raft §5.3 optimization: the reject hint skips a whole conflicting term at once."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    for i in range(30):
        net.nodes[A].propose(b"stale%d" % i)
    net.stabilize()
    net.tick_all(40)  # a steps down (check-quorum); b or c is elected
    new = net.leader()
    assert A != new
    for i in range(5):
        net.propose(new, b"new%d" % i)
    net.heal()
    net.delivered.clear()
    net.tick_all(3)
    rejects = [
        m for m in net.delivered if m.type == MessageType.APPEND_RESP and m.reject and m.frm == A
    ]
    assert len(rejects) <= 2
    assert net.log_entries(new) == net.log_entries("a")
    assert [b"new%d" % i for i in range(5)] == net.applied[A]
