"""The READY frame and the ready line."""

from __future__ import annotations

import struct

import pytest

from supervisor.child import notify_ready, supervisor_alive
from supervisor.readiness import (
    MAX_PAYLOAD_BYTES,
    FrameDecoder,
    InfoValue,
    ReadinessProtocolError,
    encode_ready,
    format_ready_line,
    parse_ready_line,
)


def test_info_round_trips_when_frames_arrive_byte_by_byte() -> None:
    """The decoder reassembles frames split across reads, several in a row."""
    first: dict[str, InfoValue] = {"client": "tcp://127.0.0.1:7400", "port": 7400, "leader": False}
    second: dict[str, InfoValue] = {"pid": 42}
    data = encode_ready(first) + encode_ready(second)
    decoder = FrameDecoder()
    messages = []
    for i in range(len(data)):
        messages.extend(decoder.feed(data[i : i + 1]))
    assert [first, second] == [dict(m.info) for m in messages]


def test_frame_starts_with_version_and_type_when_encoded() -> None:
    """Byte layout: version 1, type 1 (READY), big-endian length, JSON payload."""
    frame = encode_ready({"a": 1})
    assert (1, 1, len(b'{"a":1}')) == struct.unpack(">BBI", frame[:6])
    assert b'{"a":1}' == frame[6:]


@pytest.mark.parametrize(
    "data, message",
    [
        (bytes([2, 1, 0, 0, 0, 0]), "bad ready frame header version=2"),
        (bytes([1, 9, 0, 0, 0, 0]), "bad ready frame header version=1 type=9"),
        (struct.pack(">BBI", 1, 1, MAX_PAYLOAD_BYTES + 1), "length="),
        (struct.pack(">BBI", 1, 1, 2) + b"[]", "payload must be an object"),
        (struct.pack(">BBI", 1, 1, 1) + b"\xff", "not UTF-8 JSON"),
        (struct.pack(">BBI", 1, 1, 8) + b'{"a":[]}', "value for 'a' must be str, int or bool"),
    ],
)
def test_decoder_raises_when_frame_is_malformed(data: bytes, message: str) -> None:
    """Anything but a version-1 READY frame with a flat object payload is rejected."""
    with pytest.raises(ReadinessProtocolError, match=message):
        FrameDecoder().feed(data)


def test_encode_raises_when_info_is_too_large_or_nested() -> None:
    """A frame must fit one atomic pipe write; values are flat."""
    with pytest.raises(ReadinessProtocolError, match="more than"):
        encode_ready({"blob": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(ReadinessProtocolError, match="must be str, int or bool"):
        encode_ready({"nested": {"a": 1}})  # type: ignore[dict-item]


def test_ready_line_names_every_endpoint_in_order_when_formatted() -> None:
    """The node's contract line, and its exact inverse."""
    endpoints = {
        "client": "tcp://127.0.0.1:7400",
        "peer": "tcp://127.0.0.1:7500",
        "events": "tcp://127.0.0.1:7600",
    }
    line = format_ready_line("concord", "n1", endpoints)
    assert (
        "concord ready node=n1 client=tcp://127.0.0.1:7400 peer=tcp://127.0.0.1:7500 "
        "events=tcp://127.0.0.1:7600"
    ) == line
    assert ("concord", {"node": "n1", **endpoints}) == parse_ready_line(line + "\n")


@pytest.mark.parametrize(
    "product, node, endpoints, message",
    [
        ("Concord", "n1", {}, "product must match"),
        ("concord", "n 1", {}, "value for node must be non-empty"),
        ("concord", "n1", {"Client": "x"}, "key must match"),
        ("concord", "n1", {"node": "x"}, "key must match"),
        ("concord", "n1", {"client": ""}, "value for client must be non-empty"),
    ],
)
def test_format_raises_when_a_field_would_break_the_line(
    product: str, node: str, endpoints: dict[str, str], message: str
) -> None:
    """Keys are lower-case identifiers; values have no whitespace."""
    with pytest.raises(ReadinessProtocolError, match=message):
        format_ready_line(product, node, endpoints)


@pytest.mark.parametrize(
    "line", ["", "concord started node=n1", "concord ready client=x", "concord ready node=n1 x"]
)
def test_parse_raises_when_line_is_not_a_ready_line(line: str) -> None:
    """Other output is never mistaken for the ready line."""
    with pytest.raises(ReadinessProtocolError):
        parse_ready_line(line)


def test_child_helpers_are_inert_when_not_under_a_supervisor() -> None:
    """Outside a supervised child: notify_ready sends nothing, the supervisor counts as alive."""
    assert False is notify_ready({"pid": 1})
    assert True is supervisor_alive()
