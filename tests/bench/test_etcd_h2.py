"""The bench's etcd driver over raw HTTP/2 (bench/etcd_h2.py): request bytes and response parsing."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from bench.drivers import LoadSpec, value_for
from bench.etcd_grpc import PUT, RANGE, encode_put, encode_range, header_revision
from bench.etcd_h2 import (DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, PING, PREFACE, RST_STREAM,
                           SETTINGS, WINDOW_UPDATE, ACK, H2Conn, calls_of, connection_preface, frame,
                           grpc_message, request_headers)

PUT_REPLY = b"\x0a\x06\x18\x07\x20\x02\x08\x01"  # PutResponse{header{revision 7, raft_term 2, cluster_id 1}}


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of every frame in `data`."""
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        out.append((kind, flags, sid, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data)
    return out


@pytest.fixture
def conn() -> Iterator[tuple[H2Conn, socket.socket]]:
    """An H2Conn on one end of a socket pair, the test playing the server on the other."""
    client, server = socket.socketpair()
    c = H2Conn(client, PUT, "127.0.0.1:2379")
    assert connection_preface() == server.recv(1 << 16)
    yield c, server
    client.close()
    server.close()


def _read_all(sock: socket.socket) -> bytes:
    """Every byte the client has written so far."""
    sock.setblocking(False)
    out = b""
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return out
            out += chunk
    except BlockingIOError:
        return out
    finally:
        sock.setblocking(True)


def test_request_bytes_are_a_grpc_unary_call_when_encoded_by_hand() -> None:
    """HPACK block (static names, literal values), frame header layout, gRPC message prefix."""
    block = request_headers("/etcdserverpb.KV/Put", "127.0.0.1:2379")
    assert block == (b"\x83\x86" + b"\x04\x14/etcdserverpb.KV/Put" + b"\x01\x0e127.0.0.1:2379"
                     + b"\x0f\x10\x10application/grpc" + b"\x00\x02te\x08trailers")
    assert frame(DATA, END_STREAM, 3, b"ab") == b"\x00\x00\x02\x00\x01\x00\x00\x00\x03ab"
    assert grpc_message(b"xyz") == b"\x00\x00\x00\x00\x03xyz"
    pre = connection_preface()
    assert pre.startswith(PREFACE)
    (s_kind, _, s_sid, s_payload), (w_kind, _, w_sid, w_payload) = _frames(pre[len(PREFACE):])
    assert (SETTINGS, 0, struct.pack(">HI", 4, 2**31 - 1)) == (s_kind, s_sid, s_payload)
    assert (WINDOW_UPDATE, 0, 2**31 - 1 - 65_535) == (w_kind, w_sid, struct.unpack(">I", w_payload)[0])


def test_send_uses_odd_increasing_streams_when_calls_follow_each_other(conn: tuple[H2Conn, socket.socket]) -> None:
    c, server = conn
    c.send(encode_put(b"k", b"v"))
    c.send(encode_put(b"k", b"w"))
    got = _frames(_read_all(server))
    assert [(HEADERS, END_HEADERS, 3), (DATA, END_STREAM, 3), (HEADERS, END_HEADERS, 5),
            (DATA, END_STREAM, 5)] == [g[:3] for g in got]
    assert got[1][3] == grpc_message(encode_put(b"k", b"v"))


def test_reply_is_the_message_when_the_stream_ends_after_data_split_across_reads(
        conn: tuple[H2Conn, socket.socket]) -> None:
    """Response headers, DATA, trailers: done only at the trailers, bytes split anywhere."""
    c, _ = conn
    c.send(encode_put(b"k", b"v"))
    wire = (frame(HEADERS, END_HEADERS, 3, b"\x88") + frame(DATA, 0, 3, grpc_message(PUT_REPLY))
            + frame(HEADERS, END_HEADERS | END_STREAM, 3, b"\xbe"))
    ended = [c.feed(wire[i:i + 7]) for i in range(0, len(wire), 7)]
    assert ended[-1] and not any(ended[:-1])
    assert 7 == header_revision(c.reply())


def test_reply_fails_when_the_call_ends_in_a_grpc_error(conn: tuple[H2Conn, socket.socket]) -> None:
    """A trailers-only response (an error status, no message) and a reset stream are errors."""
    c, _ = conn
    c.send(encode_put(b"", b"v"))
    assert c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 3, b"\x88\x40\x0bgrpc-status\x013"))
    with pytest.raises(ValueError, match="without a response message"):
        c.reply()
    c.send(encode_put(b"k", b"v"))
    assert c.feed(frame(RST_STREAM, 0, 5, struct.pack(">I", 8)))
    with pytest.raises(ValueError, match="reset by the server"):
        c.reply()


def test_reply_fails_when_the_message_is_truncated_or_belongs_to_another_stream(
        conn: tuple[H2Conn, socket.socket]) -> None:
    c, _ = conn
    c.send(encode_range(b"k", True))
    msg = grpc_message(PUT_REPLY)
    assert not c.feed(frame(DATA, 0, 1, msg))  # an old stream's data is not this call's
    assert not c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xbe"))  # nor its end
    assert c.feed(frame(DATA, END_STREAM, 3, msg[:-1]))
    with pytest.raises(ValueError, match="framed in"):
        c.reply()
    c.send(encode_range(b"k", True))
    assert not c.feed(frame(DATA, 0, 5, msg + msg))  # two messages: not a unary reply
    assert c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\xbe"))
    with pytest.raises(ValueError, match="framed in"):
        c.reply()


def test_padded_data_is_unpadded_when_the_server_pads(conn: tuple[H2Conn, socket.socket]) -> None:
    c, _ = conn
    c.send(encode_range(b"k", True))
    msg = grpc_message(PUT_REPLY)
    assert c.feed(frame(DATA, PADDED | END_STREAM, 3, b"\x02" + msg + b"\x00\x00"))
    assert PUT_REPLY == c.reply()


def test_settings_and_pings_are_acknowledged_and_the_window_topped_up_when_the_server_sends_them(
        conn: tuple[H2Conn, socket.socket]) -> None:
    c, server = conn
    c.send(encode_range(b"k", True))
    _read_all(server)
    c.window = 1000  # most of the connection window used
    assert not c.feed(frame(SETTINGS, 0, 0, b"") + frame(SETTINGS, ACK, 0, b"")
                      + frame(PING, 0, 0, b"12345678") + frame(PING, ACK, 0, b"abcdefgh"))
    got = _frames(_read_all(server))
    assert [(SETTINGS, ACK, 0, b""), (PING, ACK, 0, b"12345678")] == got[:2]
    assert (WINDOW_UPDATE, 0, 0, 2**31 - 1 - 1000) == got[2][:3] + struct.unpack(">I", got[2][3])
    assert 3 == len(got) and c.window == 2**31 - 1


def test_range_method_path_when_reads_are_sent() -> None:
    assert b"\x04\x16/etcdserverpb.KV/Range" in request_headers(RANGE, "h:1")


def test_header_revision_reads_the_response_header_when_present() -> None:
    """Put replies count only with a ResponseHeader revision (etcd_grpc.header_revision)."""
    assert 7 == header_revision(PUT_REPLY)
    assert 300 == header_revision(b"\x0a\x03\x18\xac\x02" + b"\x12\x00")  # a two-byte varint, then prev_kv
    assert 0 == header_revision(b"\x0a\x02\x08\x01")  # a header without a revision
    assert 0 == header_revision(b"")
    with pytest.raises(ValueError, match="wire type"):
        header_revision(b"\x0d\x00\x00\x00\x00")  # a fixed32 field: not in these messages


def test_calls_of_builds_the_bodies_and_rejects_wrong_replies_when_checked() -> None:
    """Puts carry the bench's value and need a revision; Ranges need exactly one KeyValue."""
    spec = LoadSpec("etcd", ("http://127.0.0.1:2379",), "put", 1, 1.0, 10, 100, 0, value_bytes=16)
    method, body, check = calls_of(spec)
    assert (PUT, encode_put(b"k0000007", value_for(7, 16))) == (method, body(7))
    check(PUT_REPLY, 7)
    with pytest.raises(ValueError, match="without a revision"):
        check(b"\x0a\x02\x08\x01", 7)
    for level, serializable in (("serializable", True), ("linearizable", False)):
        method, body, check = calls_of(LoadSpec("etcd", (), f"get:{level}", 1, 1.0, 10, 100, 0))
        assert (RANGE, encode_range(b"k0000003", serializable)) == (method, body(3))
        check(b"\x12\x05\x0a\x01k\x2a\x00", 3)
        with pytest.raises(KeyError, match="k0000003"):
            check(b"\x0a\x02\x08\x01\x20\x00", 3)


def test_acks_ride_with_the_next_request_when_the_call_has_ended(conn: tuple[H2Conn, socket.socket]) -> None:
    """A PING that arrives with the end of a call is acked in the next request's write."""
    c, server = conn
    c.send(encode_range(b"k", True))
    _read_all(server)
    assert c.feed(frame(PING, 0, 0, b"12345678") + frame(DATA, END_STREAM, 3, grpc_message(PUT_REPLY)))
    assert b"" == _read_all(server)
    c.send(encode_range(b"k", True))
    got = _frames(_read_all(server))
    assert [(PING, ACK, 0), (HEADERS, END_HEADERS, 5), (DATA, END_STREAM, 5)] == [g[:3] for g in got]
    assert b"12345678" == got[0][3]


def test_large_request_waits_for_the_servers_window_when_it_exceeds_frame_size_and_window(
    conn: tuple[H2Conn, socket.socket],
) -> None:
    """A 100 KiB put: frames of at most 16 KiB, 64 KiB until the server opens its windows."""
    c, server = conn
    body = encode_put(b"k0000001", value_for(1, 100 * 1024))
    c.send(body)
    first = _frames(_read_all(server))
    sent = [f for f in first if f[0] == DATA]
    assert HEADERS == first[0][0] and all(len(f[3]) <= 16_384 for f in sent)
    assert 65_535 == sum(len(f[3]) for f in sent) and not any(f[1] & END_STREAM for f in sent)
    # The server raises its frame size and opens the connection and the stream window.
    c.feed(frame(SETTINGS, 0, 0, struct.pack(">HI", 0x5, 1 << 20))
           + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
           + frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 1 << 20)))
    rest = [f for f in _frames(_read_all(server)) if f[0] == DATA]
    assert 1 == len(rest) and rest[0][1] & END_STREAM and 3 == rest[0][2]
    assert grpc_message(body) == b"".join(f[3] for f in sent + rest)
