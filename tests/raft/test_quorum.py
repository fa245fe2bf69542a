"""Quorum arithmetic against naive versions (etcd quick tests), Raft §5.3, thesis §4.3."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.ids import NodeId
from concord.raft.quorum import VoteResult, joint_committed_index, joint_vote_result
from concord.raft.quorum import majority_committed_index, majority_vote_result

NODES = [NodeId(f"n{i}") for i in range(7)]
ids = st.sets(st.sampled_from(NODES), max_size=7)


def naive_committed(voters: set[NodeId], match: dict[NodeId, int]) -> int:
    """The largest index that a majority has acknowledged, by trying every candidate."""
    if not voters:
        return 1 << 62
    best = 0
    for candidate in [match.get(v, 0) for v in voters]:
        if sum(1 for v in voters if match.get(v, 0) >= candidate) > len(voters) // 2:
            best = max(best, candidate)
    return best


def naive_vote(voters: set[NodeId], votes: dict[NodeId, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    yes = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    if yes > len(voters) // 2:
        return VoteResult.WON
    if yes + missing > len(voters) // 2:
        return VoteResult.PENDING
    return VoteResult.LOST


@pytest.mark.slow
@settings(derandomize=True, max_examples=200)
@given(ids, ids, st.dictionaries(st.sampled_from(sorted(NODES)), st.integers(0, 20)))
def test_committed_index_matches_naive_when_configs_vary(
    incoming: set[NodeId], outgoing: set[NodeId], match: dict[NodeId, int]
) -> None:
    """Majority and joint committed indexes equal brute force (joint = min of halves)."""

    def acked(node_id: NodeId) -> int:
        return match.get(node_id, 0)

    assert naive_committed(incoming, match) == majority_committed_index(incoming, acked)
    expected = min(naive_committed(incoming, match), naive_committed(outgoing, match))
    assert expected == joint_committed_index(incoming, outgoing, acked)


@pytest.mark.slow
@settings(derandomize=True, max_examples=200)
@given(ids, ids, st.dictionaries(st.sampled_from(sorted(NODES)), st.booleans()))
def test_vote_result_matches_naive_when_configs_vary(
    incoming: set[NodeId], outgoing: set[NodeId], votes: dict[NodeId, bool]
) -> None:
    """Vote results equal brute force; a joint election needs both halves (thesis §4.3)."""
    assert naive_vote(incoming, votes) == majority_vote_result(incoming, votes)
    first, second = naive_vote(incoming, votes), naive_vote(outgoing, votes)
    if VoteResult.LOST in (first, second):
        expected = VoteResult.LOST
    elif first == second == VoteResult.WON:
        expected = VoteResult.WON
    else:
        expected = VoteResult.PENDING
    assert expected == joint_vote_result(incoming, outgoing, votes)
