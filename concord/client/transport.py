"""
The client's sockets: one DEALER per endpoint, many requests in flight on each, matched
to their callers by request id (zguide ch. 3 "asynchronous client", ch. 4 Lazy Pirate).

Who drives the sockets (zmq sockets are not thread-safe): whoever holds the transport's
baton (a lock) polls, sends and receives on every socket; no other thread touches them.
A call that finds the baton free takes it and does its own I/O (catch up on what came
while nobody drove, send, poll until its reply or its deadline, answering any other
caller's reply it receives on the way), then lets go: one call in flight costs no
thread hand-off. A call that finds the baton taken hands its request to the driver
(a queue and a wake-up pipe) and waits on its own event. The I/O thread (one per
Transport, started with the first request) takes the baton whenever a request is left
without a driver (queued ones, and those still in flight when a calling driver is done),
and otherwise every second for a moment, to drain the socket monitors of an idle
client. So the network round trip is never under a lock any waiting thread needs. Each
endpoint gets a DEALER (LINGER=0) the first time it is used; a request goes out as
[b"", payload].

Matching: a reply is handed to the caller whose request id it carries. A reply with an
id nobody waits for (a late answer to an abandoned attempt) is counted and dropped. A
reply with a nil id that is `invalid_request` (the server could not read our id) goes to
the one caller waiting on that endpoint when there is exactly one; with several it
cannot be attributed and is dropped (they time out): the client validates requests with
the wire table before sending, so this only happens with a server that disagrees.

Dead nodes (concord.client.link): each DEALER has ZMQ_IMMEDIATE=1 and a socket monitor;
a request is handed to libzmq only while its connection is up (held while the first
connection is made), refused at once while the connection is down (dropped, or connects
refused: a killed node), and a dropped connection ends the requests sent on it as
silence at once. So a dead node costs a failover no attempt timeout.

Silence (Lazy Pirate): a caller that waited its whole attempt without a reply tells the
driver (or, driving itself, acts at once), which closes and reopens that endpoint's socket only if its connection is up
and no reply at all came from it since the request went out (a live endpoint that is slow
to answer one request keeps its socket and the other requests on it). A reset answers
every caller still waiting on that endpoint with silence at once, so they retry elsewhere
without waiting out their own attempt.

Never lets a zmq error escape: they become LocalProtocolError (bad endpoint; a socket
that failed: the requests in flight fail with it and the sockets are reopened on next
use) or ShuttingDownError (context terminated, transport closed).
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from concord.client.dealer import connect_dealer, decode_reply
from concord.client.link import LINK_EVENTS, REFUSED, Conn, Link, Moves, Reply, Route, answered_id
from concord.errors import ConcordError, LocalProtocolError, RemoteProtocolError, ShuttingDownError
from concord.net.curve import CurveClient, HandshakeWatch

__all__ = ["Transport", "connect_dealer", "decode_reply"]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

#: How often an idle I/O thread drains the socket monitors (a dead endpoint's reconnect
#: attempts queue ~10 events a second there).
IDLE_DRAIN_S = 1.0

# NB: plain ints: zmq's enum members cost an Enum call per use on the per-call path.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


@dataclass(slots=True, eq=False)
class _Waiter:
    """One request in flight: filled in by the I/O thread, waited on by its caller."""

    endpoint: str
    done: bool = False  # answered (set under the transport's lock)
    event: threading.Event | None = None  # set when done, for a caller that waits on another driver
    reply: dict[str, object] | None = None
    error: ConcordError | None = None
    replies_at_send: int = -1  # the endpoint's reply count when the request went out
    socket_gen: int = -1  # which socket of the endpoint it went out on
    sent: bool = False  # handed to libzmq (set under the transport's lock)
    refused: bool = False  # ended unsent: its endpoint's connection is down


class Transport:
    """
    DEALER sockets keyed by endpoint, driven by whoever holds the baton (see the module).

    Args:
        ctx: the zmq context (owned by the Client, or passed in by the application).
        curve: CURVE on every socket (the nodes' client endpoints need it when they have
            `curve.client_secret_key_file`).
    """

    def __init__(self, ctx: Context, curve: CurveClient | None = None) -> None:
        self._ctx = ctx
        self.curve = curve
        self._lock = threading.Lock()  # guards the fields below; never held over I/O
        self._commands: deque[tuple[str, str, int, bytes | _Waiter | None]] = deque()
        self._waiters: dict[int, _Waiter] = {}
        self._pending = 0  # queued requests not yet answered whose caller still waits
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._park_r, self._park_w = os.pipe()  # wakes the I/O thread while it is parked
        for fd in (self._wake_r, self._wake_w, self._park_r, self._park_w):
            os.set_blocking(fd, False)
        # NB: whoever holds the baton owns every socket, the poller and the fields below;
        # nobody waits on an event while holding it.
        self._baton = threading.Lock()
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._sockets: dict[str, Socket] = {}
        self._endpoint_of: dict[Socket, str] = {}
        self._replies: dict[str, int] = {}
        self._socket_gen: dict[str, int] = {}
        # A socket monitor per DEALER: its connection state (concord.client.link), and a
        # handshake that cannot succeed (CURVE on one side only, a wrong server key) fails
        # the endpoint's requests at once, saying why.
        self._monitors: dict[Socket, HandshakeWatch] = {}
        self._monitor_of: dict[str, Socket] = {}
        self._links: dict[str, Link] = {}
        self._held: dict[int, bytes] = {}  # payloads of requests held until their connection is up
        #: Counters, for tests and metrics.
        self.reopens = 0
        self.skipped_replies = 0
        self.refused = 0  # requests not sent: their endpoint's connection was down
        self.dropped = 0  # connections lost while up (their requests ended as silence at once)
        self.direct = 0  # exchanges whose caller drove the sockets itself
        self.queued = 0  # exchanges handed to another driver (several calls in flight)

    # -- caller side -------------------------------------------------------------------

    def exchange(self, endpoint: str, payload: bytes, request_id: int, wait_s: float) -> Reply:
        """
        Send one request and wait up to `wait_s` for its reply. Thread-safe.

        Returns:
            The reply map; None if nothing came in time (or the connection dropped after
            it was sent); REFUSED if it was never sent (the connection is down).

        Raises:
            LocalProtocolError: the endpoint is malformed.
            ShuttingDownError: the transport was closed or the context terminated.
        """
        deadline = time.monotonic() + max(0.0, wait_s)
        waiter = self._register(endpoint, request_id)
        if self._baton.acquire(blocking=False):
            return self._exchange_here(waiter, request_id, payload, deadline)
        event = self._enqueue(waiter, ("send", endpoint, request_id, payload))
        event.wait(max(0.0, deadline - time.monotonic()))
        return self.collect(request_id, waiter)

    def submit(self, endpoint: str, payload: bytes, request_id: int) -> _Waiter:
        """Hand a request to the driver; wait on the returned waiter's `event`, then `collect`."""
        waiter = self._register(endpoint, request_id)
        self._enqueue(waiter, ("send", endpoint, request_id, payload))
        return waiter

    def collect(self, request_id: int, waiter: _Waiter) -> Reply:
        """The outcome of a submitted request once its caller stops waiting (see exchange)."""
        with self._lock:
            done = self._forget(request_id, waiter)
            if not done and not self._closed:
                self._commands.append(("silent", waiter.endpoint, request_id, waiter))
        if not done:
            self._wake()
        return _outcome(waiter, done)

    def close(self) -> None:
        """Stop the I/O thread and close every socket (LINGER=0). Idempotent; any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._commands.append(("stop", "", 0, None))
        self._wake()
        if thread is not None:
            thread.join()
        with self._baton:  # NB: a calling driver sees the stop at once and lets go
            self._fail_all(ShuttingDownError("client is closed"))
            self._close_sockets()
            with self._lock:
                for fd in (self._wake_r, self._wake_w, self._park_r, self._park_w):
                    os.close(fd)
                self._wake_w = -1

    def _register(self, endpoint: str, request_id: int) -> _Waiter:
        waiter = _Waiter(endpoint)
        with self._lock:
            if self._closed:
                raise ShuttingDownError("client is closed")
            if request_id in self._waiters:
                raise LocalProtocolError(f"request id {request_id} is already in flight")
            self._waiters[request_id] = waiter
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="concord-client-io", daemon=True)
                self._thread.start()
        return waiter

    def _forget(self, request_id: int, waiter: _Waiter) -> bool:
        """Under the lock: the caller stops waiting; whether its request was answered."""
        self._waiters.pop(request_id, None)
        done = waiter.done
        if not done and waiter.event is not None:
            self._pending -= 1
        return done

    def _enqueue(self, waiter: _Waiter, command: tuple[str, str, int, bytes | _Waiter | None]) -> threading.Event:
        """Queue a request for the driver; the event its caller waits on."""
        with self._lock:
            event = waiter.event = threading.Event()
            if waiter.done:
                event.set()  # failed meanwhile (close)
            else:
                self._pending += 1
            self._commands.append(command)
            self.queued += 1
        self._wake()
        return event

    def _wake(self) -> None:
        """Wake the driver polling (if any) and the I/O thread if it is parked."""
        with self._lock:
            if self._wake_w < 0:
                return  # closed
            for fd in (self._wake_w, self._park_w):
                try:
                    os.write(fd, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full: a wake-up is pending

    def _busy(self) -> bool:
        """A request or command needs a driver."""
        with self._lock:
            return self._pending > 0 or bool(self._commands)

    # -- driving (holding the baton) ---------------------------------------------------

    def _exchange_here(self, waiter: _Waiter, request_id: int, payload: bytes, deadline: float) -> Reply:
        """Holding the baton: send, and poll until the reply or the deadline; then let go."""
        done = False
        try:
            try:
                self.direct += 1
                # NB: close() fails every waiter before it lets go of the baton.
                if not self._closed and self._catch_up(waiter.endpoint):
                    self._send(waiter.endpoint, request_id, payload)
                    while not waiter.done:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._serve(left):
                            break
            except BaseException:
                self._abandon(waiter.endpoint, request_id)  # a KeyboardInterrupt in the poll, say
                raise
            finally:
                with self._lock:
                    done = self._forget(request_id, waiter)
            if not done:
                if self._closed:  # NB: it may stop before the close command fails the waiters
                    raise ShuttingDownError("client is closed")
                self._on_silent(waiter.endpoint, request_id, waiter)
        finally:
            self._baton.release()
            if self._busy():
                self._wake()  # NB: requests of others still in flight: the I/O thread drives them
        return _outcome(waiter, done)

    def _run(self) -> None:
        """The I/O thread: drive whenever a request has no driver, drain monitors when idle."""
        parked = select.poll()
        parked.register(self._park_r, select.POLLIN)
        while not self._closed:
            if self._busy():
                self._baton.acquire()
            else:
                woken = parked.poll(IDLE_DRAIN_S * 1000)
                _drain(self._park_r)
                if not self._baton.acquire(blocking=bool(woken)):
                    continue  # an idle tick while a caller drives: it drains the monitors
            try:
                if self._closed or not self._serve(0.0):
                    return
                while self._busy():
                    if not self._serve(None):
                        return
            finally:
                self._baton.release()

    def _catch_up(self, endpoint: str) -> bool:
        """
        Before a calling driver sends: what came while nobody drove (queued commands, the
        endpoint's monitor events and late replies), so the request is routed on the
        connection's current state. False once closed.
        """
        if self._commands:  # NB: read without the lock: a command queued later wakes the poll
            return self._serve(0.0)
        sock = self._sockets.get(endpoint)
        if sock is None:
            return True
        try:
            self._on_monitor(self._monitor_of[endpoint])
            if endpoint in self._sockets:
                self._receive(sock)
        except zmq.ZMQError:
            return self._serve(0.0)  # the poll meets the same error and handles it
        return True

    def _serve(self, timeout_s: float | None) -> bool:
        """One poll of every socket and the wake-up pipe; False once closed."""
        try:
            events = dict(self._poller.poll(None if timeout_s is None else math.ceil(timeout_s * 1000)))
            if self._wake_r in events and not self._do_commands():
                return False
            for sock in list(self._sockets.values()):
                if events.get(sock):
                    self._receive(sock)
            for monitor in list(self._monitors):
                if events.get(monitor) and monitor in self._monitors:
                    self._on_monitor(monitor)
        except zmq.ZMQError as exc:
            term = exc.errno == zmq.ETERM
            log.warning("client i/o failed error=%s", exc)
            self._fail_all(ShuttingDownError("client context is terminated") if term
                           else LocalProtocolError(f"client socket failed: {exc}"))
            self._close_sockets()
            if term:
                with self._lock:
                    self._closed = True
        return not self._closed

    def _do_commands(self) -> bool:
        """Run queued commands; False once told to stop."""
        _drain(self._wake_r)
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
        for kind, endpoint, number, data in commands:
            if kind == "stop":
                self._fail_all(ShuttingDownError("client is closed"))
                return False
            if kind == "send":
                assert isinstance(data, bytes)
                self._send(endpoint, number, data)
            elif kind == "silent":
                assert isinstance(data, _Waiter)
                self._on_silent(endpoint, number, data)
        return True

    def _abandon(self, endpoint: str, request_id: int) -> None:
        """Forget a request on its link (its caller left early): no Lazy Pirate reset."""
        self._held.pop(request_id, None)
        link = self._links.get(endpoint)
        if link is not None:
            link.done(request_id)

    def _on_silent(self, endpoint: str, request_id: int, waiter: _Waiter) -> None:
        """A caller waited out its attempt: forget the request; Lazy Pirate reset if due."""
        self._held.pop(request_id, None)
        link = self._links.get(endpoint)
        if link is None or self._socket_gen.get(endpoint) != waiter.socket_gen:
            return
        link.done(request_id)
        # A down connection is libzmq's to re-establish (a fresh socket would not help).
        if waiter.sent and link.conn is Conn.UP and self._replies.get(endpoint, 0) == waiter.replies_at_send:
            self._reset(endpoint)

    def _send(self, endpoint: str, request_id: int, payload: bytes) -> None:
        with self._lock:
            waiter = self._waiters.get(request_id)
        if waiter is None:
            return  # its caller already gave up
        try:
            sock = self._socket(endpoint)
        except LocalProtocolError as exc:
            self._finish(request_id, None, exc)
            return
        waiter.replies_at_send = self._replies.get(endpoint, 0)
        waiter.socket_gen = self._socket_gen[endpoint]
        link = self._links[endpoint]
        route = link.route(request_id)
        if route is Route.SEND:
            self._write(sock, endpoint, request_id, payload)
        elif route is Route.HOLD:
            self._held[request_id] = payload
        elif route is Route.FAIL:
            self._finish(request_id, None, LocalProtocolError(f"cannot talk to {endpoint}: {link.why}"))
        else:
            self._finish(request_id, None, None, refused=True)

    def _write(self, sock: Socket, endpoint: str, request_id: int, payload: bytes) -> None:
        """Hand one request to libzmq (its caller may have given up meanwhile: then not)."""
        with self._lock:
            waiter = self._waiters.get(request_id)
            if waiter is None:
                self._links[endpoint].done(request_id)
                return
            waiter.sent = True
        try:
            sock.send_multipart([b"", payload], flags=_NOBLOCK)
        except zmq.Again:
            # NB: with ZMQ_IMMEDIATE, Again means no connection took it (it just dropped,
            # or the pipe is full): certainly not sent.
            waiter.sent = False
            self._links[endpoint].unsent(request_id)
            self._finish(request_id, None, None, refused=True)

    def _socket(self, endpoint: str) -> Socket:
        sock = self._sockets.get(endpoint)
        if sock is not None:
            return sock
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a completed connection (see link.py)
        # NB: the monitor before the connect, or the handshake's event may come unseen.
        monitor: Socket = sock.get_monitor_socket(LINK_EVENTS)
        try:
            connect_dealer(sock, endpoint, self.curve)
        except LocalProtocolError:
            monitor.close(linger=0)  # the socket is closed: its monitor stopped
            raise
        self._monitors[monitor] = HandshakeWatch(endpoint, self.curve is not None)
        self._monitor_of[endpoint] = monitor
        self._links[endpoint] = Link()
        self._poller.register(monitor, zmq.POLLIN)
        self._sockets[endpoint] = sock
        self._endpoint_of[sock] = endpoint
        self._socket_gen[endpoint] = self._socket_gen.get(endpoint, 0) + 1
        self._poller.register(sock, zmq.POLLIN)
        return sock

    def _reset(self, endpoint: str) -> None:
        """Close the endpoint's socket (Lazy Pirate); its waiters get silence now."""
        sock = self._sockets.pop(endpoint, None)
        if sock is None:
            return
        del self._endpoint_of[sock]
        self._poller.unregister(sock)
        monitor = self._monitor_of.pop(endpoint)
        self._poller.unregister(monitor)
        self._close_monitor(sock, monitor)
        sock.close(linger=0)
        del self._links[endpoint]
        self.reopens += 1
        gen = self._socket_gen[endpoint]
        # NB: only the requests handed to THIS socket: one submitted since (a raw resend
        # with the same id, say) waits in the command queue for the next socket.
        with self._lock:
            stranded = [(rid, not w.sent) for rid, w in self._waiters.items()
                        if w.endpoint == endpoint and w.socket_gen == gen]
        for rid, unsent in stranded:
            self._held.pop(rid, None)
            self._finish(rid, None, None, refused=unsent)

    def _receive(self, sock: Socket) -> None:
        endpoint = self._endpoint_of[sock]
        # NB: EVENTS, not recv until zmq.Again: an exception per call costs more than the check.
        while _readable(sock):
            frames = sock.recv_multipart(_NOBLOCK)
            self._replies[endpoint] = self._replies.get(endpoint, 0) + 1
            try:
                reply = decode_reply(frames[-1])
            except RemoteProtocolError as exc:
                self.skipped_replies += 1
                log.warning("undecodable reply endpoint=%s error=%s", endpoint, exc)
                continue
            rid = answered_id(reply, lambda: self._waiting_at(endpoint))
            if not (rid is not None and self._finish(rid, reply, None)):
                self.skipped_replies += 1
                log.debug("skipped reply endpoint=%s id=%s", endpoint, rid)

    def _waiting_at(self, endpoint: str) -> list[int]:
        with self._lock:
            return [r for r, w in self._waiters.items() if w.endpoint == endpoint]

    def _finish(
        self, request_id: int, reply: dict[str, object] | None, error: ConcordError | None,
        refused: bool = False,
    ) -> bool:
        with self._lock:
            waiter = self._waiters.get(request_id)
            if waiter is None or waiter.done:
                return False
            waiter.reply, waiter.error, waiter.refused = reply, error, refused
            waiter.done = True
            if waiter.event is not None:
                waiter.event.set()
                self._pending -= 1
        self.refused += refused
        link = self._links.get(waiter.endpoint)
        if link is not None:
            link.done(request_id)
        return True

    def _on_monitor(self, monitor: Socket) -> None:
        """Carry out what the endpoint's monitor events decide (handshake errors, link state)."""
        watch = self._monitors[monitor]
        endpoint = watch.endpoint
        while _readable(monitor):
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            kind = int(event["event"])
            why = watch.on_event(kind, int(event["value"]))
            link = self._links[endpoint]
            if why is not None:
                error = LocalProtocolError(f"cannot talk to {endpoint}: {why}")
                for rid in link.fail_all(why):
                    self._held.pop(rid, None)
                    self._finish(rid, None, error)
                continue
            was = link.conn
            moves = link.on_event(kind)
            if link.conn is Conn.DOWN and was is not Conn.DOWN:
                self.dropped += was is Conn.UP
                log.warning("connection down endpoint=%s was=%s in_flight=%d held=%d",
                            endpoint, was.value, len(moves.silent), len(moves.refused))
            self._carry_out(endpoint, moves)

    def _carry_out(self, endpoint: str, moves: Moves) -> None:
        sock = self._sockets[endpoint]
        for rid in moves.send:
            self._write(sock, endpoint, rid, self._held.pop(rid))
        for rid in moves.silent:
            self._finish(rid, None, None)
        for rid in moves.refused:
            self._held.pop(rid, None)
            self._finish(rid, None, None, refused=True)

    def _close_monitor(self, sock: Socket, monitor: Socket) -> None:
        del self._monitors[monitor]
        sock.disable_monitor()
        monitor.close(linger=0)

    def _fail_all(self, error: ConcordError) -> None:
        with self._lock:
            rids = list(self._waiters)
        for rid in rids:
            self._finish(rid, None, error)

    def _close_sockets(self) -> None:
        for endpoint, sock in self._sockets.items():
            monitor = self._monitor_of.pop(endpoint)
            self._poller.unregister(sock)
            self._poller.unregister(monitor)
            self._close_monitor(sock, monitor)
            sock.close(linger=0)
        self._sockets.clear()
        self._endpoint_of.clear()
        self._links.clear()
        self._held.clear()


def _drain(fd: int) -> None:
    """Read a wake-up pipe empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _readable(sock: Socket) -> bool:
    """A message waits on `sock` (its EVENTS; processes the socket's pending commands)."""
    return bool(cast(int, sock.getsockopt(_EVENTS)) & _POLLIN)


def _outcome(waiter: _Waiter, done: bool) -> Reply:
    """What an exchange returns once its caller stops waiting (`done`: it was answered)."""
    if not done:
        # Still held (its first connection never came up): certainly not sent.
        return None if waiter.sent else REFUSED
    if waiter.error is not None:
        raise waiter.error
    return REFUSED if waiter.refused else waiter.reply
