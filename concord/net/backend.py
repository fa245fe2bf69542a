"""
The link between the client front door and its backends (read workers, raft worker).

Backends are other processes on the same host. The front door binds one ROUTER on an
ipc endpoint; each backend connects one DEALER (`BackendLink`) with a unique routing id
(its name) and announces its role with HELLO, at start and then every
`heartbeat_interval_s` (so a restarted front door learns its backends within one
interval, and a silent backend is forgotten). The front door hands each backend the
client's request payload, already validated, under a token; the backend answers with a
complete reply payload (built with concord.net.wire, carrying the request's id) under
the same token. Client identities never reach backends.

Wire layout (backend link v5). Each message is two frames after the ROUTER's routing-id
frame:

    frame 0  header, 10 bytes
               byte 0     version = 5 (BACKEND_VERSION)
               byte 1     kind    1 = HELLO    backend -> front door, token 0,
                                               payload = role, UTF-8 ("read" | "raft")
                                  2 = REQUEST  front door -> backend,
                                               payload = the client's request (msgpack map)
                                  3 = REPLY    backend -> front door,
                                               payload = the reply (msgpack map)
                                  4 = HANDOFF  read worker -> front door, payload = the
                                               request of `token`, unchanged: forward it
                                               to the raft worker under the same token
                                  5 = REPLIES  backend -> front door, token 0, payload =
                                               several replies (below), each handled as
                                               if it had come as its own REPLY
                                  6 = REQUESTS front door -> backend, token 0, payload =
                                               several requests (below), each taken as
                                               if it had come as its own REQUEST, in order
                                  7 = BARRIER  front door -> raft worker, payload empty:
                                               answer once a read index taken after
                                               this message arrived is applied and
                                               published to shared memory
                                  8 = BARRIER_ANSWER raft worker -> front door, payload
                                               = the answer (below) to BARRIER `token`
               bytes 2-9  token   u64 big-endian; chosen by the front door per request
    frame 1  payload

The payload of REPLIES and REQUESTS (`pack_batch`): count u32 big-endian (>= 1), then
`count` index items (token u64 big-endian, length u32 big-endian), then the `count`
payloads concatenated in index order; their lengths add up to the rest of the frame
exactly. The raft worker sends the replies of one round this way, and the front door
the requests for one backend that one pass of its loop received (one message, one
wake-up of the receiver, instead of one per request or reply). A batch holds at most
MAX_BATCH_BYTES of payloads; a lone or larger payload goes alone (REQUEST, REPLY).

The payload of BARRIER_ANSWER (`pack_barrier_answer`, `pack_barrier_error`) is one
msgpack map: `{"index": int >= 0}`, the raft worker's applied index when the barrier's
ReadIndex read was released (at least its read index; shared memory is published at
least that far when the answer leaves), or `{"error": str, "message": str, "leader":
str | nil}`, the error every read of the barrier gets (the codes and messages of a
strong read's errors). The front door answers the strong reads it held for the barrier
from its own view of shared memory once that view reached the index
(concord.net.door_strong).

v2 added HANDOFF (a `leader` read at a leader without a valid lease: the raft worker
serves it after a ReadIndex round), v3 REPLIES, v4 REQUESTS, v5 BARRIER and
BARRIER_ANSWER. Older versions are not
read: both ends are children of one supervisor and run the same code.

Anything else is discarded and counted; a malformed REQUESTS message is discarded
whole (none of its requests is taken) with a warning naming the fault, and so is a
BARRIER with a payload or sent to a read worker. Never blocks: sends are NOBLOCK; the DEALER has
IMMEDIATE=1, so while the front door is down replies are dropped (their clients time
out) rather than queued for a front door that no longer knows their tokens.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import msgpack
import zmq

from concord.errors import ConfigError, ShuttingDownError
from concord.net._zmqutil import new_socket, send_frames
from concord.net.wire import Backend, pack

__all__ = [
    "BACKEND_VERSION",
    "KIND_BARRIER",
    "KIND_BARRIER_ANSWER",
    "KIND_HANDOFF",
    "KIND_HELLO",
    "KIND_REQUEST",
    "KIND_REPLY",
    "KIND_REPLIES",
    "KIND_REQUESTS",
    "MAX_BATCH_BYTES",
    "BackendLink",
    "BackendRequest",
    "BarrierError",
    "batches",
    "pack_barrier_answer",
    "pack_barrier_error",
    "pack_batch",
    "pack_header",
    "unpack_barrier_answer",
    "unpack_batch",
    "unpack_header",
]

log = logging.getLogger(__name__)

BACKEND_VERSION = 5
KIND_HELLO = 1
KIND_REQUEST = 2
KIND_REPLY = 3
KIND_HANDOFF = 4
KIND_REPLIES = 5
KIND_REQUESTS = 6
KIND_BARRIER = 7
KIND_BARRIER_ANSWER = 8
_KINDS = frozenset((KIND_HELLO, KIND_REQUEST, KIND_REPLY, KIND_HANDOFF, KIND_REPLIES, KIND_REQUESTS,
                    KIND_BARRIER, KIND_BARRIER_ANSWER))
_HEADER = struct.Struct(">BBQ")
HEADER_SIZE = _HEADER.size
_COUNT = struct.Struct(">I")
_ITEM_SIZE = struct.calcsize(">QI")
#: A REPLIES or REQUESTS message holds at most this many payload bytes; a longer payload
#: goes alone (REPLY, REQUEST).
MAX_BATCH_BYTES = 1 << 20

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


def pack_header(kind: int, token: int) -> bytes:
    """The 10-byte header of a backend-link message."""
    return _HEADER.pack(BACKEND_VERSION, kind, token)


def unpack_header(header: bytes) -> tuple[int, int] | None:
    """(kind, token) of a valid header of this version, else None."""
    if len(header) != HEADER_SIZE:
        return None
    version, kind, token = _HEADER.unpack(header)
    if version != BACKEND_VERSION or kind not in _KINDS:
        return None
    return kind, token


def pack_batch(items: Sequence[tuple[int, bytes]]) -> bytes:
    """The payload of a REPLIES or REQUESTS message: `items` as (token, payload), in order."""
    flat: list[int] = []
    for token, payload in items:
        flat += (token, len(payload))
    index = struct.pack(f">I{'QI' * len(items)}", len(items), *flat)
    return b"".join((index, *(payload for _, payload in items)))


def batches(items: Sequence[tuple[int, bytes]], max_bytes: int = MAX_BATCH_BYTES
            ) -> Iterator[list[tuple[int, bytes]]]:
    """
    `items` (token, payload) cut, in order, into runs of at most `max_bytes` of payloads
    each (a payload larger than that is a run of its own): one message per run.
    """
    batch: list[tuple[int, bytes]] = []
    size = 0
    for item in items:
        if batch and size + len(item[1]) > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item[1])
    if batch:
        yield batch


def unpack_batch(payload: bytes) -> list[tuple[int, bytes]] | None:
    """The (token, payload) pairs of a REPLIES or REQUESTS payload, None if it is malformed."""
    if len(payload) < _COUNT.size:
        return None
    (count,) = _COUNT.unpack_from(payload)
    start = _COUNT.size + count * _ITEM_SIZE
    if count == 0 or len(payload) < start:
        return None
    index = struct.unpack_from(f">{'QI' * count}", payload, _COUNT.size)
    out: list[tuple[int, bytes]] = []
    for i in range(0, 2 * count, 2):
        end = start + index[i + 1]
        out.append((index[i], payload[start:end]))
        start = end
    return out if start == len(payload) else None


@dataclass(frozen=True, slots=True)
class BarrierError:
    """A BARRIER_ANSWER's error: what every read of the barrier gets (wire error fields)."""

    code: str
    message: str
    leader: str | None


def pack_barrier_answer(index: int) -> bytes:
    """The payload of a BARRIER_ANSWER that lets the door read at `index` or later."""
    return pack({"index": index})


def pack_barrier_error(code: str, message: str, leader: str | None) -> bytes:
    """The payload of a BARRIER_ANSWER that fails the barrier's reads with this error."""
    return pack({"error": code, "message": message, "leader": leader})


def unpack_barrier_answer(payload: bytes) -> int | BarrierError | str:
    """
    The read index or the error of a BARRIER_ANSWER payload; a str names what is wrong
    with a malformed one.
    """
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError) as exc:  # msgpack's errors subclass ValueError
        return f"not one msgpack value ({exc})"
    if not isinstance(obj, dict):
        return f"not a map but {type(obj).__name__}"
    keys = set(obj)
    if keys == {"index"}:
        index = obj["index"]
        if type(index) is not int or index < 0:
            return f"index must be an int >= 0, got {index!r}"
        return index
    if keys == {"error", "message", "leader"}:
        code, message, leader = obj["error"], obj["message"], obj["leader"]
        if not isinstance(code, str) or not code or not isinstance(message, str):
            return f"error and message must be strings, got {code!r} and {message!r}"
        if leader is not None and not isinstance(leader, str):
            return f"leader must be a string or nil, got {leader!r}"
        return BarrierError(code, message, leader)
    return f"fields {sorted(map(str, keys))} are neither [index] nor [error, leader, message]"


_REPLIES_HEADER = pack_header(KIND_REPLIES, 0)


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """
    One request handed to a backend: answer it with `BackendLink.reply(token, ...)`; or,
    with `barrier` (raft worker only, empty payload), a BARRIER to answer with
    `BackendLink.answer_barrier(token, ...)`.
    """

    token: int
    payload: bytes
    barrier: bool = False


class BackendLink:
    """
    A backend's side of the front-door link (one DEALER).

    Args:
        ctx: this process's zmq context (not owned).
        endpoint: the front door's backend endpoint (ipc://...).
        role: Backend.READ for read workers, Backend.RAFT for the raft worker.
        name: unique routing id among this front door's backends, e.g. "read-0".
        heartbeat_interval_s: how often HELLO is repeated.
        clock: monotonic seconds; injected for tests.

    Raises:
        ConfigError: bad name or endpoint.
    """

    def __init__(
        self,
        ctx: Context,
        endpoint: str,
        role: Backend,
        name: str,
        heartbeat_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sndhwm: int = 10000,
    ) -> None:
        raw = name.encode("utf-8") if isinstance(name, str) else b""
        if not raw or len(raw) > 255 or raw[0] == 0:
            raise ConfigError(f"backend name {name!r} must be 1..255 UTF-8 bytes not starting with NUL")
        if heartbeat_interval_s <= 0:
            raise ConfigError(f"backend heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
        self.role = role
        self.name = name
        self._clock = clock
        self._interval = heartbeat_interval_s
        self._hello = (pack_header(KIND_HELLO, 0), role.value.encode())
        self._closed = False
        self.dropped_replies = 0
        self.bad_messages = 0  # discarded: malformed, or not a request
        self._queued: deque[BackendRequest] = deque()  # the rest of a batch recv() split
        sock = new_socket(ctx, zmq.DEALER, f"backend link {name}")
        try:
            sock.setsockopt(zmq.ROUTING_ID, raw)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, sndhwm)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ConfigError(f"cannot connect backend {name} to {endpoint}: {exc}") from exc
        self.socket = sock
        self._next_hello_at = clock()

    def register(self, poller: zmq.Poller) -> None:
        """Register the link's socket for POLLIN."""
        poller.register(self.socket, zmq.POLLIN)

    def next_deadline(self) -> float:
        """Clock time of the next HELLO."""
        return self._next_hello_at

    def service_timers(self, now: float) -> None:
        """Send HELLO if it is due (also the backend's liveness heartbeat)."""
        if now < self._next_hello_at:
            return
        self._send(self._hello)
        self._next_hello_at = now + self._interval

    def recv(self) -> BackendRequest | None:
        """The next request, or None if none is waiting. Never blocks."""
        if not self._queued:
            batch = self.recv_batch()
            if not batch:
                return None
            self._queued.extend(batch)
        return self._queued.popleft()

    def recv_batch(self) -> list[BackendRequest]:
        """
        The requests of the next message (one REQUEST, or every request of a REQUESTS,
        in order), or [] if none is waiting. Never blocks.
        """
        self._require_open()
        if self._queued:  # left by recv()
            queued = list(self._queued)
            self._queued.clear()
            return queued
        while True:
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return []
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"backend link {self.name} is shutting down") from exc
            header = unpack_header(frames[0]) if len(frames) == 2 else None
            if header is not None and header[0] == KIND_REQUEST:
                return [BackendRequest(header[1], frames[1])]
            if header is not None and header[0] == KIND_BARRIER:
                if self.role is Backend.RAFT and not frames[1]:
                    return [BackendRequest(header[1], b"", barrier=True)]
                self.bad_messages += 1
                reason = (f"a payload of {len(frames[1])} bytes" if frames[1]
                          else f"sent to a {self.role.value} backend")
                log.warning("backend link discarded a malformed BARRIER message name=%s reason=%s",
                            self.name, reason)
                continue
            if header is not None and header[0] == KIND_REQUESTS:
                items = unpack_batch(frames[1])
                if items is not None:
                    return [BackendRequest(token, payload) for token, payload in items]
                self.bad_messages += 1
                log.warning("backend link discarded a malformed REQUESTS message, taking none "
                            "of it name=%s reason=index does not match the payload bytes=%d",
                            self.name, len(frames[1]))
                continue
            self.bad_messages += 1
            log.warning("backend link discarded malformed message name=%s frames=%d", self.name, len(frames))

    def reply(self, token: int, payload: bytes) -> bool:
        """Send the reply for `token`. False if it had to be dropped (front door away)."""
        self._require_open()
        return self._send((pack_header(KIND_REPLY, token), payload))

    def reply_many(self, replies: Sequence[tuple[int, bytes]]) -> int:
        """
        Send several (token, reply payload) pairs, as few REPLIES messages as the size
        limit allows (one REPLY for a lone reply). Returns how many replies were dropped.
        """
        self._require_open()
        return sum(self._send_batch(batch) for batch in batches(replies))

    def _send_batch(self, batch: list[tuple[int, bytes]]) -> int:
        if len(batch) == 1:
            token, payload = batch[0]
            return 0 if self._send((pack_header(KIND_REPLY, token), payload)) else 1
        if self._send((_REPLIES_HEADER, pack_batch(batch))):
            return 0
        self.dropped_replies += len(batch) - 1  # _send counted the message once
        return len(batch)

    def answer_barrier(self, token: int, payload: bytes) -> bool:
        """
        Send the BARRIER_ANSWER `payload` (pack_barrier_answer / pack_barrier_error) for
        BARRIER `token`. False if it had to be dropped (front door away).
        """
        self._require_open()
        return self._send((pack_header(KIND_BARRIER_ANSWER, token), payload))

    def hand_off(self, token: int, payload: bytes) -> bool:
        """
        Give request `token` (its `payload`, unchanged) back to the front door for the
        raft worker. False if it had to be dropped (front door away).
        """
        self._require_open()
        return self._send((pack_header(KIND_HANDOFF, token), payload))

    def _send(self, frames: tuple[bytes, bytes]) -> bool:
        try:
            send_frames(self.socket, frames)
        except zmq.Again:
            self.dropped_replies += 1
            return False
        except zmq.ZMQError as exc:
            raise ShuttingDownError(f"backend link {self.name} is shutting down") from exc
        return True

    def _require_open(self) -> None:
        if self._closed:
            raise ShuttingDownError(f"backend link {self.name} is closed")

    def close(self) -> None:
        """Close the socket (LINGER=0). Idempotent."""
        if not self._closed:
            self._closed = True
            self.socket.close(linger=0)

    def __enter__(self) -> BackendLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
