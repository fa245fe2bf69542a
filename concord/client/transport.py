"""
The client's sockets: one DEALER per endpoint, Lazy Pirate style (zguide ch. 4).

Each endpoint gets a DEALER (LINGER=0) the first time it is used. A request is sent as
[b"", payload] and the socket polled until a reply with our request id arrives or the
attempt's wait runs out; replies with another id (late answers to earlier attempts) are
skipped. On silence the socket is closed (dropping anything queued) and reopened on the
next use, so a dead peer never leaves stale requests behind.

Not thread-safe: `Client` serializes all use under its lock. Never lets a zmq error
escape: they become LocalProtocolError (bad endpoint) or ShuttingDownError (context
terminated).
"""

from __future__ import annotations

import logging
import time

import msgpack
import zmq

from concord.errors import LocalProtocolError, RemoteProtocolError, ShuttingDownError

__all__ = ["Transport"]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


class Transport:
    """
    DEALER sockets keyed by endpoint.

    Args:
        ctx: the zmq context (owned by the Client, or passed in by the application).
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._sockets: dict[str, Socket] = {}
        #: Counters, for tests and metrics.
        self.reopens = 0
        self.skipped_replies = 0

    def _socket(self, endpoint: str) -> Socket:
        sock = self._sockets.get(endpoint)
        if sock is not None:
            return sock
        try:
            sock = self._ctx.socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ETERM:
                raise ShuttingDownError("client context is terminated") from exc
            raise LocalProtocolError(f"cannot create a socket: {exc}") from exc
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise LocalProtocolError(f"cannot connect to endpoint {endpoint!r}: {exc}") from exc
        self._sockets[endpoint] = sock
        return sock

    def reset(self, endpoint: str) -> None:
        """Close the endpoint's socket; the next use opens a fresh one (Lazy Pirate)."""
        sock = self._sockets.pop(endpoint, None)
        if sock is not None:
            sock.close(linger=0)
            self.reopens += 1

    def exchange(
        self, endpoint: str, payload: bytes, request_id: int, wait_s: float
    ) -> dict[str, object] | None:
        """
        Send one request and wait up to `wait_s` for its reply.

        Returns:
            The reply map, or None if nothing came in time (the socket is then reset).

        Raises:
            RemoteProtocolError: the reply was not a msgpack map.
            LocalProtocolError: the endpoint is malformed.
            ShuttingDownError: the context was terminated.
        """
        sock = self._socket(endpoint)
        deadline = time.monotonic() + wait_s
        try:
            sock.send_multipart([b"", payload], flags=zmq.NOBLOCK)
            while True:
                remaining_ms = (deadline - time.monotonic()) * 1000.0
                if remaining_ms <= 0 or not sock.poll(max(1, int(remaining_ms)), zmq.POLLIN):
                    self.reset(endpoint)
                    return None
                frames = sock.recv_multipart()
                reply = _decode(frames[-1])
                rid = reply.get("id")
                if rid == request_id:
                    return reply
                if rid is None and reply.get("error") == "invalid_request":
                    # The server could not read our id: the answer is ours.
                    return reply
                self.skipped_replies += 1
                log.debug("skipped reply endpoint=%s id=%s want=%d", endpoint, rid, request_id)
        except zmq.Again:
            # NB: a DEALER with no connected peer queues; Again means the pipe is full:
            # treat it as silence and start over on a fresh socket.
            self.reset(endpoint)
            return None
        except zmq.ZMQError as exc:
            self.reset(endpoint)
            if exc.errno == zmq.ETERM:
                raise ShuttingDownError("client context is terminated") from exc
            raise LocalProtocolError(f"request to {endpoint} failed: {exc}") from exc

    def close(self) -> None:
        """Close every socket (LINGER=0). Idempotent."""
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()


def _decode(data: bytes) -> dict[str, object]:
    try:
        reply = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"reply is not msgpack: {type(exc).__name__}") from exc
    if not isinstance(reply, dict):
        raise RemoteProtocolError(f"reply is a {type(reply).__name__}, not a map")
    return reply
