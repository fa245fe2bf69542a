"""
The membership configuration and every peer's Progress (etcd-io/raft's ProgressTracker).

Pure. No IO, no clock, no global randomness; stdlib-only imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from concord.ids import NodeId
from concord.raft.messages import ConfState
from concord.raft.progress import Progress
from concord.raft.quorum import UNBOUNDED_INDEX, VoteResult, joint_committed_index
from concord.raft.quorum import joint_vote_result


@dataclass(slots=True)
class TrackerConfig:
    """
    A (possibly joint) configuration. `voters_outgoing` is non-empty only while joint;
    `learners_next` become learners when the joint configuration is left (thesis §4.3).
    """

    voters: set[NodeId] = field(default_factory=set)
    voters_outgoing: set[NodeId] = field(default_factory=set)
    learners: set[NodeId] = field(default_factory=set)
    learners_next: set[NodeId] = field(default_factory=set)
    auto_leave: bool = False

    def copy(self) -> TrackerConfig:
        return TrackerConfig(
            set(self.voters),
            set(self.voters_outgoing),
            set(self.learners),
            set(self.learners_next),
            self.auto_leave,
        )

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.voters_outgoing)),
            learners_next=tuple(sorted(self.learners_next)),
            auto_leave=self.auto_leave,
        )

    def __str__(self) -> str:
        text = "voters=(" + " ".join(sorted(self.voters)) + ")"
        if self.voters_outgoing:
            text += "&&(" + " ".join(sorted(self.voters_outgoing)) + ")"
        if self.learners:
            text += " learners=(" + " ".join(sorted(self.learners)) + ")"
        if self.learners_next:
            text += " learners_next=(" + " ".join(sorted(self.learners_next)) + ")"
        if self.auto_leave:
            text += " autoleave"
        return text


ProgressMap = dict[NodeId, Progress]


class ProgressTracker:
    """The current configuration, the Progress of every member, and election votes."""

    __slots__ = ("config", "progress", "votes", "max_inflight")

    def __init__(self, max_inflight: int) -> None:
        self.config = TrackerConfig()
        self.progress: ProgressMap = {}
        self.votes: dict[NodeId, bool] = {}
        self.max_inflight = max_inflight

    def conf_state(self) -> ConfState:
        return self.config.conf_state()

    def is_singleton(self) -> bool:
        return len(self.config.voters) == 1 and not self.config.voters_outgoing

    def voter_ids(self) -> set[NodeId]:
        return self.config.voters | self.config.voters_outgoing

    def committed(self) -> int:
        """The largest index acknowledged by a quorum of the (joint) configuration."""
        progress = self.progress

        def acked(node_id: NodeId) -> int:
            pr = progress.get(node_id)
            return pr.match if pr is not None else 0

        index = joint_committed_index(self.config.voters, self.config.voters_outgoing, acked)
        return 0 if index == UNBOUNDED_INDEX else index

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: NodeId, granted: bool) -> None:
        if node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """(granted, rejected, result) over the voters."""
        granted = rejected = 0
        for node_id, pr in self.progress.items():
            if pr.is_learner:
                continue
            vote = self.votes.get(node_id)
            if vote is None:
                continue
            if vote:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, self.vote_result(self.votes)

    def vote_result(self, votes: dict[NodeId, bool]) -> VoteResult:
        return joint_vote_result(self.config.voters, self.config.voters_outgoing, votes)

    def quorum_active(self) -> bool:
        """Did a quorum show recent activity (check-quorum, Raft thesis §6.2)?"""
        votes = {
            node_id: pr.recent_active
            for node_id, pr in self.progress.items()
            if not pr.is_learner
        }
        return self.vote_result(votes) == VoteResult.WON
