"""The raft Message encoding of concord.codec (peer DATA frames)."""

from __future__ import annotations

import pytest

from concord import codec
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
