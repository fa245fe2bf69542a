"""
A tiny blocking request helper over the client wire protocol (zguide Lazy Pirate).

One DEALER per attempt: send [b"", payload], poll for `timeout_ms`; on silence close the
socket (LINGER=0, dropping anything queued), open a fresh one and resend, at most
`retries` more times. Replies whose id is not ours are skipped. A resent write may be
applied twice unless the request carries `client_id` + `seq` (exactly-once sessions):
callers retrying writes must set them.

Used by tests and as the transport under concord.client.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Mapping

import msgpack
import zmq

from concord.errors import LocalProtocolError, RemoteProtocolError, RequestTimeoutError
from concord.net._zmqutil import new_socket
from concord.net.wire import pack

__all__ = ["request"]

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

_ids = itertools.count(random.randrange(1 << 30))


def _open(ctx: Context, endpoint: str) -> Socket:
    sock = new_socket(ctx, zmq.DEALER, "client")
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise LocalProtocolError(f"cannot connect to {endpoint}: {exc}") from exc
    return sock


def request(
    endpoint: str,
    msg: Mapping[str, object],
    timeout_ms: int = 2000,
    retries: int = 2,
    ctx: Context | None = None,
) -> dict[str, object]:
    """
    Send one request map and return the reply map.

    Args:
        endpoint: the node's client endpoint, e.g. "tcp://127.0.0.1:7400".
        msg: the request; "id" is filled in if absent.
        timeout_ms: wait per attempt.
        retries: extra attempts after the first (each on a fresh socket).
        ctx: zmq context to use; a private one is created and terminated if None.

    Raises:
        RequestTimeoutError: no reply after every attempt (for a write: outcome unknown).
        RemoteProtocolError: the reply was not a msgpack map.
        LocalProtocolError: the endpoint is malformed.
    """
    if timeout_ms <= 0 or retries < 0:
        raise LocalProtocolError(f"timeout_ms must be > 0 and retries >= 0, got {timeout_ms} and {retries}")
    body = dict(msg)
    if "id" not in body:
        body["id"] = next(_ids)
    request_id = body["id"]
    payload = pack(body)
    own_ctx = ctx is None
    context: Context = zmq.Context() if ctx is None else ctx
    try:
        for _ in range(retries + 1):
            sock = _open(context, endpoint)
            try:
                reply = _attempt(sock, payload, request_id, timeout_ms)
            except zmq.ZMQError as exc:
                raise LocalProtocolError(f"request to {endpoint} failed: {exc}") from exc
            finally:
                sock.close(linger=0)
            if reply is not None:
                return reply
        rid = request_id if isinstance(request_id, int) and not isinstance(request_id, bool) else None
        raise RequestTimeoutError(
            f"no reply from {endpoint} after {retries + 1} attempts of {timeout_ms} ms", rid
        )
    finally:
        if own_ctx:
            context.term()


def _attempt(sock: Socket, payload: bytes, request_id: object, timeout_ms: int) -> dict[str, object] | None:
    sock.send_multipart([b"", payload])
    deadline = time.monotonic() + timeout_ms / 1000.0
    while True:
        remaining_ms = (deadline - time.monotonic()) * 1000.0
        if remaining_ms <= 0 or not sock.poll(max(1, int(remaining_ms)), zmq.POLLIN):
            return None
        frames = sock.recv_multipart()
        data = frames[-1]
        try:
            reply = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise RemoteProtocolError(f"reply is not msgpack: {type(exc).__name__}") from exc
        if not isinstance(reply, dict):
            raise RemoteProtocolError(f"reply is a {type(reply).__name__}, not a map")
        if reply.get("id") == request_id or reply.get("id") is None:
            # id nil: the server could not read our id (invalid_request): it is ours.
            return reply
