"""
Front-door observers: what may watch the client requests a node receives and the
replies its clients get (the audit log, tracing). The protocol and two helpers the
front door (concord/net/frontdoor.py) uses to feed them. Pure but for reading a zmq
frame's metadata.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import msgpack
import zmq

from concord.net.wire import Request

__all__ = ["DoorObserver", "peer_of", "reply_map"]


class DoorObserver(Protocol):
    """
    Sees requests and their replies at the front door (the audit log, tracing spans):
    `begin` when a request is decoded (its note rides with the request, None: not
    interested), `end` once with the reply map the client gets (the backend's, a refusal
    or a timeout), `flush` after every poll round. With `hold_replies`, replies of noted
    requests are sent only after that round's `flush` (audit fsync = "always").
    """

    hold_replies: bool

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        """
        (note, the request and payload the next observers see and the backend gets:
        the same, or both carrying a new traceparent).
        """
        ...

    def end(self, note: object, reply: Mapping[object, object]) -> None: ...

    def flush(self) -> None: ...


def peer_of(frame: zmq.Frame | None) -> Callable[[], str | None]:
    def peer() -> str | None:
        if frame is None:
            return None
        try:
            return str(frame.get("Peer-Address"))
        except zmq.ZMQError:
            return None

    return peer


def reply_map(reply: bytes) -> Mapping[object, object]:
    try:
        obj = msgpack.unpackb(reply, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return {}
    return obj if isinstance(obj, dict) else {}
