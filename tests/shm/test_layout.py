"""The byte layout: sizes, names and the status slots."""

from __future__ import annotations

import mmap

import pytest

from concord.raft.state import Role
from concord.shm.layout import (
    CTL_HEADER_SIZE,
    RECORD_HEAD_SIZE,
    STATUS_BASE_WORD,
    S_SLOT_SEQ,
    STATUS_SLOT_WORDS,
    STATUS_SLOTS,
    status_base,
    STATUS_WORDS,
    W_SEQ,
    SegmentNames,
    align8,
    leader_words,
    node_part,
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
    """The status slots follow the 64-byte header and end where the ring starts."""
    assert 8 == STATUS_BASE_WORD and 0 == STATUS_SLOTS & (STATUS_SLOTS - 1)
    assert STATUS_WORDS + 1 <= STATUS_SLOT_WORDS  # + slot_seq
    assert status_base(1) == status_base(0) + STATUS_SLOT_WORDS
    assert status_base(STATUS_SLOTS) == status_base(0)  # a ring
    assert (status_base(STATUS_SLOTS - 1) + STATUS_SLOT_WORDS) * 8 == CTL_HEADER_SIZE


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
        values[10:30] = leader_words("n2", "tcp://10.1.2.3:7400")
        write_status_words(words, values)
        snap = read_status_words(words)
        assert snap is not None
        st = status_from_words(*snap)
        assert (1, 10, 11, 3, 123456, 9) == (
            st.seq, st.applied_index, st.revision, st.term, st.leader_time_ms, st.ring_head
        )
        assert Role.LEADER == st.role
        assert ("n2", "tcp://10.1.2.3:7400") == (st.leader_id, st.leader_client)
        assert 1 == words[W_SEQ]
        long_id = "nœud-" + "x" * 122  # 128 bytes, the longest id
        values[10:30] = leader_words(long_id, "tcp://10.1.2.3:7400")  # no room: unknown
        write_status_words(words, values)
        snap = read_status_words(words)
        assert snap is not None
        assert (long_id, None) == (status_from_words(*snap).leader_id,
                                   status_from_words(*snap).leader_client)
        values[10:30] = leader_words(None, "tcp://" + "h" * 130 + ":1")  # 138 bytes fit
        write_status_words(words, values)
        snap = read_status_words(words)
        assert snap is not None
        assert (None, "tcp://" + "h" * 130 + ":1") == (
            status_from_words(*snap).leader_id, status_from_words(*snap).leader_client
        )
    finally:
        words.release()
        buf.close()


def test_status_read_survives_publishes_until_its_slot_comes_round() -> None:
    """A read slot stays intact for STATUS_SLOTS - 1 later publishes, then is rewritten."""
    buf = mmap.mmap(-1, CTL_HEADER_SIZE)
    words = memoryview(buf).cast("Q")
    try:
        values = [0] * STATUS_WORDS
        values[0] = 1
        write_status_words(words, values)  # seq 1
        seq = int(words[W_SEQ])
        base = status_base(seq)
        for n in range(2, STATUS_SLOTS + 1):  # seq 2 .. S: other slots
            values[0] = n
            write_status_words(words, values)
            assert seq == words[base + S_SLOT_SEQ] and 1 == words[base]
        values[0] = STATUS_SLOTS + 1
        write_status_words(words, values)  # seq S + 1 rewrote the slot seq 1 used
        assert seq + STATUS_SLOTS == words[base + S_SLOT_SEQ]
        snap = read_status_words(words)
        assert snap is not None and STATUS_SLOTS + 1 == snap[1][0]
        assert STATUS_SLOTS + 1 == snap[0]
    finally:
        words.release()
        buf.close()


def test_leader_id_rejected_when_too_long() -> None:
    """A leader id longer than any valid id is an error, not a truncation."""
    assert 128 == leader_words("x" * 128)[0]
    with pytest.raises(ValueError):
        leader_words("x" * 129)


@pytest.mark.parametrize(
    "node_id, part",
    [("n1", "n1"), ("db-east.1", "db_east.1"), ("nœud", "n_ud"), ("x" * 64, "x" * 32)],
)
def test_node_part_is_a_valid_segment_name_when_id_is_any_valid_id(
    node_id: str, part: str
) -> None:
    """Every valid id gives a name part SegmentNames accepts (ASCII, at most 32)."""
    assert part == node_part(node_id)
    assert SegmentNames(node_part(node_id), "123x9f3a01").ctl.startswith(f"concord-{part}-")
