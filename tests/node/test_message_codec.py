"""The raft Message encoding of concord.storage.codec (peer DATA frames)."""

from __future__ import annotations

import pytest

from concord.storage import codec
from concord.errors import RemoteProtocolError
from concord.ids import NodeId
from concord.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)


def _full_message() -> Message:
    return Message(
        MessageType.SNAPSHOT, NodeId("n2"), NodeId("n1"), term=3, log_term=2, index=5,
        entries=(Entry(1, 2, EntryType.NORMAL, b"x", 4),), commit=7, reject=True,
        reject_hint=1, context=b"ctx",
        snapshot=Snapshot(SnapshotMeta(3, 1, ConfState((NodeId("n1"),))), b"chunk"),
        snapshot_offset=9, snapshot_done=True,
    )


def test_message_round_trips_when_every_field_is_set() -> None:
    """A message with every field set decodes to an equal message."""
    msg = _full_message()
    assert msg == codec.decode_message(codec.encode_message(msg))


def test_message_round_trips_when_fields_are_defaults() -> None:
    """A heartbeat with default fields decodes to an equal message."""
    msg = Message(MessageType.HEARTBEAT, NodeId("a"), NodeId("b"), term=1)
    assert msg == codec.decode_message(codec.encode_message(msg))


def test_decode_refuses_when_type_is_local() -> None:
    """A local message type (HUP) never crosses the network."""
    obj = codec.message_to_obj(Message(MessageType.HEARTBEAT, NodeId("a"), NodeId("b")))
    obj[1] = int(MessageType.HUP)
    with pytest.raises(RemoteProtocolError):
        codec.decode_message(codec.packb(obj))


def test_decode_refuses_when_version_is_unknown() -> None:
    """Another codec version is refused, never guessed."""
    obj = codec.message_to_obj(Message(MessageType.HEARTBEAT, NodeId("a"), NodeId("b")))
    obj[0] = 2
    with pytest.raises(RemoteProtocolError):
        codec.decode_message(codec.packb(obj))


@pytest.mark.parametrize("field", [
    "term", "log_term", "index", "commit", "reject_hint", "snapshot_offset", "entry_term",
    "entry_index", "entry_timestamp", "snapshot_index", "snapshot_term",
])
def test_decode_refuses_when_a_counter_is_over_max_uint(field: str) -> None:
    """A term, index or timestamp over MAX_UINT is malformed: Raft adds to them."""
    big = codec.MAX_UINT + 1
    msg = _full_message()
    obj = codec.message_to_obj(msg)
    positions = {"term": 4, "log_term": 5, "index": 6, "commit": 8, "reject_hint": 10,
                 "snapshot_offset": 13}
    entry, snapshot_meta = obj[7][0], obj[12][0]  # type: ignore[index]
    if field in positions:
        obj[positions[field]] = big
    elif field.startswith("entry_"):
        entry[{"entry_term": 1, "entry_index": 2, "entry_timestamp": 5}[field]] = big
    else:
        snapshot_meta[{"snapshot_index": 1, "snapshot_term": 2}[field]] = big
    with pytest.raises(RemoteProtocolError, match="over the limit"):
        codec.decode_message(codec.packb(obj))
    assert msg == codec.decode_message(codec.encode_message(msg))  # MAX_UINT itself is fine


def test_decode_accepts_counters_when_at_max_uint() -> None:
    """MAX_UINT is the largest accepted value."""
    msg = Message(MessageType.HEARTBEAT, NodeId("a"), NodeId("b"), term=codec.MAX_UINT,
                  commit=codec.MAX_UINT)
    assert msg == codec.decode_message(codec.encode_message(msg))
