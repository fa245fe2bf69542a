"""The log and its unstable tail (etcd raft_log_test, log_unstable_test)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.errors import CompactedError, RaftInvariantError
from concord.ids import NodeId
from concord.raft import ConfState, Entry, MemoryStorage
from concord.raft.log import RaftLog
from concord.raft.progress import Inflights, Progress, ProgressState
from concord.raft.unstable import Unstable

CS = ConfState(voters=(NodeId("a"),))


def log_with(stable_terms: list[int], unstable_terms: tuple[int, ...] = ()) -> RaftLog:
    storage = MemoryStorage(CS)
    storage.append([Entry(t, i + 1, data=b"d") for i, t in enumerate(stable_terms)])
    log = RaftLog(storage, 1 << 20)
    base = len(stable_terms)
    if unstable_terms:
        log.append([Entry(t, base + i + 1, data=b"d") for i, t in enumerate(unstable_terms)])
    return log


def test_conflict_hint_skips_a_term_when_terms_differ() -> None:
    """Raft §5.3: the follower's hint is the last index whose term <= the probe's term."""
    log = log_with([1, 1, 2, 2, 2, 4, 4])
    assert (5, 2) == log.find_conflict_by_term(7, 3)
    assert (2, 1) == log.find_conflict_by_term(5, 1)
    assert (0, 0) == log.find_conflict_by_term(3, 0)


def test_append_truncates_when_a_conflict_is_found() -> None:
    """Raft §5.3 step 3: a conflicting entry and all that follow it are replaced."""
    log = log_with([1, 1, 1])
    assert 3 == log.maybe_append(1, 1, 0, (Entry(1, 2), Entry(2, 3)))
    assert [1, 1, 2] == [log.term(i) for i in (1, 2, 3)]
    assert 3 == log.last_index()


def test_append_is_refused_when_previous_entry_does_not_match() -> None:
    """Raft §5.3 step 2: no entry at prevLogIndex with prevLogTerm: reject."""
    log = log_with([1, 1])
    assert None is log.maybe_append(2, 3, 0, (Entry(3, 3),))


def test_invariant_error_is_raised_when_a_committed_entry_would_be_overwritten() -> None:
    """Leader completeness: a committed entry never conflicts (else: a bug)."""
    log = log_with([1, 1, 1])
    log.commit_to(3)
    with pytest.raises(RaftInvariantError):
        log.maybe_append(1, 1, 3, (Entry(2, 2),))


def test_commit_requires_current_term_when_counting() -> None:
    """Raft §5.4.2: maybe_commit ignores an index whose entry is from an older term."""
    log = log_with([1, 1, 2])
    assert not log.maybe_commit(2, 2)
    assert log.maybe_commit(3, 2)
    assert 3 == log.committed


def test_slice_spans_storage_and_unstable_when_limited_by_size() -> None:
    """Entries come from storage then unstable, within the byte budget (>= one entry)."""
    log = log_with([1, 1, 1], (2, 2, 2))
    assert [2, 3, 4, 5] == [e.index for e in log.slice(2, 7, 4 * 17)]
    assert [4] == [e.index for e in log.slice(4, 7, 1)]
    storage = log.storage
    assert isinstance(storage, MemoryStorage)
    storage.create_snapshot(2, CS, b"")
    storage.compact(2)
    with pytest.raises(CompactedError):
        log.slice(1, 3, None)


def test_stable_to_is_ignored_when_entry_was_replaced() -> None:
    """A persisted acknowledgement for a since-replaced entry does not mark it stable."""
    unstable = Unstable(5)
    unstable.truncate_and_append([Entry(1, 5), Entry(1, 6)])
    unstable.accept_in_progress()
    unstable.truncate_and_append([Entry(2, 6)])
    assert 6 == unstable.offset_in_progress
    unstable.stable_to(6, 1)
    assert 5 == unstable.offset
    unstable.stable_to(6, 2)
    assert (7, []) == (unstable.offset, unstable.entries)


def test_inflights_free_up_when_acknowledged() -> None:
    """The in-flight window fills and frees in index order."""
    inflights = Inflights(3)
    for index in (2, 4, 6):
        inflights.add(index)
    assert inflights.full()
    inflights.free_le(4)
    assert (1, False) == (inflights.count(), inflights.full())


def test_probe_moves_next_back_when_rejected_with_a_hint() -> None:
    """A rejection sets next just past the hint, but not below match + 1."""
    pr = Progress(match=3, next_index=10, max_inflight=4, is_learner=False)
    assert pr.maybe_decr_to(9, 5)
    assert 6 == pr.next
    assert not pr.maybe_decr_to(9, 5)  # stale: next - 1 is no longer 9
    pr.become_replicate()
    assert ProgressState.REPLICATE == pr.state
    assert not pr.maybe_decr_to(2, 0)  # below match: stale in replicate


def naive_append(terms: list[int], prev: int, prev_term: int, new: list[int]) -> int | None:
    """Raft §5.3 receiver rules on a plain list of terms (index i at terms[i - 1])."""
    if prev > len(terms) or (prev > 0 and terms[prev - 1] != prev_term):
        return None
    for k, term in enumerate(new):
        index = prev + 1 + k
        if index <= len(terms) and terms[index - 1] != term:
            del terms[index - 1 :]
        if index > len(terms):
            terms.append(term)
    return prev + len(new)


@pytest.mark.slow
@settings(derandomize=True, max_examples=150)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 12), st.lists(st.integers(1, 4), max_size=5)),
            st.tuples(st.just("persist"), st.integers(0, 3), st.just([])),
        ),
        max_size=25,
    )
)
def test_log_matches_naive_list_when_appending_and_persisting(
    ops: list[tuple[str, int, list[int]]]
) -> None:
    """RaftLog (storage + unstable, persisted in random batches) equals a plain list."""
    storage = MemoryStorage(CS)
    log = RaftLog(storage, 1 << 20)
    naive: list[int] = []
    in_flight: list[list[Entry]] = []
    for kind, arg, new in ops:
        if kind == "append":
            prev = min(arg, len(naive))
            prev_term = naive[prev - 1] if prev > 0 else 0
            # Terms never decrease along a leader's log: make the new entries valid.
            floor = max([prev_term] + naive[:prev])
            terms = sorted(max(t, floor) for t in new)
            entries = tuple(Entry(t, prev + 1 + k) for k, t in enumerate(terms))
            expected = naive_append(naive, prev, prev_term, terms)
            assert expected == log.maybe_append(prev, prev_term, 0, entries)
        else:
            batch = log.unstable.next_entries()
            log.unstable.accept_in_progress()
            in_flight.append(list(batch))
            for _ in range(min(arg, len(in_flight))):
                done = in_flight.pop(0)
                if done:
                    storage.append(done)
                    log.unstable.stable_to(done[-1].index, done[-1].term)
        assert naive == [log.term(i) for i in range(1, log.last_index() + 1)]
