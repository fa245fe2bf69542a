"""Leader election: Raft §5.2, §5.4.1, pre-vote (thesis §9.6), check-quorum and leader
stickiness (thesis §6.2, §4.2.3)."""

from __future__ import annotations

from concord.ids import NodeId
from concord.raft import MessageType, Role
from concord.raft.messages import Message
from tests.raft.network import Network


def test_a_leader_is_elected_when_followers_time_out() -> None:
    """Raft §5.2: with no leader, a follower times out and wins an election."""
    net = Network(["a", "b", "c"], seed=7)
    net.tick_all(25)
    assert 1 == len(net.leaders())
    assert len({net.term(n) for n in "abc"}) == 1


def test_election_timeout_is_randomized_when_reset() -> None:
    """Raft §5.2: timeouts are drawn from [election_ticks, 2 * election_ticks - 1]."""
    net = Network(["a", "b", "c"], seed=3, election_ticks=10)
    seen = set()
    raft = net.nodes[NodeId("a")].raft
    for _ in range(200):
        raft.become_follower(raft.term, None)
        seen.add(raft.randomized_election_timeout)
    assert set(range(10, 20)) == seen


def test_candidate_loses_when_its_log_is_behind() -> None:
    """Raft §5.4.1: voters reject a candidate whose log is less up to date."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.propose("a", b"x")
    net.heal()
    net.nodes[NodeId("c")].campaign()
    net.stabilize()
    assert Role.LEADER == net.role("a")
    assert Role.LEADER != net.role("c")


def test_term_is_unchanged_when_a_partitioned_node_pre_votes() -> None:
    """Thesis §9.6: a partitioned node's pre-votes fail, so it never bumps its term."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    term = net.term("a")
    net.isolate("c")
    for _ in range(100):
        net.tick(NodeId("c"))
        net.stabilize()
    assert term == net.term("c")
    assert Role.PRE_CANDIDATE == net.role("c")
    net.heal()
    net.tick_all(3)
    assert Role.LEADER == net.role("a")
    assert term == net.term("a")


def test_term_is_bumped_when_pre_vote_is_off_and_node_is_partitioned() -> None:
    """Without pre-vote (Raft §9.6 motivation) a partitioned node inflates its term."""
    net = Network(["a", "b", "c"], pre_vote=False)
    net.elect("a")
    term = net.term("a")
    net.isolate("c")
    for _ in range(60):
        net.tick(NodeId("c"))
        net.stabilize()
    assert net.term("c") > term


def test_leader_steps_down_when_quorum_is_inactive() -> None:
    """Thesis §6.2 (check-quorum): a leader cut off from a quorum steps down."""
    net = Network(["a", "b", "c"], check_quorum=True)
    net.elect("a")
    net.isolate("a")
    for _ in range(2 * 10 + 1):
        net.tick(NodeId("a"))
        net.stabilize()
    assert Role.FOLLOWER == net.role("a")


def test_leader_stays_when_quorum_is_active() -> None:
    """Thesis §6.2: heartbeat responses keep a leader in place."""
    net = Network(["a", "b", "c"], check_quorum=True)
    net.elect("a")
    net.tick_all(50)
    assert Role.LEADER == net.role("a")


def test_vote_request_is_ignored_when_leader_was_heard_recently() -> None:
    """Thesis §4.2.3: leader stickiness; a disruptive candidate gets no answer."""
    net = Network(["a", "b", "c"], check_quorum=True, pre_vote=False)
    net.elect("a")
    term = net.term("b")
    net.nodes[NodeId("b")].step(
        Message(MessageType.VOTE, NodeId("b"), NodeId("c"), term + 5, log_term=9, index=99)
    )
    rd = net.nodes[NodeId("b")].ready()
    assert () == rd.messages_after_persist
    assert term == net.term("b")


def test_node_does_not_campaign_when_not_in_the_configuration() -> None:
    """A node outside the voters (removed, or a learner) never starts an election."""
    net = Network(["a", "b", "c", "d"], voters=["a", "b", "c"])
    net.tick(NodeId("d"), 100)
    net.stabilize()
    assert Role.FOLLOWER == net.role("d")
    assert 0 == net.term("d")


def test_at_most_one_leader_is_elected_when_candidates_split_the_vote() -> None:
    """Raft §5.2 election safety: two simultaneous candidates cannot both win a term."""
    net = Network(["a", "b", "c", "d"], pre_vote=False)
    net.nodes[NodeId("a")].campaign()
    net.nodes[NodeId("c")].campaign()
    net.stabilize()
    leaders_by_term: dict[int, set[str]] = {}
    for name in net.leaders():
        leaders_by_term.setdefault(net.term(name), set()).add(name)
    assert all(1 == len(v) for v in leaders_by_term.values())
    net.tick_all(60)
    assert 1 == len(net.leaders())


def _ticks_to_campaign(net: Network, node: str) -> int:
    """Ticks of `node` alone until it leaves the follower role (it campaigns)."""
    for ticks in range(1, 100):
        net.nodes[NodeId(node)].tick()
        if net.role(node) != Role.FOLLOWER:
            return ticks
    raise AssertionError(f"{node} never campaigned")


def test_missed_ticks_bring_the_first_election_forward_and_keep_its_wait_randomized() -> None:
    """etcd's initial election tick advance: a leaderless follower advanced by many
    missed ticks campaigns after 1..election_ticks more ticks (never at once, and not
    all at the same tick), instead of election_ticks..2*election_ticks-1."""
    waits = set()
    for seed in range(40):
        net = Network(["a", "b", "c"], seed=seed, election_ticks=10)
        raft = net.nodes[NodeId("a")].raft
        raft.advance_election(1000)
        assert 9 == raft.election_elapsed
        waits.add(_ticks_to_campaign(net, "a"))
    assert waits <= set(range(1, 11)) and len(waits) > 3


def test_missed_ticks_are_ignored_when_a_leader_is_known() -> None:
    """A follower that hears from a leader keeps its full timeout (the leader's lease
    and check-quorum rely on it); so do candidates and leaders."""
    net = Network(["a", "b", "c"], election_ticks=10)
    net.elect("a")
    follower = net.nodes[NodeId("b")].raft
    elapsed = follower.election_elapsed
    follower.advance_election(1000)
    assert elapsed == follower.election_elapsed
    leader = net.nodes[NodeId("a")].raft
    elapsed = leader.election_elapsed
    leader.advance_election(1000)
    assert elapsed == leader.election_elapsed
