"""concord.storage.codec.EntryPacker and the spliced encodings (peer messages, writer PERSIST)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.storage import codec
from concord.ids import NodeId
from concord.node import log_writer as lw
from concord.raft.messages import (
    ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta, make_entry,
)
from concord.raft.state import HardState

_entries = st.lists(
    st.builds(
        Entry,
        term=st.integers(0, codec.MAX_UINT),
        index=st.integers(0, codec.MAX_UINT),
        type=st.sampled_from(list(EntryType)),
        data=st.binary(max_size=300),
        timestamp_ms=st.integers(0, codec.MAX_UINT),
    ),
    max_size=20,
)


def _append(entries: list[Entry], to: str = "n2", snapshot: Snapshot | None = None) -> Message:
    return Message(
        MessageType.APPEND, NodeId(to), NodeId("n1"), term=3, log_term=2, index=5,
        entries=tuple(entries), commit=7, context=b"ctx", snapshot=snapshot,
    )


@settings(derandomize=True, max_examples=100)
@given(_entries)
def test_spliced_message_is_byte_identical_when_packer_is_used(entries: list[Entry]) -> None:
    """encode_message with a packer gives the bytes of the plain encoding, which decode back."""
    msg = _append(entries)
    packer = codec.EntryPacker()
    assert codec.packb(codec.message_to_obj(msg)) == codec.encode_message(msg, packer)
    assert msg == codec.decode_message(codec.encode_message(msg, packer))


@settings(derandomize=True, max_examples=100)
@given(_entries, st.integers(1, codec.MAX_UINT - 20), st.booleans())
def test_spliced_persist_is_byte_identical_when_packer_is_used(
        drawn: list[Entry], first: int, must_sync: bool) -> None:
    """encode_persist with a packer gives the bytes of the plain encoding."""
    entries = [dataclasses.replace(e, index=i) for i, e in enumerate(drawn, first)]  # a run
    hs = HardState(3, NodeId("n1"), 2)
    snap = Snapshot(SnapshotMeta(4, 2, ConfState((NodeId("n1"),))), b"state")
    plain = lw.encode_persist(9, entries, hs, snap, must_sync)
    assert plain == lw.encode_persist(9, entries, hs, snap, must_sync, codec.EntryPacker())


def test_array_header_matches_msgpack_when_length_crosses_each_width() -> None:
    """The header bytes equal what packb writes for fixarray, array16 and array32 lengths."""
    for length in (0, 1, 15, 16, 65535, 65536):
        expected = codec.packb([None] * length)[: -length or None]
        assert expected == codec.array_header(length)


def test_entry_is_packed_once_when_several_messages_carry_it() -> None:
    """Two AppendEntries and a PERSIST carrying the same entry pack it once."""
    entry = Entry(2, 10, EntryType.NORMAL, b"put", 1234)
    packer = codec.EntryPacker()
    codec.encode_message(_append([entry], "n2"), packer)
    codec.encode_message(_append([entry], "n3"), packer)
    lw.encode_persist(1, [entry], None, None, True, packer)
    assert (1, 2) == (packer.misses, packer.hits)


def test_equal_entry_is_packed_again_when_it_is_another_object() -> None:
    """Memory is by identity: an equal but distinct Entry object is packed anew (same bytes)."""
    packer = codec.EntryPacker()
    first = packer.pack(Entry(1, 1, EntryType.NORMAL, b"a", 5))
    second = packer.pack(Entry(1, 1, EntryType.NORMAL, b"a", 5))
    assert (first, 2, 0) == (second, packer.misses, packer.hits)


def test_packer_forgets_oldest_when_max_entries_is_reached() -> None:
    """Past max_entries the oldest entry is forgotten and re-packed on its next use."""
    packer = codec.EntryPacker(max_entries=2)
    entries = [Entry(1, i, EntryType.NORMAL, b"x", 0) for i in range(3)]
    for e in entries:
        packer.pack(e)
    packer.pack(entries[2])
    packer.pack(entries[0])
    assert (2, 4, 1) == (len(packer), packer.misses, packer.hits)


def test_packer_keeps_within_max_bytes_when_entries_are_large() -> None:
    """Remembered bytes never exceed max_bytes; an entry larger than it is not remembered."""
    packer = codec.EntryPacker(max_bytes=250)
    small = [Entry(1, i, EntryType.NORMAL, b"y" * 100, 0) for i in range(3)]
    for e in small:
        packer.pack(e)
    big = Entry(1, 9, EntryType.NORMAL, b"z" * 300, 0)
    assert codec.encode_entry(big) == packer.pack(big)
    assert 2 == len(packer)


def test_packer_keeps_its_bounds_and_forgets_oldest_first_when_churned() -> None:
    """Over many evictions the packer stays within both bounds and keeps the newest entries."""
    packer = codec.EntryPacker(max_entries=64, max_bytes=64 * 60)
    entries = [Entry(1, i, EntryType.NORMAL, b"v" * (i % 50), i) for i in range(5000)]
    for e in entries:
        assert codec.encode_entry(e) == packer.pack(e)
        assert len(packer) <= 64 and packer.size_bytes <= 64 * 60
    kept = len(packer)
    hits = packer.hits
    for e in entries[-kept:]:
        packer.pack(e)
    packer.pack(entries[-kept - 1])
    assert (hits + kept, 5001) == (packer.hits, packer.misses)


@settings(derandomize=True, max_examples=100)
@given(_entries)
def test_decoded_entries_equal_constructed_ones_when_built_by_the_fast_path(entries: list[Entry]) -> None:
    """entries_from_obj's and make_entry's entries are equal, hash equal and frozen like Entry(...)."""
    decoded = codec.entries_from_obj(codec.entries_to_obj(entries))
    assert decoded == [make_entry(e.term, e.index, e.type, e.data, e.timestamp_ms) for e in entries]
    assert entries == decoded
    assert [hash(e) for e in entries] == [hash(e) for e in decoded]
    assert [repr(e) for e in entries] == [repr(e) for e in decoded]
    assert all(type(e) is Entry for e in decoded)
    for e in decoded:
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.term = 0  # type: ignore[misc]
