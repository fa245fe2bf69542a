"""concord.storage.codec: round trips and strict decoding."""

from __future__ import annotations

from typing import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.storage import codec
from concord.errors import ProtocolError
from concord.ids import NodeId
from concord.raft.messages import ConfState, Entry, EntryType, SnapshotMeta
from concord.raft.state import HardState

u64 = st.integers(min_value=0, max_value=codec.MAX_UINT)  # the codec's uint range
node_ids = st.lists(st.text(min_size=1, max_size=8).map(NodeId), max_size=4).map(tuple)
entries = st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=64), u64)
hard_states = st.builds(HardState, u64, st.none() | st.text(min_size=1, max_size=8).map(NodeId), u64)
conf_states = st.builds(ConfState, node_ids, node_ids, node_ids, node_ids, st.booleans())
metas = st.builds(SnapshotMeta, u64, u64, conf_states)


@settings(derandomize=True, max_examples=100)
@given(entries)
def test_entry_round_trips_when_encoded(entry: Entry) -> None:
    """Any entry decodes to an equal entry."""
    assert entry == codec.decode_entry(codec.encode_entry(entry))


@pytest.mark.slow
@settings(derandomize=True, max_examples=100)
@given(hard_states, conf_states, metas)
def test_state_types_round_trip_when_encoded(hs: HardState, cs: ConfState, meta: SnapshotMeta) -> None:
    """HardState, ConfState and SnapshotMeta decode to equal values."""
    assert hs == codec.decode_hard_state(codec.encode_hard_state(hs))
    assert cs == codec.decode_conf_state(codec.encode_conf_state(cs))
    assert meta == codec.decode_snapshot_meta(codec.encode_snapshot_meta(meta))


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([2, 1, 1, 0, b"", 0], "unsupported codec version 2"),
        ([1, 1, 1, 0, b""], "expected 6 fields"),
        ([1, -1, 1, 0, b"", 0], "term is negative"),
        ([1, True, 1, 0, b"", 0], "term is bool"),
        ([1, 1, 1, 9, b"", 0], "unknown entry type 9"),
        ([1, 1, 1, 0, "text", 0], "data is str"),
        ({"term": 1}, "expected an array"),
        ([], "empty array"),
    ],
)
def test_decode_entry_raises_when_malformed(obj: object, message: str) -> None:
    """Malformed entries raise a ProtocolError naming the problem."""
    with pytest.raises(ProtocolError, match=message):
        codec.decode_entry(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    ("decode", "data", "message"),
    [
        (codec.decode_entry, b"", "not valid msgpack"),
        (codec.decode_entry, b"\xc1", "not valid msgpack"),
        (codec.decode_entry, b"\x96\x01\x01\x01\x00\xc4\x00\x00\x00", "trailing bytes"),
        (codec.decode_hard_state, b"\x94\x01\x01\xa2\xff\xfe\x00", "not valid msgpack"),
        (codec.decode_snapshot_meta, b"\x94\x01\x01", "not valid msgpack"),
    ],
)
def test_decode_raises_when_bytes_are_not_one_msgpack_object(
    decode: Callable[[bytes], object], data: bytes, message: str
) -> None:
    """Empty, invalid, trailing, truncated or non-UTF-8 input raises ProtocolError."""
    with pytest.raises(ProtocolError, match=message):
        decode(data)


def test_decode_hard_state_raises_when_vote_is_empty() -> None:
    """An empty-string vote is not a node id."""
    with pytest.raises(ProtocolError, match="vote"):
        codec.decode_hard_state(msgpack.packb([1, 1, "", 0]))


def test_decode_conf_state_raises_when_auto_leave_is_not_bool() -> None:
    """auto_leave must be a bool."""
    with pytest.raises(ProtocolError, match="auto_leave"):
        codec.decode_conf_state(msgpack.packb([1, [], [], [], [], 1]))


def test_packb_gives_msgpack_bytes_when_its_packer_is_reused_after_a_failure_and_a_big_pack() -> None:
    """The per-thread Packer packs as msgpack.packb does, also after a refused object and
    after a pack past the size it keeps (which drops it)."""
    small = [1, "two", b"three", None, [4, {"five": 5.0}]]
    assert msgpack.packb(small, use_bin_type=True) == codec.packb(small)
    with pytest.raises(TypeError):
        codec.packb([1, object()])
    assert msgpack.packb(small, use_bin_type=True) == codec.packb(small)
    big = [b"x" * (codec._PACKER_KEEP_BYTES + 1)]
    assert msgpack.packb(big, use_bin_type=True) == codec.packb(big)
    assert not hasattr(codec._packers, "packer")
    assert msgpack.packb(small, use_bin_type=True) == codec.packb(small)
