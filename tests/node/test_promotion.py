"""Learner auto-promotion decisions (concord/node/promotion.py)."""

from __future__ import annotations

from concord.ids import NodeId
from concord.node.promotion import PROMOTE_LAG_ENTRIES, LeaderView, Promotions, decide_promotions
from concord.raft.messages import ConfState

N4 = NodeId("n4")
VOTERS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))
WITH_LEARNER = ConfState(VOTERS, (N4,))
WITHOUT = ConfState(VOTERS)
WITH_VOTER = ConfState((*VOTERS, N4))


def view(conf: ConfState, match: int = 100, committed: int = 100, term: int = 3,
         is_leader: bool = True) -> LeaderView:
    progress = {m: 100 for m in conf.voters}
    if N4 in conf.learners or N4 in conf.voters:
        progress[N4] = match
    return LeaderView(term, is_leader, conf, committed, progress)


def tick(state: Promotions, v: LeaderView) -> tuple[Promotions, tuple[NodeId, ...]]:
    """One decision; a promotion it asks for is recorded as proposed (request id 7)."""
    state, due = decide_promotions(state, v)
    for member in due:
        state = state.proposed(7, member)
    return state, due


def test_learner_is_promoted_when_added_without_learner_flag_and_caught_up() -> None:
    """add_member (no flag): promoted once within PROMOTE_LAG_ENTRIES of the commit."""
    state = Promotions().added(N4, None, term=3)
    state, due = tick(state, view(WITH_LEARNER, match=100 - PROMOTE_LAG_ENTRIES - 1))
    assert () == due
    state, due = tick(state, view(WITH_LEARNER, match=100 - PROMOTE_LAG_ENTRIES))
    assert (N4,) == due
    state, due = tick(state, view(WITH_LEARNER))
    assert () == due  # a proposal is pending: never proposed twice


def test_learner_is_never_promoted_when_added_with_learner_true() -> None:
    """add_member learner=True: caught up, it stays a learner, tick after tick."""
    state = Promotions().added(N4, True, term=3)
    for _ in range(3):
        state, due = tick(state, view(WITH_LEARNER))
        assert () == due
    assert frozenset() == state.wanted


def test_learner_is_not_promoted_when_added_by_an_earlier_leader() -> None:
    """A learner this leader did not add (no promise known) is left alone."""
    state, due = tick(Promotions(), view(WITH_LEARNER))
    assert () == due


def test_learner_true_wins_when_member_is_added_again() -> None:
    """The latest add_member decides: no flag, then learner=True, is not promoted."""
    state = Promotions().added(N4, None, term=3).added(N4, True, term=3)
    assert () == tick(state, view(WITH_LEARNER))[1]


def test_member_is_promoted_again_when_removed_and_added_again() -> None:
    """Promoted, removed, re-added (no flag): promoted again (the state was cleared)."""
    state = Promotions().added(N4, None, term=3)
    state, due = tick(state, view(WITH_LEARNER))
    assert (N4,) == due
    state = state.answered(7)
    state, due = tick(state, view(WITH_VOTER))
    assert (frozenset(), ()) == (state.wanted, state.pending)  # completed
    state, _ = tick(state, view(WITHOUT))  # removed
    state = state.added(N4, None, term=3)
    state, due = tick(state, view(WITH_LEARNER))
    assert (N4,) == due


def test_member_is_promoted_when_removed_and_added_again_between_two_ticks() -> None:
    """A removal applied before the new add_member (no tick between) keeps the new wish."""
    state = Promotions().added(N4, True, term=3)
    state, _ = tick(state, view(WITH_LEARNER))
    state = state.added(N4, None, term=3)  # removed meanwhile, then added again
    state, due = tick(state, view(WITHOUT))  # the new ADD_LEARNER is not applied yet
    assert () == due
    state, due = tick(state, view(WITH_LEARNER))
    assert (N4,) == due


def test_pending_promotion_is_dropped_when_member_is_removed() -> None:
    """A member removed while its promotion is pending loses both wish and pending mark."""
    state = Promotions().added(N4, None, term=3)
    state, _ = tick(state, view(WITH_LEARNER))
    assert state.is_pending(N4)
    state, _ = tick(state, view(WITHOUT))
    assert (frozenset(), ()) == (state.wanted, state.pending)


def test_promotion_is_proposed_again_when_the_proposal_was_answered_without_effect() -> None:
    """A dropped ADD_VOTER (answered, still a learner) is proposed again."""
    state = Promotions().added(N4, None, term=3)
    state, due = tick(state, view(WITH_LEARNER))
    state = state.answered(7)
    assert (N4,) == tick(state, view(WITH_LEARNER))[1]


def test_state_is_cleared_when_leadership_changes() -> None:
    """Another term, or no longer leader: wishes and pending proposals are forgotten."""
    state = Promotions().added(N4, None, term=3)
    state, _ = tick(state, view(WITH_LEARNER))
    stepped_down, due = tick(state, view(WITH_LEARNER, is_leader=False))
    assert (Promotions(term=3), ()) == (stepped_down, due)
    new_term, due = tick(state, view(WITH_LEARNER, term=4))
    assert ((), frozenset()) == (due, new_term.wanted)


def test_added_starts_afresh_when_its_term_is_newer() -> None:
    """add_member accepted in a new term, before any tick of it: only its wish remains."""
    state = Promotions().added(NodeId("n5"), None, term=3).added(N4, None, term=4)
    assert (4, frozenset({N4})) == (state.term, state.wanted)
    assert (N4,) == tick(state, view(WITH_LEARNER, term=4))[1]


def test_explicit_promotion_blocks_auto_promotion_until_answered() -> None:
    """promote_member's pending proposal counts: no second ADD_VOTER meanwhile."""
    state = Promotions().added(N4, None, term=3).proposed(99, N4)
    assert () == tick(state, view(WITH_LEARNER))[1]
    assert (N4,) == tick(state.answered(99), view(WITH_LEARNER))[1]
