"""
Front-door observers: what may watch the client requests a node receives and the
replies its clients get (the audit log, tracing, the request metrics). The protocol,
the reply they see, and the helpers the front door (concord/net/frontdoor.py) uses to
feed them. Pure but for reading a zmq frame's metadata.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Protocol

import msgpack
import zmq

from concord.net.wire import Backend, Request

__all__ = ["DoorObserver", "DoorReply", "peer_of", "reply_map"]


class DoorObserver(Protocol):
    """
    Sees requests and their replies at the front door (the audit log, tracing spans):
    `begin` when a request is decoded (its note rides with the request, None: not
    interested), `end` once with the reply the client gets (the backend's, a refusal or a
    timeout: a `DoorReply`), `flush` after every poll round. With `hold_replies`, replies of noted
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

    def end(self, note: object, reply: DoorReply) -> None: ...

    def flush(self) -> None: ...


class DoorReply(Mapping[object, object]):
    """
    A reply as observers see it: the reply map, decoded from `payload` on first use (an
    observer that reads only the payload costs no decode), and `backend`, the kind of
    backend the request was last routed to (the door answers no_leader and timeouts
    itself, on its behalf), and `inline`: the door answered the read itself from shared
    memory (concord.net.door_reads; `backend` is then READ).
    """

    __slots__ = ("payload", "backend", "inline", "_map")

    def __init__(self, payload: bytes, backend: Backend, inline: bool = False) -> None:
        self.payload = payload
        self.backend = backend
        self.inline = inline
        self._map: Mapping[object, object] | None = None

    def _decoded(self) -> Mapping[object, object]:
        if self._map is None:
            self._map = reply_map(self.payload)
        return self._map

    def __getitem__(self, key: object) -> object:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[object]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


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
