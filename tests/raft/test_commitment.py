"""Commitment: Raft §5.4.2 (Figure 8), leader completeness (§5.4.3), partitions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from concord.ids import NodeId
from concord.raft import Entry, MessageType, Role
from concord.raft.messages import Message
from tests.raft.network import Network

S1, S2, S3, S4, S5 = (NodeId(f"s{i}") for i in range(1, 6))
NAMES = ["s1", "s2", "s3", "s4", "s5"]


def figure8_cluster() -> Network:
    """Figure 8 (c) before S1's election: S1 and S2 hold 2:2, S5 holds 2:3."""
    net = Network(NAMES, pre_vote=False, check_quorum=False)
    net.load("s1", [Entry(1, 1), Entry(2, 2, data=b"from-term-2")], term=3)
    net.load("s2", [Entry(1, 1), Entry(2, 2, data=b"from-term-2")], term=3)
    net.load("s3", [Entry(1, 1)], term=3)
    net.load("s4", [Entry(1, 1)], term=3)
    net.load("s5", [Entry(1, 1), Entry(3, 2, data=b"from-term-3")], term=3)
    return net


def strip_term(term: int) -> Callable[[Message], Message]:
    def transform(m: Message) -> Message:
        if m.type == MessageType.APPEND:
            return replace(m, entries=tuple(e for e in m.entries if e.term != term))
        return m

    return transform


def test_old_term_entry_is_not_committed_when_replicated_on_a_majority() -> None:
    """Raft §5.4.2 / Figure 8 (c)-(d): a majority copy of a term-2 entry is not committed
    by the term-4 leader, and indeed a later leader may overwrite it."""
    net = figure8_cluster()
    net.isolate("s5")
    net.transform = strip_term(4)  # term-4 entries never arrive
    net.elect("s1")
    assert Role.LEADER == net.role("s1")
    assert [2, 2, 2] == [net.nodes[n].raft.log.last_index() for n in (S2, S3, S4)]
    assert 0 == net.committed("s1")  # nothing of term 4 committed, so 2:2 is not either
    # Figure 8 (d): S1 crashes, S5 wins with S2-S4 (its last term 3 is newer) and
    # overwrites index 2 everywhere.
    net.heal()
    net.isolate("s1")
    net.elect("s5")  # loses term 4: S2-S4 voted for S1 in it
    net.elect("s5")
    assert Role.LEADER == net.role("s5")
    assert [3, 3, 3] == [net.nodes[n].raft.log.term(2) for n in (S2, S3, S4)]
    assert all(b"from-term-2" not in net.applied[n] for n in net.names)


def test_old_term_entry_is_committed_when_a_current_term_entry_commits() -> None:
    """Raft §5.4.2 / Figure 8 (e): committing a term-4 entry commits 2:2 with it, and S5
    can no longer win an election."""
    net = figure8_cluster()
    net.isolate("s5")
    net.elect("s1")
    assert 3 == net.committed("s1")
    assert [b"from-term-2"] == net.applied[S1]
    net.heal()
    net.isolate("s1")
    for _ in range(3):
        net.elect("s5")
    assert Role.LEADER != net.role("s5")


def test_new_leader_holds_all_committed_entries_when_elected() -> None:
    """Raft §5.4.3 leader completeness: any later leader has every committed entry."""
    net = Network(["a", "b", "c", "d", "e"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net.partition(["a", "b", "c"], ["d", "e"])
    for i in range(5):
        net.propose("a", b"c%d" % i)
    committed = net.committed("a")
    net.heal()
    net.isolate("a")
    for candidate in ("d", "e", "b"):
        net.nodes[NodeId(candidate)].campaign()
        net.stabilize()
    leaders = [n for n in net.leaders() if n != "a"]  # a is cut off, still believes
    assert 1 == len(leaders)
    leader = leaders[0]
    assert leader in ("b", "c")
    assert net.log_entries("a")[:committed] == net.log_entries(leader)[:committed]


def test_minority_leader_commits_nothing_when_partitioned() -> None:
    """Raft §5.3: a leader in a minority partition cannot commit; the majority elects a
    new leader whose log wins when the partition heals."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    net.partition(["a", "b"], ["c", "d", "e"])
    net.nodes[NodeId("a")].propose(b"lost")
    net.stabilize()
    assert 1 == net.committed("a")
    net.tick_all(40)
    majority_leader = [n for n in net.leaders() if n in ("c", "d", "e")]
    assert 1 == len(majority_leader)
    net.propose(majority_leader[0], b"kept")
    net.heal()
    net.tick_all(5)
    assert [[b"kept"]] * 5 == [net.applied[NodeId(n)] for n in "abcde"]
