"""
etcd's native gRPC API spoken directly over HTTP/2 on plain sockets: the cheapest Python
driver of etcd we measured (docs/benchmarks.md "etcd's driver").

grpcio costs 200-350 µs of client CPU per unary call on this machine (its Cython layer,
call objects, completion queues and thread hops), three to four times what the Concord
driver spends per request; on 2 cores that CPU is taken from etcd's members. This driver
does what the Concord driver does for Concord: the wire format written by hand onto one
socket per logical client, all of a process's sockets in one epoll loop, one request in
flight per connection (closed loop). The bytes on the wire are a gRPC client's:

  connection  the HTTP/2 preface, SETTINGS (initial stream window 2^31-1), a connection
              WINDOW_UPDATE; the server's SETTINGS and PINGs are acknowledged, the
              connection window is topped up before it runs out
  flow        a request's DATA goes in frames of at most the server's MAX_FRAME_SIZE
              (16 KiB unless it says otherwise) and within its connection and stream
              windows (its INITIAL_WINDOW_SIZE, 64 KiB by default, plus its
              WINDOW_UPDATEs): the rest waits for the server's WINDOW_UPDATE (a 100 KiB
              value is larger than both)
  request     HEADERS (END_HEADERS; HPACK: :method POST, :scheme http, :path, :authority,
              content-type application/grpc, te trailers, all static-table indexed names
              with literal values, no dynamic table, no Huffman) then DATA (END_STREAM)
              carrying one gRPC message (flag 0, 4-byte length, the protobuf of etcd_grpc)
  response    HEADERS, DATA (one gRPC message), HEADERS with END_STREAM (the trailers)

Success is read from the frames, not from HPACK-decoded trailers (etcd's Go server
Huffman-codes them into its dynamic table; decoding them needs a full HPACK decoder): a
gRPC server sends a unary call's response message only when the call succeeded, and a
failed call ends with a trailers-only HEADERS (END_STREAM, no DATA) or RST_STREAM. So a
stream that ends with exactly one complete message is a success; anything else counts as
an error; a Range reply must also carry exactly one KeyValue (etcd_grpc.range_kv_count)
and a Put reply a ResponseHeader with a revision (etcd_grpc.header_revision).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.drivers import LoadResult, LoadSpec, key_name, read_endpoints, value_for
from bench.etcd_grpc import PUT, RANGE, encode_put, encode_range, header_revision, range_kv_count, target

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_WINDOW = 2**31 - 1
INITIAL_WINDOW = 65_535  # HTTP/2's windows before any SETTINGS or WINDOW_UPDATE
MAX_FRAME = 16_384  # HTTP/2's SETTINGS_MAX_FRAME_SIZE until the peer says otherwise
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 0x4, 0x5
_FRAME = struct.Struct(">BHBBI")  # length (high byte, low 16 bits), type, flags, stream id


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _hpack_literal(name_index: int, value: bytes) -> bytes:
    """Literal header field without indexing, name from the static table (RFC 7541 6.2.2)."""
    out = bytearray()
    if name_index < 15:
        out.append(name_index)
    else:
        out += bytes((0x0F, name_index - 15))  # 4-bit prefix integer, then the rest (< 128 here)
    if len(value) >= 127:
        raise ValueError("header value too long for this encoder")
    out.append(len(value))
    return bytes(out + value)


def request_headers(path: str, authority: str) -> bytes:
    """The HPACK header block of a gRPC unary call (static-table names, literal values)."""
    return (b"\x83"  # :method POST (static index 3)
            + b"\x86"  # :scheme http (static index 6)
            + _hpack_literal(4, path.encode())  # :path
            + _hpack_literal(1, authority.encode())  # :authority
            + _hpack_literal(31, b"application/grpc")  # content-type
            + b"\x00\x02te\x08trailers")  # te: trailers (a new name, literal)


def grpc_message(body: bytes) -> bytes:
    """The gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, body."""
    return b"\x00" + struct.pack(">I", len(body)) + body


def connection_preface() -> bytes:
    settings = struct.pack(">HI", 0x4, MAX_WINDOW)  # SETTINGS_INITIAL_WINDOW_SIZE
    return (PREFACE + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - INITIAL_WINDOW)))


@dataclass
class Stream:
    """What one response stream has delivered so far."""

    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int = -1  # RST_STREAM error code, -1 if none


class H2Conn:
    """One HTTP/2 connection carrying one gRPC unary call at a time."""

    def __init__(self, sock: socket.socket, path: str, authority: str) -> None:
        """Speak HTTP/2 on a connected socket: sends the preface at once."""
        self.sock = sock
        self.headers_frame_tail = request_headers(path, authority)
        self.buf = b""
        self.outbox = b""  # acks and window updates, sent with the next request when one follows
        self.stream_id = 1
        self.stream = Stream()
        self.window = MAX_WINDOW  # connection receive window, after the preface's WINDOW_UPDATE
        # What the server lets us send: its connection window, the current stream's, the
        # stream window it gives each new stream, its frame size limit; the request bytes
        # still waiting for room.
        self.send_window = INITIAL_WINDOW
        self.stream_send_window = INITIAL_WINDOW
        self.stream_window_init = INITIAL_WINDOW
        self.max_frame = MAX_FRAME
        self.pending = b""
        self.goaway = False
        self.sock.sendall(connection_preface())

    @classmethod
    def connect(cls, endpoint: str, path: str) -> H2Conn:
        """A connection to "http://host:port" for calls of `path`."""
        host, port = target(endpoint).rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return cls(sock, path, f"{host}:{port}")

    def send(self, body: bytes) -> None:
        """Start the next call (stream ids 1, 3, 5, ...)."""
        self.stream_id += 2
        sid = self.stream_id
        self.stream = Stream()
        self.stream_send_window = self.stream_window_init
        self.pending = grpc_message(body)
        self.sock.sendall(self.outbox + frame(HEADERS, END_HEADERS, sid, self.headers_frame_tail)
                          + self._data_frames())
        self.outbox = b""

    def _data_frames(self) -> bytes:
        """As much of the pending request as the server's windows and frame size allow."""
        out = b""
        while self.pending:
            n = min(len(self.pending), self.max_frame, self.send_window, self.stream_send_window)
            if n <= 0:
                break
            chunk, self.pending = self.pending[:n], self.pending[n:]
            self.send_window -= n
            self.stream_send_window -= n
            out += frame(DATA, 0 if self.pending else END_STREAM, self.stream_id, chunk)
        return out

    def _settings(self, payload: bytes) -> None:
        """Apply the server's SETTINGS that bound what we send."""
        for pos in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, pos)
            if key == S_INITIAL_WINDOW_SIZE:
                self.stream_send_window += value - self.stream_window_init
                self.stream_window_init = value
            elif key == S_MAX_FRAME_SIZE:
                self.max_frame = value

    def feed(self, chunk: bytes) -> bool:
        """
        Take bytes from the socket; True when the current call's stream has ended. Acks
        and window updates go out at once while the call is open, else with the next
        send() (one write, as gRPC's own transports coalesce them; close() drops them).
        """
        buf = self.buf + chunk if self.buf else chunk
        pos, n = 0, len(buf)
        replies = b""
        while n - pos >= 9:
            hi, lo, kind, flags, sid = _FRAME.unpack_from(buf, pos)
            length = hi << 16 | lo
            sid &= 0x7FFFFFFF
            if n - pos - 9 < length:
                break
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            if kind == DATA:
                self.window -= length
                if sid == self.stream_id:
                    self.stream.data += _unpad(payload, flags)
                    self.stream.ended |= bool(flags & END_STREAM)
            elif kind == HEADERS:
                if sid == self.stream_id and flags & END_STREAM:
                    self.stream.ended = True
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._settings(payload)
                    replies += frame(SETTINGS, ACK, 0, b"")
            elif kind == WINDOW_UPDATE:
                increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if sid == 0:
                    self.send_window += increment
                elif sid == self.stream_id:
                    self.stream_send_window += increment
            elif kind == PING:
                if not flags & ACK:
                    replies += frame(PING, ACK, 0, payload)
            elif kind == RST_STREAM:
                if sid == self.stream_id:
                    self.stream.reset = struct.unpack(">I", payload)[0]
                    self.stream.ended = True
            elif kind == GOAWAY:
                self.goaway = True
        self.buf = buf[pos:]
        if self.pending and not self.stream.ended:
            replies += self._data_frames()
        if self.window < MAX_WINDOW // 2:
            replies += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - self.window))
            self.window = MAX_WINDOW
        if self.stream.ended:
            self.outbox += replies
        elif replies:
            self.sock.sendall(self.outbox + replies)
            self.outbox = b""
        return self.stream.ended

    def reply(self) -> bytes:
        """The ended call's response message; ValueError unless it is exactly one message."""
        s = self.stream
        if s.reset >= 0:
            raise ValueError(f"stream reset by the server (HTTP/2 error code {s.reset})")
        data = bytes(s.data)
        if len(data) < 5:
            raise ValueError("call ended without a response message (a gRPC error status)")
        if data[0] != 0:
            raise ValueError("compressed gRPC message (none was asked for)")
        (length,) = struct.unpack_from(">I", data, 1)
        if len(data) != 5 + length:
            raise ValueError(f"gRPC message of {length} bytes framed in {len(data) - 5}")
        return data[5:]

    def close(self) -> None:
        self.sock.close()


def _unpad(payload: bytes, flags: int) -> bytes:
    if flags & PADDED:
        return payload[1:len(payload) - payload[0]]
    return payload


def calls_of(spec: LoadSpec) -> tuple[str, Callable[[int], bytes], Callable[[bytes, int], None]]:
    """(method path, key number -> request body, check(reply, key number): raises if wrong)."""
    op, _, level = spec.op.partition(":")
    if op == "put":
        def put_body(i: int) -> bytes:
            return encode_put(key_name(i).encode(), value_for(i, spec.value_bytes))

        def put_check(reply: bytes, i: int) -> None:
            if header_revision(reply) <= 0:
                raise ValueError("PutResponse without a revision")
        return PUT, put_body, put_check
    serializable = level == "serializable"

    def range_body(i: int) -> bytes:
        return encode_range(key_name(i).encode(), serializable)

    def range_check(reply: bytes, i: int) -> None:
        if range_kv_count(reply) != 1:
            raise KeyError(key_name(i))
    return RANGE, range_body, range_check


def run_h2(spec: LoadSpec, start: Callable[[], None]) -> LoadResult:
    """spec.clients closed-loop calls, each on its own HTTP/2 connection, in one epoll loop."""
    method, body, check = calls_of(spec)
    eps = read_endpoints(spec)
    conns = [H2Conn.connect(eps[(c + spec.proc_index) % len(eps)], method) for c in range(spec.clients)]
    by_fd = {cn.sock.fileno(): c for c, cn in enumerate(conns)}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    keyno = [spec.proc_index * 7919 + c * 104729 for c in range(spec.clients)]
    sent_at = [0.0] * spec.clients
    lat = array("d")
    ok = errors = issued = 0
    first_error = ""
    perf = time.perf_counter
    start()
    c0 = time.process_time()
    t0 = perf()
    deadline = t0 + spec.duration_s
    for c, cn in enumerate(conns):
        sent_at[c] = perf()
        cn.send(body(keyno[c] % spec.keys))
        issued += 1
    inflight = len(conns)
    while inflight:
        events = ep.poll(1.0)
        if not events:
            if perf() > deadline + 10:
                errors += inflight
                first_error = first_error or "no reply within 10 s"
                break
            continue
        for fd, _ in events:
            c = by_fd[fd]
            cn = conns[c]
            chunk = cn.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"etcd closed connection {c}")
            if not cn.feed(chunk):
                continue
            now = perf()
            try:
                check(cn.reply(), keyno[c] % spec.keys)
            except (ValueError, KeyError) as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            else:
                ok += 1
                lat.append((now - sent_at[c]) * 1e6)
            if now < deadline and issued < spec.max_ops and not cn.goaway:
                keyno[c] += 1
                sent_at[c] = perf()
                cn.send(body(keyno[c] % spec.keys))
                issued += 1
            else:
                inflight -= 1
    elapsed = perf() - t0
    cpu = time.process_time() - c0
    ep.close()
    for cn in conns:
        cn.close()
    return LoadResult(ok, errors, elapsed, lat, first_error, cpu)
