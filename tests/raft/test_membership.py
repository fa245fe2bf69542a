"""Membership changes: simple changes (thesis §4.1), joint consensus (thesis §4.3),
learners (thesis §4.2.1) and removal of the leader (thesis §4.2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.errors import ProposalDroppedError
from concord.ids import NodeId
from concord.raft import ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType
from concord.raft import ConfState, MemoryStorage, Role
from tests.raft.network import Network

A, B, C, D, E = (NodeId(n) for n in "abcde")


def cluster_with_spares(*spares: str) -> Network:
    """a, b, c are voters (a leads); spares start from the bootstrap membership."""
    net = Network(["a", "b", "c", *spares], voters=["a", "b", "c"])
    net.elect("a")
    return net


def change(net: Network, cc: ConfChange) -> None:
    net.nodes[A].propose_conf_change(cc)
    net.stabilize()


def conf(net: Network, name: NodeId) -> ConfState:
    return net.nodes[name].status().conf_state


def test_voter_is_added_when_simple_change_is_applied() -> None:
    """Thesis §4.1: one voter added directly; it receives the log and counts in quorums."""
    net = cluster_with_spares("d")
    net.propose("a", b"before")
    change(net, ConfChange.add_voter(D))
    assert (A, B, C, D) == conf(net, A).voters
    assert (A, B, C, D) == conf(net, D).voters
    assert [b"before"] == net.applied[D]
    net.isolate("b")
    net.isolate("c")
    net.nodes[A].propose(b"needs-3-of-4")
    net.stabilize()
    assert [b"before"] == net.applied[A]  # a and d are only 2 of 4


def test_learner_does_not_count_when_replicating() -> None:
    """Thesis §4.2.1: a learner gets the log but is not part of any majority."""
    net = cluster_with_spares("d")
    change(net, ConfChange.add_learner(D))
    assert (D,) == conf(net, A).learners
    net.propose("a", b"x")
    assert [b"x"] == net.applied[D]
    net.isolate("b")
    net.isolate("c")
    net.nodes[A].propose(b"y")
    net.stabilize()
    assert [b"x"] == net.applied[A]
    assert net.committed("d") + 1 == net.nodes[D].raft.log.last_index()  # y: held, uncommitted


def test_learner_never_campaigns_when_leader_is_gone() -> None:
    """A learner is not promotable: it never starts an election."""
    net = cluster_with_spares("d")
    change(net, ConfChange.add_learner(D))
    term = net.term("d")
    net.isolate("d")
    net.tick(D, 100)
    net.stabilize()
    assert (Role.FOLLOWER, term) == (net.role("d"), net.term("d"))


def test_learner_becomes_voter_when_promoted() -> None:
    """Thesis §4.2.1: a caught-up learner is promoted by an add-voter change."""
    net = cluster_with_spares("d")
    change(net, ConfChange.add_learner(D))
    change(net, ConfChange.add_voter(D))
    assert ((A, B, C, D), ()) == (conf(net, A).voters, conf(net, A).learners)
    assert ((A, B, C, D), ()) == (conf(net, D).voters, conf(net, D).learners)


def test_joint_config_needs_both_majorities_when_replacing_voters() -> None:
    """Thesis §4.3: in C_old,new an entry commits only with majorities of both."""
    net = cluster_with_spares("d", "e")
    cc = ConfChange(
        (
            ConfChangeSingle(ConfChangeType.ADD_VOTER, D),
            ConfChangeSingle(ConfChangeType.ADD_VOTER, E),
            ConfChangeSingle(ConfChangeType.REMOVE, B),
            ConfChangeSingle(ConfChangeType.REMOVE, C),
        ),
        ConfChangeTransition.JOINT_EXPLICIT,
    )
    change(net, cc)
    joint = conf(net, A)
    assert ((A, D, E), (A, B, C)) == (joint.voters, joint.voters_outgoing)
    net.isolate("d")
    net.isolate("e")
    net.nodes[A].propose(b"old-majority-only")
    net.stabilize()
    assert [] == net.applied[A]
    net.heal()
    net.tick_all(2)
    assert [b"old-majority-only"] == net.applied[A]
    change(net, ConfChange())  # explicit leave
    final = conf(net, A)
    assert ((A, D, E), ()) == (final.voters, final.voters_outgoing)
    net.isolate("b")
    net.isolate("c")
    net.propose("a", b"new-majority")
    assert [b"old-majority-only", b"new-majority"] == net.applied[D]


def test_joint_config_is_left_automatically_when_auto_leave() -> None:
    """Thesis §4.3: with auto_leave the leader proposes C_new once C_old,new applies."""
    net = cluster_with_spares("d")
    cc = ConfChange(
        (
            ConfChangeSingle(ConfChangeType.ADD_VOTER, D),
            ConfChangeSingle(ConfChangeType.REMOVE, C),
        )
    )
    change(net, cc)
    final = conf(net, A)
    assert ((A, B, D), (), False) == (final.voters, final.voters_outgoing, final.auto_leave)
    assert final == conf(net, D)


def test_voter_becomes_learner_when_demoted_through_joint_config() -> None:
    """learners_next: an outgoing voter becomes a learner when the joint config is left."""
    net = cluster_with_spares()
    cc = ConfChange(
        (ConfChangeSingle(ConfChangeType.ADD_LEARNER, C),), ConfChangeTransition.JOINT_EXPLICIT
    )
    change(net, cc)
    assert (C,) == conf(net, A).learners_next
    change(net, ConfChange())
    final = conf(net, A)
    assert ((A, B), (C,), ()) == (final.voters, final.learners, final.learners_next)


def test_leader_steps_down_when_its_removal_is_applied() -> None:
    """Thesis §4.2.2: a removed leader steps down once the change is applied and never
    campaigns again; the rest elect a leader among themselves."""
    net = cluster_with_spares()
    change(net, ConfChange.remove(A))
    assert Role.FOLLOWER == net.role("a")
    assert (B, C) == conf(net, B).voters
    net.tick_all(40)
    assert net.leader() in (B, C)
    term = net.term("a")
    net.isolate("a")
    net.tick(A, 100)
    net.stabilize()
    assert (Role.FOLLOWER, term) == (net.role("a"), net.term("a"))
    net.heal()
    net.propose(net.leader(), b"without-a")
    assert [b"without-a"] == net.applied[B]


def test_conf_change_is_dropped_when_another_is_not_applied() -> None:
    """One membership change at a time: a second proposal before the first applies fails."""
    net = cluster_with_spares("d", "e")
    net.nodes[A].propose_conf_change(ConfChange.add_learner(D))
    with pytest.raises(ProposalDroppedError):
        net.nodes[A].propose_conf_change(ConfChange.add_learner(E))


def test_conf_change_is_dropped_when_leader_has_not_applied_its_term_no_op() -> None:
    """Thesis §4.1 bug fix: a new leader changes membership only after an entry of its
    term commits (pending_conf_index covers the log at election)."""
    fresh = Network(["a", "b", "c"], pre_vote=False)
    fresh.nodes[A].campaign()
    rd = fresh.process_ready(A)  # VOTE requests out
    for m in rd.messages:
        fresh.deliver(m)
    for name in (B, C):
        for m in fresh.process_ready(name).messages_after_persist:
            fresh.deliver(m)
    assert Role.LEADER == fresh.role("a")
    with pytest.raises(ProposalDroppedError):
        fresh.nodes[A].propose_conf_change(ConfChange.add_learner(D))
    fresh.stabilize()
    fresh.nodes[A].propose_conf_change(ConfChange.add_learner(D))


def test_invalid_conf_change_is_dropped_when_proposed() -> None:
    """Leaving a joint config that does not exist, or removing every voter, is refused."""
    net = cluster_with_spares()
    with pytest.raises(ProposalDroppedError):
        net.nodes[A].propose_conf_change(ConfChange())
    with pytest.raises(ProposalDroppedError):
        net.nodes[A].propose_conf_change(
            ConfChange(tuple(ConfChangeSingle(ConfChangeType.REMOVE, n) for n in (A, B, C)))
        )


node_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@pytest.mark.slow
@settings(derandomize=True, max_examples=100)
@given(
    st.lists(st.tuples(st.sampled_from(list(ConfChangeType)), node_ids), max_size=6),
    st.sampled_from(list(ConfChangeTransition)),
)
def test_conf_change_decodes_when_encoded(
    changes: list[tuple[ConfChangeType, str]], transition: ConfChangeTransition
) -> None:
    """ConfChange v1 encoding round-trips (docs/formats/raft.md)."""
    cc = ConfChange(tuple(ConfChangeSingle(t, NodeId(n)) for t, n in changes), transition)
    assert cc == ConfChange.decode(cc.encode())


def test_conf_change_decode_raises_when_version_is_unknown() -> None:
    """A version byte other than 1 is refused."""
    with pytest.raises(ValueError):
        ConfChange.decode(b"\x02\x00\x00\x00")
    with pytest.raises(ValueError):
        ConfChange.decode(ConfChange.add_voter(A).encode()[:-1])


def test_new_member_storage_is_bootstrap_when_joining() -> None:
    """A joining node starts from the bootstrap membership, in which it is no voter."""
    storage = MemoryStorage(ConfState(voters=(A, B, C)))
    assert ConfState(voters=(A, B, C)) == storage.initial_state()[1]
