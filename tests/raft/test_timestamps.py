"""Leader-assigned cluster time: entry timestamps never go backwards along the log."""

from __future__ import annotations

from concord.ids import NodeId
from tests.raft.network import Network

A, B, C = NodeId("a"), NodeId("b"), NodeId("c")


def stamps(net: Network, name: str) -> list[int]:
    return [e.timestamp_ms for e in net.log_entries(name)]


def test_entries_are_stamped_with_leader_time_when_appended() -> None:
    """The leader stamps each entry, its no-op included, with max(previous, now_ms)."""
    net = Network(["a", "b", "c"])
    net.nodes[A].set_time(1000)
    net.elect("a")
    net.propose("a", b"x")
    net.nodes[A].set_time(1500)
    net.propose("a", b"y")
    assert [1000, 1000, 1500] == stamps(net, "b")


def test_stamp_does_not_go_backwards_when_leader_clock_does() -> None:
    """A clock step back on the leader keeps the previous stamp."""
    net = Network(["a", "b", "c"])
    net.nodes[A].set_time(1000)
    net.elect("a")
    net.nodes[A].set_time(400)
    net.propose("a", b"x")
    assert [1000, 1000] == stamps(net, "c")


def test_stamps_stay_monotonic_when_new_leader_clock_is_behind() -> None:
    """Across terms: a new leader whose clock is behind continues from the log's last
    stamp until its clock catches up."""
    net = Network(["a", "b", "c"])
    net.nodes[A].set_time(5000)
    net.elect("a")
    net.propose("a", b"x")
    net.nodes[B].set_time(2000)
    net.nodes[A].transfer_leadership(B)
    net.stabilize()
    assert B == net.leader()
    net.propose("b", b"y")
    net.nodes[B].set_time(6000)
    net.propose("b", b"z")
    assert [5000, 5000, 5000, 5000, 6000] == stamps(net, "c")
    assert [5000, 5000, 5000, 5000, 6000] == [e.timestamp_ms for e in net.applied_entries[A]]


def test_stamps_stay_monotonic_when_new_leader_restarted_from_storage() -> None:
    """A restarted node takes the last stamp from its stored log."""
    net = Network(["a", "b", "c"], check_quorum=False)
    net.nodes[A].set_time(9000)
    net.elect("a")
    net.propose("a", b"x")
    net.restart(B)
    net.isolate("a")
    net.elect("b")
    net.propose("b", b"y")
    assert [9000, 9000, 9000, 9000] == stamps(net, "b")


def test_stamps_stay_monotonic_when_new_leader_log_is_compacted() -> None:
    """A leader whose whole log was compacted continues from the compacted entry's stamp."""
    net = Network(["a", "b", "c"], check_quorum=False)
    net.nodes[A].set_time(7000)
    net.elect("a")
    net.propose("a", b"x")
    net.compact("b", net.committed("b"))
    net.restart(B)
    net.isolate("a")
    net.elect("b")
    net.propose("b", b"y")
    assert [7000, 7000] == [e.timestamp_ms for e in net.log_entries("b")]


def test_stamps_stay_monotonic_when_leader_log_starts_after_a_snapshot() -> None:
    """A node whose log holds no entry (all inside a snapshot) stamps no older than the
    time the application tells it it applied."""
    net = Network(["a", "b", "c"])
    net.nodes[B].observe_timestamp(8000)
    net.nodes[B].set_time(3000)
    net.elect("b")
    net.propose("b", b"x")
    assert [8000, 8000] == stamps(net, "a")
