"""The byte layout: sizes, names and the status slots."""

from __future__ import annotations

import mmap

import pytest

from concord.raft.state import Role
from concord.shm.layout import (
    CTL_HEADER_SIZE,
    RECORD_HEAD_SIZE,
    STATUS_BASE,
    STATUS_WORDS,
    W_SEQ,
    SegmentNames,
    align8,
    leader_id_words,
    read_status_words,
    record_size,
    status_from_words,
    write_status_words,
)


def test_record_size_is_aligned_when_lengths_vary() -> None:
    """Records start at multiples of 8 and hold header, value and key."""
    for klen in range(1, 20):
        for vlen in range(0, 20):
            size = record_size(klen, vlen)
            assert 0 == size % 8
            assert RECORD_HEAD_SIZE + klen + vlen <= size < RECORD_HEAD_SIZE + klen + vlen + 8
    assert 8 == align8(1)
    assert 8 == align8(8)


def test_status_slots_fit_header_when_laid_out() -> None:
    """The two status slots lie inside the control header, before the ring."""
    assert STATUS_BASE[1] == STATUS_BASE[0] + STATUS_WORDS + 1  # + slot_seq
    assert (STATUS_BASE[1] + STATUS_WORDS + 1) * 8 <= CTL_HEADER_SIZE


def test_segment_names_follow_convention_when_valid() -> None:
    """Names are concord-<node>-<token>-ctl and -g<N>."""
    n = SegmentNames("n1", "abc")
    assert "concord-n1-abc-ctl" == n.ctl
    assert "concord-n1-abc-g7" == n.gen(7)


def test_segment_names_rejected_when_part_has_slash() -> None:
    """A node or token that could escape the name is refused; tokens have no '-'."""
    with pytest.raises(ValueError):
        SegmentNames("n1/../x", "abc")
    with pytest.raises(ValueError):
        SegmentNames("n1", "a-b")


def test_segment_names_claim_only_own_segments_when_node_has_dash() -> None:
    """Node "a-b" and node "a" with token "b" never claim each other's segments."""
    ab = SegmentNames("a-b", "t")
    a = SegmentNames("a", "b")
    assert ab.owns("concord-a-b-t-g3") and ab.owns("concord-a-b-t-ctl")
    assert not a.owns("concord-a-b-t-g3")
    assert not a.owns("concord-a-b-t-ctl")
    assert a.owns("concord-a-b-g12")
    assert not a.owns("concord-a-b-gx")


def test_status_round_trips_when_written() -> None:
    """What the writer puts in a status slot is what a reader decodes."""
    buf = mmap.mmap(-1, CTL_HEADER_SIZE)
    words = memoryview(buf).cast("Q")
    try:
        values = [0] * STATUS_WORDS
        values[0:5] = [10, 11, 3, 123456, 9]
        values[9] = int(Role.LEADER)
        values[10:18] = leader_id_words("n2")
        write_status_words(words, values)
        snap = read_status_words(words)
        assert snap is not None
        st = status_from_words(*snap)
        assert (1, 10, 11, 3, 123456, 9) == (
            st.seq, st.applied_index, st.revision, st.term, st.leader_time_ms, st.ring_head
        )
        assert Role.LEADER == st.role
        assert "n2" == st.leader_id
        assert 1 == words[W_SEQ]
    finally:
        words.release()
        buf.close()


def test_status_read_survives_one_publish_when_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """One publish during a read leaves the read slot alone; two make the reader retry."""
    buf = mmap.mmap(-1, CTL_HEADER_SIZE)
    words = memoryview(buf).cast("Q")
    try:
        values = [0] * STATUS_WORDS
        values[0] = 1
        write_status_words(words, values)  # seq 1, slot 1
        seq = int(words[W_SEQ])
        values[0] = 2
        write_status_words(words, values)  # seq 2, slot 0: not the one seq 1 names
        base = STATUS_BASE[seq & 1]
        assert seq == words[base + 18]
        values[0] = 3
        write_status_words(words, values)  # seq 3 rewrote slot 1
        assert seq + 2 == words[base + 18]
        snap = read_status_words(words)
        assert snap is not None and 3 == snap[1][0]
    finally:
        words.release()
        buf.close()


def test_leader_id_rejected_when_too_long() -> None:
    """A leader id longer than the header field is an error, not a truncation."""
    with pytest.raises(ValueError):
        leader_id_words("x" * 57)
