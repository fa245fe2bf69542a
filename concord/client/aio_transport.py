"""
The asyncio client's sockets (concord.aio.Client): one DEALER per endpoint (zmq.asyncio,
LINGER=0) with one reader task that resolves the future of the request whose id a reply
carries, so any number of coroutines have requests in flight on one connection.

Dead nodes and Lazy Pirate as in the sync transport (the same decisions, from
concord.client.link): ZMQ_IMMEDIATE=1 and a socket monitor per DEALER; a request is held
until the first connection is up, refused at once while it is down, and a dropped
connection ends the requests sent on it as silence at once; a silent attempt reopens its
endpoint's socket only if its connection is up and nothing came from that endpoint since
the request was sent, and a reset answers every request still waiting on it with silence
(refusal, if never sent). Zmq errors become LocalProtocolError or ShuttingDownError.
"""

from __future__ import annotations

import asyncio
import logging

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from concord.client.link import LINK_EVENTS, REFUSED, Conn, Link, Reply, Route, answered_id
from concord.client.transport import connect_dealer, decode_reply
from concord.errors import LocalProtocolError, RemoteProtocolError, ShuttingDownError
from concord.net.curve import CurveClient, HandshakeWatch

__all__ = ["AioTransport"]

log = logging.getLogger(__name__)

Socket = zmq.asyncio.Socket


class _Link:
    """One endpoint's DEALER, its reader task, its monitor's watcher task and its link state."""

    def __init__(self, sock: Socket, task: asyncio.Task[None], monitor: Socket,
                 watcher: asyncio.Task[None]) -> None:
        self.sock = sock
        self.task = task
        self.monitor = monitor
        self.watcher = watcher
        self.replies = 0
        self.state = Link()
        self.held: dict[int, bytes] = {}  # payloads held until the connection is up

    def close(self) -> None:
        self.task.cancel()
        self.watcher.cancel()
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


class AioTransport:
    """DEALER sockets keyed by endpoint; futures keyed by request id."""

    def __init__(self, ctx: zmq.asyncio.Context, curve: CurveClient | None = None) -> None:
        self._ctx = ctx
        self._curve = curve
        self._links: dict[str, _Link] = {}
        self._waiting: dict[int, tuple[str, asyncio.Future[Reply]]] = {}
        self._closed = False
        #: Counters, for tests and metrics (as the sync Transport's).
        self.reopens = 0
        self.skipped_replies = 0
        self.refused = 0
        self.dropped = 0

    def _link(self, endpoint: str) -> _Link:
        link = self._links.get(endpoint)
        if link is not None:
            return link
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a completed connection (client/link.py)
        # NB: the monitor before the connect, or the handshake's event may come unseen.
        monitor: Socket = sock.get_monitor_socket(LINK_EVENTS)
        try:
            connect_dealer(sock, endpoint, self._curve)
        except LocalProtocolError:
            monitor.close(linger=0)
            raise
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._read(endpoint, sock))
        watcher = loop.create_task(self._watch(HandshakeWatch(endpoint, self._curve is not None), monitor))
        link = self._links[endpoint] = _Link(sock, task, monitor, watcher)
        return link

    async def _watch(self, watch: HandshakeWatch, monitor: Socket) -> None:
        """Carry out what the endpoint's monitor events decide (handshake errors, link state)."""
        endpoint = watch.endpoint
        while True:
            try:
                event = parse_monitor_message(await monitor.recv_multipart())
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            link = self._links.get(endpoint)
            if link is None or link.monitor is not monitor:
                return
            kind = int(event["event"])
            why = watch.on_event(kind, int(event["value"]))
            if why is not None:
                for rid in link.state.fail_all(why):
                    link.held.pop(rid, None)
                    entry = self._waiting.get(rid)
                    if entry is not None and not entry[1].done():
                        entry[1].set_exception(LocalProtocolError(f"cannot talk to {endpoint}: {why}"))
                continue
            was = link.state.conn
            moves = link.state.on_event(kind)
            if link.state.conn is Conn.DOWN and was is not Conn.DOWN:
                self.dropped += was is Conn.UP
                log.warning("connection down endpoint=%s was=%s in_flight=%d held=%d",
                            endpoint, was.value, len(moves.silent), len(moves.refused))
            for rid in moves.send:
                try:
                    sent = await self._write(link, rid, link.held.pop(rid))
                except LocalProtocolError:
                    sent = False  # the socket is gone (closed meanwhile): not sent
                if not sent:
                    self._resolve(rid, REFUSED)
            for rid in moves.silent:
                self._resolve(rid, None)
            for rid in moves.refused:
                link.held.pop(rid, None)
                self._resolve(rid, REFUSED)

    def _resolve(self, request_id: int, reply: Reply) -> None:
        entry = self._waiting.get(request_id)
        if entry is not None and not entry[1].done():
            self.refused += reply is REFUSED
            entry[1].set_result(reply)

    async def _write(self, link: _Link, request_id: int, payload: bytes) -> bool:
        """Hand one request to libzmq; False if it was not taken (certainly not sent)."""
        try:
            await link.sock.send_multipart([b"", payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            # NB: with ZMQ_IMMEDIATE, Again means no connection took it (it just dropped,
            # or the pipe is full).
            link.state.unsent(request_id)
            return False
        except zmq.ZMQError as exc:
            raise LocalProtocolError(f"request failed: {exc}") from exc
        return True

    async def exchange(self, endpoint: str, payload: bytes, request_id: int, wait_s: float) -> Reply:
        """
        Send one request and wait up to `wait_s` for its reply (None: silence; REFUSED:
        not sent, the endpoint's connection is down).
        """
        if self._closed:
            raise ShuttingDownError("client is closed")
        link = self._link(endpoint)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (endpoint, future)
        replies_at_send = link.replies
        try:
            route = link.state.route(request_id)
            if route is Route.FAIL:
                raise LocalProtocolError(f"cannot talk to {endpoint}: {link.state.why}")
            if route is Route.REFUSE or (route is Route.SEND and not await self._write(link, request_id, payload)):
                self._resolve(request_id, REFUSED)
            elif route is Route.HOLD:
                link.held[request_id] = payload
            try:
                return await asyncio.wait_for(asyncio.shield(future), max(0.0, wait_s))
            except asyncio.TimeoutError:
                if link.held.pop(request_id, None) is not None:
                    return REFUSED  # its first connection never came up: certainly not sent
                if (self._links.get(endpoint) is link and link.state.conn is Conn.UP
                        and link.replies == replies_at_send):
                    self._reset(endpoint)
                return None
        finally:
            self._waiting.pop(request_id, None)
            link.state.done(request_id)
            link.held.pop(request_id, None)

    async def _read(self, endpoint: str, sock: Socket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            link = self._links.get(endpoint)
            if link is not None and link.sock is sock:
                link.replies += 1
            self._dispatch(endpoint, frames[-1])

    def _dispatch(self, endpoint: str, data: bytes) -> None:
        try:
            reply = decode_reply(data)
        except RemoteProtocolError as exc:
            self.skipped_replies += 1
            log.warning("undecodable reply endpoint=%s error=%s", endpoint, exc)
            return
        rid = answered_id(reply, lambda: [r for r, (ep, _) in self._waiting.items() if ep == endpoint])
        entry = self._waiting.get(rid) if rid is not None else None
        if entry is None or entry[1].done():
            self.skipped_replies += 1
            return
        entry[1].set_result(reply)

    def _reset(self, endpoint: str) -> None:
        link = self._links.pop(endpoint, None)
        if link is None:
            return
        link.close()
        self.reopens += 1
        for rid, (ep, future) in self._waiting.items():
            if ep == endpoint and not future.done():
                future.set_result(REFUSED if rid in link.held else None)
        link.held.clear()

    async def close(self) -> None:
        """Close every socket; requests still waiting get silence. Idempotent."""
        self._closed = True
        for link in self._links.values():
            link.close()
        tasks = [t for link in self._links.values() for t in (link.task, link.watcher)]
        self._links.clear()
        for _, future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        if tasks:
            await asyncio.wait(tasks)
