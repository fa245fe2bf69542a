"""
Majority and joint quorums: committed index and vote results (etcd-io/raft's quorum).

Pure. No IO, no clock, no global randomness; stdlib-only imports.

An empty majority config commits everything and wins every vote, so a joint config with
an empty outgoing half behaves as its incoming half (Raft thesis §4.3).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from enum import IntEnum

from concord.ids import NodeId

#: The committed index of an empty configuration: no constraint.
UNBOUNDED_INDEX = 1 << 62


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: Collection[NodeId], acked: Callable[[NodeId], int]) -> int:
    """The largest index acknowledged by a majority of `voters`."""
    n = len(voters)
    if n == 0:
        return UNBOUNDED_INDEX
    if n == 1:
        for voter in voters:
            return acked(voter)
    matched = sorted(acked(v) for v in voters)
    # Ascending: the element at n - (n//2 + 1) is acked by n//2 + 1 voters.
    return matched[n - (n // 2 + 1)]


def majority_vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Raft §5.2: won with a majority of yes votes, lost when a majority is impossible."""
    if not voters:
        return VoteResult.WON
    yes = no = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is None:
            continue
        if vote:
            yes += 1
        else:
            no += 1
    quorum = len(voters) // 2 + 1
    if yes >= quorum:
        return VoteResult.WON
    if yes + (len(voters) - yes - no) >= quorum:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_committed_index(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], acked: Callable[[NodeId], int]
) -> int:
    """Thesis §4.3: an index is committed in a joint config when both halves commit it."""
    return min(
        majority_committed_index(incoming, acked), majority_committed_index(outgoing, acked)
    )


def joint_vote_result(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], votes: Mapping[NodeId, bool]
) -> VoteResult:
    """Thesis §4.3: an election in a joint config needs a majority of both halves."""
    first = majority_vote_result(incoming, votes)
    second = majority_vote_result(outgoing, votes)
    if first == second:
        return first
    if VoteResult.LOST in (first, second):
        return VoteResult.LOST
    return VoteResult.PENDING
