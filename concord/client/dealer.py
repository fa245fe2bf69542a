"""
A client DEALER's set-up and a reply's decoding, shared by the sync transport
(concord.client.transport) and the asyncio one (concord.client.aio_transport).
"""

from __future__ import annotations

from typing import Protocol

import msgpack
import zmq

from concord.errors import LocalProtocolError, RemoteProtocolError
from concord.net.curve import CurveClient

__all__ = ["connect_dealer", "decode_reply"]


class _Dealer(Protocol):
    """What `connect_dealer` needs of a socket (sync or zmq.asyncio)."""

    def setsockopt(self, option: int, value: int | bytes) -> None: ...

    def connect(self, addr: str) -> object: ...

    def close(self, linger: int | None = None) -> None: ...


def connect_dealer(sock: _Dealer, endpoint: str, curve: CurveClient | None = None) -> None:
    """
    Set LINGER=0 on a new DEALER (and CURVE, with `curve`) and connect it to `endpoint`;
    closes it on failure.

    Raises:
        LocalProtocolError: the endpoint cannot be connected (a malformed address).
    """
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise LocalProtocolError(f"cannot connect to endpoint {endpoint!r}: {exc}") from exc


def decode_reply(data: bytes) -> dict[str, object]:
    """
    A reply payload as a map.

    Raises:
        RemoteProtocolError: not msgpack, or not a map.
    """
    try:
        reply = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"reply is not msgpack: {type(exc).__name__}") from exc
    if not isinstance(reply, dict):
        raise RemoteProtocolError(f"reply is a {type(reply).__name__}, not a map")
    return reply
