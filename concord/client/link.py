"""
The connection state of one endpoint's DEALER, decided from its socket monitor's events,
and what that means for the requests on it. Pure: no sockets, no clock; the sync
transport (concord.client.transport) and the asyncio one (concord.aio) both carry out
its decisions, so they detect a dead node the same way (docs/client.md "Dead nodes").

Why: a node killed with SIGKILL (or a closed port) is known to the kernel at once: the
client's TCP connection is reset and every reconnect is refused. Waiting out an attempt
timeout there wastes the whole failover. The socket is made with ZMQ_IMMEDIATE=1, so
libzmq queues a message only on a completed connection, and the transport hands a request
to the socket only while its connection is up:

- CONNECTING (a new socket, no handshake yet): requests are held here, not in libzmq,
  and sent once the handshake succeeds;
- UP: requests are sent at once;
- DOWN (the connection dropped, or a connect attempt failed; libzmq keeps reconnecting
  every ~100 ms): requests are refused at once and never sent.

A drop (EVENT_DISCONNECTED) ends the requests already sent on that connection as silence
(sent: they may have been applied, the reply can no longer come); a failed connect
(EVENT_CONNECT_RETRIED) while requests are held refuses them (certainly not sent). A
refusal is not silence: the retry plan treats it as "not delivered" (a write without a
session may be sent elsewhere) and moves to the next endpoint after a backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import zmq

from concord.net.curve import HANDSHAKE_EVENTS

__all__ = ["LINK_EVENTS", "REFUSED", "Conn", "Link", "Moves", "Refused", "Reply", "Route", "answered_id"]

#: The monitor events a client DEALER is watched for: handshakes (CURVE errors too) and
#: the connection's drops and failed connects.
LINK_EVENTS = HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED


class Refused(Enum):
    """The outcome of an attempt the transport did not send (its endpoint's connection is down)."""

    REFUSED = "refused"


REFUSED = Refused.REFUSED

#: What a transport's exchange gives the retry plan: the reply map, None for silence (sent,
#: no answer: it may have been applied), or REFUSED (certainly not sent).
Reply = dict[str, object] | None | Refused


class Conn(Enum):
    """The state of one socket's connection."""

    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class Route(Enum):
    """What to do with a new request on a link."""

    SEND = "send"  # the connection is up: send now
    HOLD = "hold"  # the first connection is being made: hold until it is up
    REFUSE = "refuse"  # the connection is down: do not send; the caller tries elsewhere
    FAIL = "fail"  # the handshake cannot succeed (`Link.why`): fail the request with that


@dataclass(slots=True)
class Moves:
    """The requests an event moves: send the held ones now, end others as silence or refusal."""

    send: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)


class Link:
    """
    One socket's connection state and the request ids on it. Not thread-safe (each
    transport touches it from one thread or one event loop).
    """

    def __init__(self) -> None:
        self.conn = Conn.CONNECTING
        #: Why no handshake can succeed (CURVE misconfigured), until one does.
        self.why: str | None = None
        self._held: list[int] = []
        self._sent: set[int] = set()

    def route(self, request_id: int) -> Route:
        """Where a new request goes; SEND and HOLD record it on the link."""
        if self.why is not None:
            return Route.FAIL
        if self.conn is Conn.UP:
            self._sent.add(request_id)
            return Route.SEND
        if self.conn is Conn.CONNECTING:
            self._held.append(request_id)
            return Route.HOLD
        return Route.REFUSE

    def unsent(self, request_id: int) -> None:
        """The socket would not take a request routed SEND (zmq.Again): it was never sent."""
        self._sent.discard(request_id)

    def done(self, request_id: int) -> None:
        """The request was answered, or its caller stopped waiting."""
        self._sent.discard(request_id)
        if request_id in self._held:
            self._held.remove(request_id)

    def on_event(self, event: int) -> Moves:
        """The requests one monitor event moves (and the new state)."""
        moves = Moves()
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.conn, self.why = Conn.UP, None
            moves.send, self._held = self._held, []
            self._sent.update(moves.send)
        elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
            # NB: a drop ends what was sent (it may have been applied) as silence; what
            # was held never reached libzmq, so it is refused: certainly not sent.
            self.conn = Conn.DOWN
            moves.silent = sorted(self._sent)
            moves.refused, self._held = self._held, []
            self._sent.clear()
        return moves

    def fail_all(self, why: str) -> list[int]:
        """
        A handshake cannot succeed (`why`, from concord.net.curve.HandshakeWatch): every
        request on the link, forgotten, for the caller to fail; later ones FAIL until a
        handshake succeeds.
        """
        self.why = why
        ids = [*self._held, *sorted(self._sent)]
        self._held, self._sent = [], set()
        return ids


def answered_id(reply: Mapping[str, object], waiting: Callable[[], list[int]]) -> int | None:
    """
    The request a reply answers: its `id`; for an `invalid_request` with a nil id (the
    node could not read one), the one request `waiting` on that endpoint, if only one is.
    None: no request of ours (the reply is skipped).
    """
    rid = reply.get("id")
    if rid is None and reply.get("error") == "invalid_request":
        mine = waiting()
        rid = mine[0] if len(mine) == 1 else None
    return rid if isinstance(rid, int) else None
