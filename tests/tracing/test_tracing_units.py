"""Tracing's wire pieces: the APPEND trace map, the sampled flag (concord/codec.py, concord/tracing.py)."""

from __future__ import annotations

import pytest

from concord.storage import codec
from concord.errors import RemoteProtocolError
from concord.ids import NodeId
from concord.raft.messages import Entry, EntryType, Message, MessageType
from concord.tracing import current_traceparent, is_sampled

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _append() -> Message:
    entries = tuple(Entry(term=2, index=i, type=EntryType.NORMAL, data=b"x%d" % i, timestamp_ms=5)
                    for i in (7, 8))
    return Message(MessageType.APPEND, NodeId("n2"), NodeId("n1"), term=2, log_term=2, index=6,
                   entries=entries, commit=6)


@pytest.mark.parametrize("packer", [None, codec.EntryPacker()])
def test_append_round_trips_with_its_trace_when_entries_are_sampled(packer: codec.EntryPacker | None) -> None:
    """The optional 16th item carries {index: traceparent}; the message itself is unchanged."""
    msg = _append()
    data = codec.encode_message(msg, packer, {8: TP})
    assert (msg, {8: TP}) == codec.decode_message_and_trace(data)
    assert msg == codec.decode_message(data)  # a reader with tracing off ignores it


def test_append_bytes_are_unchanged_when_nothing_is_traced() -> None:
    """No trace map, no 16th item: the untraced encoding is the pre-tracing one."""
    msg = _append()
    assert codec.packb(codec.message_to_obj(msg)) == codec.encode_message(msg, codec.EntryPacker())
    assert (msg, None) == codec.decode_message_and_trace(codec.encode_message(msg))


def test_malformed_trace_is_refused_when_decoding() -> None:
    """A trace item that is not [[uint, str]...] makes the message malformed."""
    obj = codec.message_to_obj(_append()) + [[["7", TP]]]
    with pytest.raises(RemoteProtocolError, match="trace"):
        codec.decode_message_and_trace(codec.packb(obj))


def test_sampled_flag_is_read_when_the_traceparent_has_it() -> None:
    """Only the flags' low bit counts; a wrong length is never sampled."""
    assert is_sampled(TP) and is_sampled(TP[:-2] + "03")
    assert not any(is_sampled(t) for t in (None, TP[:-2] + "00", TP + "0", "01"))


def test_no_traceparent_is_sent_when_no_span_is_active() -> None:
    """Outside a recording span the client adds nothing to the request."""
    assert current_traceparent() is None
