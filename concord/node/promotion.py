"""
Learner auto-promotion: the leader's decision, as pure functions of events.

`add_member` without `learner: true` asks the leader to add the new member as a learner
(it catches up without counting toward any quorum) and to promote it to voter once its
match index is within PROMOTE_LAG_ENTRIES of the commit index. `add_member` with
`learner: true` asks for a learner that stays one: it is never promoted automatically,
only by `promote_member`.

The promise is kept by the leader that accepted the request (nothing of it is
replicated), so everything here belongs to one leadership term. The state is cleared
when it no longer applies:

- leadership changes (another term, or this node is no longer leader): everything. A
  learner whose leader changed before it caught up stays a learner until
  `promote_member`; a learner that asked to stay one is never promoted by a new leader.
- a member leaves the configuration (removed): its wish and its pending proposal, so a
  member removed and added again is judged by its new `add_member` alone.
- a promotion completes (the member is a voter): its wish.
- the reply to an ADD_VOTER proposal arrives, whatever it says: its pending mark, so a
  dropped proposal is made again on a later tick.

The raft worker feeds the events (`added`, `proposed`, `answered`, and `decide_promotions`
on every tick) and proposes what `decide_promotions` returns. Pure: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from concord.ids import NodeId
from concord.raft.messages import ConfState

__all__ = ["PROMOTE_LAG_ENTRIES", "LeaderView", "Promotions", "decide_promotions"]

#: A learner within this many entries of the leader's commit index is promoted.
PROMOTE_LAG_ENTRIES = 10


@dataclass(frozen=True, slots=True)
class Promotions:
    """
    What the leader of `term` remembers about promoting learners.

    Attributes:
        term: the leadership term this state belongs to.
        wanted: members to promote once caught up (added without `learner: true`).
        pending: (request id, member) of ADD_VOTER proposals not yet answered.
        members: the configuration's members at the last `decide_promotions`.
    """

    term: int = 0
    wanted: frozenset[NodeId] = frozenset()
    pending: tuple[tuple[int, NodeId], ...] = ()
    members: frozenset[NodeId] = frozenset()

    def _for_term(self, term: int) -> Promotions:
        return self if term == self.term else Promotions(term=term)

    def added(self, member: NodeId, learner: bool | None, term: int) -> Promotions:
        """
        `add_member` was accepted at `term`: `learner` None asks for a promotion once
        caught up; True (stay a learner) and False (added as a voter) ask for none.
        """
        state = self._for_term(term)
        wanted = state.wanted | {member} if learner is None else state.wanted - {member}
        # Not seen in the configuration since this request: a removal applied before it
        # (the member removed, then added again) must not cancel the new wish.
        return replace(state, wanted=wanted, members=state.members - {member})

    def proposed(self, request_id: int, member: NodeId) -> Promotions:
        """ADD_VOTER for `member` was proposed under `request_id` (auto or promote_member)."""
        return replace(self, pending=(*self.pending, (request_id, member)))

    def answered(self, request_id: int) -> Promotions:
        """The proposal `request_id` was answered (applied, dropped or refused)."""
        if all(rid != request_id for rid, _ in self.pending):
            return self
        return replace(self, pending=tuple(p for p in self.pending if p[0] != request_id))

    def is_pending(self, member: NodeId) -> bool:
        return any(m == member for _, m in self.pending)


@dataclass(frozen=True, slots=True)
class LeaderView:
    """
    What the decision needs of the raft core, read once per tick.

    Attributes:
        term: the node's current term.
        is_leader: whether the node is leader now.
        conf_state: the configuration in force.
        committed: the leader's commit index.
        match: member -> match index (the leader's progress; empty on a follower).
    """

    term: int
    is_leader: bool
    conf_state: ConfState
    committed: int
    match: Mapping[NodeId, int]


def _members(conf: ConfState) -> frozenset[NodeId]:
    return frozenset(conf.voters) | frozenset(conf.learners) | frozenset(
        conf.voters_outgoing) | frozenset(conf.learners_next)


def decide_promotions(
    state: Promotions, view: LeaderView, lag_entries: int = PROMOTE_LAG_ENTRIES
) -> tuple[Promotions, tuple[NodeId, ...]]:
    """
    One tick of the decision.

    Returns:
        The new state, and the learners to propose ADD_VOTER for now (in id order): the
        wanted ones that caught up and have no proposal pending. The caller records each
        proposal with `Promotions.proposed`.
    """
    if not view.is_leader:
        return Promotions(term=view.term), ()
    state = state._for_term(view.term)
    conf = view.conf_state
    members = _members(conf)
    removed = state.members - members
    # Done (a voter now) or gone: nothing left to promote.
    wanted = state.wanted - removed - frozenset(conf.voters)
    pending = tuple(p for p in state.pending if p[1] not in removed)
    state = Promotions(state.term, wanted, pending, members)
    due = tuple(
        learner for learner in sorted(conf.learners)
        if learner in wanted and not state.is_pending(learner)
        and learner in view.match and view.match[learner] + lag_entries >= view.committed
    )
    return state, due
