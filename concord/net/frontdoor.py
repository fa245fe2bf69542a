"""
The client front door: one ROUTER per node, validating and routing every request.

Design: a single-threaded Python broker loop (zguide "load balancing broker") that owns
the client ROUTER (tcp) and the backend ROUTER (ipc, see concord.net.backend). A C-level
`zmq.proxy` cannot validate the envelope or route by op and consistency, and would push
bad input into the raft worker; the broker costs one extra hop, measured by
bench/net_hop.py (see docs/formats/net.md for the figures).

Per client message the loop:
1. splits the envelope (below), rejects frames over `max_request_bytes` and malformed
   payloads with an invalid_request reply (id when readable, else nil): nothing else
   happens, and other clients are unaffected;
2. routes by `route()`: ops whose spec says READ go to a read worker unless
   `consistency == "strong"`; everything else (writes, strong-read barriers, membership,
   admin, fault) goes to the raft worker. Among read workers it picks the least loaded
   (fewest requests in flight), ties broken round robin. Given an `InlineReads`
   (concord.net.door_reads), the door answers the reads of bounded cost itself from
   shared memory, or hands them to the raft worker; those it declines go on as above;
   the same reads at `strong` it holds, and answers itself after one read barrier per
   pass from the raft worker (concord.net.door_strong). A plain `get` (door_reads.plain_get)
   is offered to the inline reads before it is decoded at all, when no observer watches;
   what they cannot answer so goes the full way above;
3. remembers (token -> client envelope, id, deadline) and queues the raw payload for
   its backend; once the pass over the waiting client messages is done, each backend
   gets what was queued for it as one REQUESTS message (concord.net.backend; a lone
   request as REQUEST), so a backend wakes once per pass, not once per request;
4. when the backend replies, sends the reply to the client with the same envelope; a
   read worker may instead hand the request back (HANDOFF: a `leader` read at a leader
   without a valid lease), and it goes to the raft worker under the same token and
   deadline (no raft worker connected: `no_leader`); if no
   reply comes by the deadline (`timeout_ms` of the request, else `default_timeout_ms`,
   plus `reply_grace_ms`), the client gets a `timeout` error (outcome unknown for writes).

Client envelopes accepted at the ROUTER (frame 0 is the ROUTER's routing id):

    [identity, b"", payload]   REQ client, or DEALER sending an empty delimiter (preferred)
    [identity, payload]        DEALER without a delimiter (accepted; payload non-empty)

and the reply mirrors it: [identity, b"", reply] or [identity, reply]. Anything else
(extra frames, multi-hop envelopes, an empty payload) gets invalid_request, sent with
the delimiter if frame 1 was empty, else without. Replies never block: a client that is
gone (ROUTER_MANDATORY -> EHOSTUNREACH) or not reading (HWM -> EAGAIN) loses the reply,
which is counted.

No backend of the needed kind connected: the client gets no_leader with a message
naming what is missing, at once (it should retry or try another node).

Observers (concord/net/observer.py: the audit log, tracing spans, and the request
metrics, concord/net/door_metrics.py, while metrics are on) see each decoded request and
the reply its client gets, refusals and timeouts included; with none, the loop does
nothing more than before.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable, Mapping, Sequence

import zmq

from concord.errors import (
    ClientError,
    ConfigError,
    CorruptionError,
    InvalidRequestError,
    ShuttingDownError,
)
from concord.metrics.node import DoorMetrics
from concord.net._zmqutil import new_socket, recv_frames, send_to_client
from concord.net.backend import (
    KIND_BARRIER_ANSWER,
    KIND_HANDOFF,
    KIND_HELLO,
    KIND_REPLIES,
    KIND_REPLY,
    unpack_batch,
    unpack_header,
)
from concord.net.door_metrics import DoorMetricsObserver
from concord.net.door_outbox import RequestOutbox
from concord.net.door_reads import InlineReads, Verdict, is_inline, is_strong_inline, plain_get
from concord.net import door_strong
from concord.net.frontdoor_options import (  # re-exported: their old home
    FrontDoorOptions as FrontDoorOptions,
    FrontDoorStats as FrontDoorStats,
)
from concord.net.observer import DoorObserver, DoorReply, peer_of
from concord.net.wire import (
    OPS,
    Backend,
    OpSpec,
    Request,
    decode_request,
    error_reply,
    reply_for_error,
)

__all__ = ["FrontDoor", "FrontDoorOptions", "FrontDoorStats", "envelope_error", "route",
           "serve_in_process", "split_envelope"]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

_BATCH = 256  # messages handled per socket per poll, so neither side starves the other


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """
    (envelope, payload) of a client message at a ROUTER (the envelopes in the module
    docstring); payload None: not one of them, answer `envelope_error` on the envelope.
    """
    if len(frames) == 3 and frames[1] == b"":
        return frames[:2], frames[2]
    if len(frames) == 2 and frames[1] != b"":
        return frames[:1], frames[1]
    return (frames[:2] if len(frames) >= 2 and frames[1] == b"" else frames[:1]), None


def envelope_error(frames: list[bytes]) -> InvalidRequestError:
    """What a client message of `frames` that `split_envelope` refused is told."""
    return InvalidRequestError(
        f"expected one payload frame after an optional empty delimiter, got {len(frames) - 1} frames")


def route(request: Request, registry: Mapping[str, OpSpec] = OPS) -> Backend:
    """Where a validated request goes: READ (read worker) or RAFT (raft worker)."""
    spec = registry[request.op]
    if spec.backend is Backend.READ and request.consistency != "strong":
        return Backend.READ
    return Backend.RAFT


@dataclass(slots=True)
class _BackendInfo:
    role: Backend
    last_heard: float
    inflight: int = 0


@dataclass(slots=True)
class _Pending:
    envelope: list[bytes]
    request_id: int
    backend: bytes
    deadline: float
    role: Backend = field(default=Backend.RAFT)
    notes: tuple[object | None, ...] | None = None  # one per DoorObserver, None: none cares


class FrontDoor:
    """
    The broker. Not thread-safe: one thread (or process) owns it and calls `poll_once`
    or `serve`.

    Args:
        ctx: this process's zmq context (not owned, not terminated here).
        options: endpoints and limits.
        registry: the op table (concord.net.wire.OPS).
        clock: monotonic seconds; injected for tests.
        observers: what watches requests and replies (concord.net.observer).
        inline: answers the reads of bounded cost in the door's loop (None: every read
            goes to a read worker); closed with the door.

    Raises:
        ConfigError: bad options, or an endpoint cannot be bound.
    """

    def __init__(
        self,
        ctx: Context,
        options: FrontDoorOptions,
        registry: Mapping[str, OpSpec] = OPS,
        clock: Callable[[], float] = time.monotonic,
        observers: Sequence[DoorObserver] = (),
        inline: InlineReads | None = None,
    ) -> None:
        options.validate()
        self._inline = inline
        self.options = options
        # NB: the metrics observer never reads the client's address (see _drain_clients).
        self._peer_wanted = bool(observers)
        self.metrics = DoorMetrics()
        if self.metrics.on:
            observers = (*observers, DoorMetricsObserver(self.metrics, registry, clock))
        self._observers = tuple(observers)
        self._hold = any(o.hold_replies for o in observers)
        # Plain gets straight from their payload (door_reads.plain_get): not observed ones,
        # since observers see every request decoded.
        self._plain_gets = inline is not None and not self._observers
        self._held: list[tuple[list[bytes], bytes]] = []
        self.registry = registry
        self.stats = FrontDoorStats()
        self._clock = clock
        self._backends: dict[bytes, _BackendInfo] = {}
        self._rr = itertools.count()
        # Token epoch in the high bits: a restarted front door never matches a late reply
        # addressed to its predecessor.
        self._epoch = random.getrandbits(24) << 40
        self._tokens = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        # (deadline, token); entries whose token was answered are skipped lazily.
        self._deadlines: list[tuple[float, int]] = []
        self._closed = False
        self.client = new_socket(ctx, zmq.ROUTER, "front door client")
        try:
            self.backend = new_socket(ctx, zmq.ROUTER, "front door backend")
        except BaseException:
            self.client.close(linger=0)
            raise
        try:
            for sock in (self.client, self.backend):
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.client.setsockopt(zmq.SNDHWM, options.client_sndhwm)
            self.client.setsockopt(zmq.RCVHWM, options.client_rcvhwm)
            # Hard guard far above the soft limit: a frame over it drops the connection
            # instead of being buffered; frames up to it get an invalid_request reply.
            self.client.setsockopt(zmq.MAXMSGSIZE, 4 * options.max_request_bytes + 4096)
            self.backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
            if options.curve is not None:
                options.curve.apply(self.client)
            self.client_endpoint = self._bind(self.client, options.client_endpoint)
            self.backend_endpoint = self._bind(self.backend, options.backend_endpoint)
        except BaseException:
            self.close()
            raise
        self._outbox = RequestOutbox(self.backend)  # requests routed in this pass, unsent
        self._strong = door_strong.StrongBarriers()  # strong reads held for a read barrier
        self._poller = zmq.Poller()
        self._poller.register(self.client, zmq.POLLIN)
        self._poller.register(self.backend, zmq.POLLIN)

    @staticmethod
    def _bind(sock: Socket, endpoint: str) -> str:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"cannot bind front door endpoint {endpoint}: {exc}") from exc
        raw = sock.getsockopt(zmq.LAST_ENDPOINT)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    # -- loop ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Earliest pending request deadline, or None."""
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def poll_once(self, timeout_ms: float) -> dict[object, int]:
        """
        Wait up to `timeout_ms` for traffic, handle it, then expire overdue requests.

        Returns:
            The poll events (socket or fd -> mask), so a caller that registered its own
            fds with `register_fd` can see which are ready.
        """
        if self._closed:
            raise ShuttingDownError("front door is closed")
        deadline = self.next_deadline()
        if deadline is not None:
            timeout_ms = max(0.0, min(timeout_ms, (deadline - self._clock()) * 1000.0))
        try:
            events = dict(self._poller.poll(math.ceil(timeout_ms)))
            if events.get(self.backend):
                self._drain_backend()
            if events.get(self.client):
                self._drain_clients()
            if self._outbox:
                self._send_outbox()
        except zmq.ZMQError as exc:
            raise ShuttingDownError(f"front door socket failed: {exc}") from exc
        if self._inline is not None:
            self._keep_up_inline()
        self.expire(self._clock())
        if self._strong.can_start:
            self._send_barrier()
        if self._observers:
            self._flush_observers()
        return events

    def _keep_up_inline(self) -> None:
        assert self._inline is not None
        try:
            self._inline.keep_up()
        except CorruptionError as exc:
            self._drop_inline(exc)

    def _drop_inline(self, exc: CorruptionError) -> None:
        """
        The read workers fail and restart on a corrupt store; the door serves writes too,
        so it stops reading shared memory instead and leaves reads to them.
        """
        assert self._inline is not None
        log.error("front door stops serving reads itself: shared memory failed error=%s", exc)
        self._inline.close()
        self._inline = None
        self._plain_gets = False

    def _flush_observers(self) -> None:
        for observer in self._observers:
            observer.flush()
        held, self._held = self._held, []
        for envelope, reply in held:
            self._send_client(envelope, reply)

    def register_fd(self, fd: int) -> None:
        """Also wake `poll_once` when the OS file descriptor `fd` is readable."""
        self._poller.register(fd, zmq.POLLIN)

    def serve(self, should_stop: Callable[[], bool], tick_ms: float = 100.0) -> None:
        """Run `poll_once` until `should_stop()` is true (checked every `tick_ms`)."""
        while not should_stop():
            self.poll_once(tick_ms)
            stats = self.stats
            self.metrics.sample(stats.handoffs, stats.invalid, stats.client_gone)

    # -- clients -------------------------------------------------------------------

    def _drain_clients(self) -> None:
        observed = self._peer_wanted
        for _ in range(_BATCH):
            try:
                if observed:
                    # NB: frames (copy=False) only to read the client's address, lazily.
                    raw = self.client.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    self._handle_client([f.bytes for f in raw], raw[-1])
                else:
                    self._handle_client(recv_frames(self.client))
            except zmq.Again:
                return

    def _handle_client(self, frames: list[bytes], frame: zmq.Frame | None = None) -> None:
        self.stats.requests += 1
        envelope, payload = split_envelope(frames)
        if payload is None:
            self._reject(envelope, envelope_error(frames))
            return
        if self._plain_gets and len(payload) <= self.options.max_request_bytes:
            parts = plain_get(payload)  # concord.net.door_reads: before any decoding
            if parts is not None:
                if parts[2] != "strong":
                    if self._answer_get(envelope, parts):
                        return
                elif self._hold_plain_strong(envelope, parts, payload):  # concord.net.door_strong
                    return
        try:
            request = decode_request(payload, self.registry, self.options.max_request_bytes)
        except InvalidRequestError as exc:
            self._reject(envelope, exc)
            return
        notes = None
        if self._observers:
            notes, payload = self._begin(request, payload, frame)
        target = route(request, self.registry)
        if (target is Backend.RAFT and self._inline is not None and self._inline.ready
                and is_strong_inline(request, self.registry)):
            self._hold_strong(envelope, request, payload, notes)  # concord.net.door_strong
            return
        if target is Backend.READ and self._inline is not None and is_inline(request, self.registry):
            reply = self._serve_inline(request)
            if isinstance(reply, bytes):
                self._answer(envelope, reply, notes, target, inline=True)
                return
            if reply is Verdict.HAND_OFF:
                self.stats.handoffs += 1
                target = Backend.RAFT
        backend = self._pick(target)
        if backend is None:
            self.stats.unroutable += 1
            what = "read worker" if target is Backend.READ else "raft worker"
            self._answer(envelope, error_reply(
                request.id, "no_leader", f"no {what} is connected to this node's front door; retry", None
            ), notes, target)
            return
        token, pending = self._admit(envelope, request, backend, target, notes)
        self._queue(backend, token, pending, payload)

    def _new_token(self) -> int:
        return self._epoch | (next(self._tokens) & ((1 << 40) - 1))

    def _admit(self, envelope: list[bytes], request: Request, backend: bytes, role: Backend,
               notes: tuple[object | None, ...] | None) -> tuple[int, _Pending]:
        """A new token for `request` and its pending entry, timed out from now on."""
        timeout_ms = min(request.timeout_ms or self.options.default_timeout_ms, self.options.max_timeout_ms)
        token = self._new_token()
        deadline = self._clock() + (timeout_ms + self.options.reply_grace_ms) / 1000.0
        heapq.heappush(self._deadlines, (deadline, token))
        return token, _Pending(envelope, request.id, backend, deadline, role, notes)

    def _answer_get(self, envelope: list[bytes], parts: tuple[int, str, str]) -> bool:
        """Answer a plain get from the inline reads if they can (InlineReads.answer_get)."""
        assert self._inline is not None
        try:
            reply = self._inline.answer_get(*parts)
        except CorruptionError as exc:
            self._drop_inline(exc)
            return False
        if reply is None:
            return False
        self.stats.inline += 1
        self._send_client(envelope, reply)
        return True

    def _serve_inline(self, request: Request) -> bytes | Verdict:
        assert self._inline is not None
        try:
            reply = self._inline.answer(request)
        except CorruptionError as exc:
            self._drop_inline(exc)
            reply = Verdict.DECLINE
        if isinstance(reply, bytes):
            self.stats.inline += 1
        elif reply is Verdict.DECLINE:
            self.stats.inline_declined += 1
        return reply

    def _begin(self, request: Request, payload: bytes, frame: zmq.Frame | None
               ) -> tuple[tuple[object | None, ...] | None, bytes]:
        notes = []
        peer = peer_of(frame)
        for observer in self._observers:
            note, request, payload = observer.begin(request, payload, peer)
            notes.append(note)
        return (tuple(notes) if notes.count(None) < len(notes) else None), payload

    def _answer(self, envelope: list[bytes], reply: bytes,
                notes: tuple[object | None, ...] | None, role: Backend, inline: bool = False) -> None:
        """
        Send `reply`, after telling the observers of a noted request (routed to `role`, or
        answered by the door itself: `inline`) about it.
        """
        if notes is None:
            self._send_client(envelope, reply)
            return
        decoded = DoorReply(reply, role, inline)
        for observer, note in zip(self._observers, notes):
            if note is not None:
                observer.end(note, decoded)
        if self._hold:
            self._held.append((envelope, reply))
        else:
            self._send_client(envelope, reply)

    def _reject(self, envelope: list[bytes], exc: ClientError) -> None:
        self.stats.invalid += 1
        log.debug("invalid request rejected reason=%s", exc.message)
        self._send_client(envelope, reply_for_error(exc))

    def _send_client(self, envelope: list[bytes], reply: bytes) -> None:
        if send_to_client(self.client, [*envelope, reply], "front door client"):
            self.stats.replies += 1
        else:
            self.stats.client_gone += 1

    # -- backends ------------------------------------------------------------------

    def _pick(self, role: Backend, exclude: bytes | None = None) -> bytes | None:
        now = self._clock()
        limit = self.options.backend_dead_after_s
        candidates = []
        for ident, info in list(self._backends.items()):
            if now - info.last_heard > limit:
                log.warning("backend silent, forgotten name=%r", ident)
                del self._backends[ident]
                continue
            if info.role is role and ident != exclude:
                candidates.append(ident)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        start = next(self._rr) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda ident: self._backends[ident].inflight)

    def _queue(self, backend: bytes, token: int, pending: _Pending, payload: bytes) -> None:
        """Route request `token` to `backend`: sent with the pass's others (_send_outbox)."""
        self._backends[backend].inflight += 1
        self._pending[token] = pending
        self._outbox.queue(backend, token, payload)

    def _send_outbox(self) -> None:
        """Send each backend its requests of this pass; one retry for those that fail."""
        outbox = self._outbox
        for backend, token, payload in outbox.send():
            self._reroute(backend, token, payload)
        for backend in outbox.unreachable:
            self._backends.pop(backend, None)
        outbox.unreachable.clear()
        self.stats.forwarded, self.stats.backend_messages = outbox.requests, outbox.messages

    def _reroute(self, failed: bytes, token: int, payload: bytes) -> None:
        """The backend of request `token` vanished or is full (HWM): one retry on another."""
        pending = self._pending.get(token)
        if pending is None:
            return
        self._done(pending)
        backend = self._pick(pending.role, exclude=failed)
        if backend is not None and self._outbox.send_now(backend, [(token, payload)]):
            self._backends[backend].inflight += 1
            pending.backend = backend
            return
        del self._pending[token]
        self.stats.unroutable += 1
        self._answer(pending.envelope, error_reply(
            pending.request_id, "no_leader", "backend unavailable on this node; retry", None
        ), pending.notes, pending.role)

    def _drain_backend(self) -> None:
        for _ in range(_BATCH):
            try:
                frames = recv_frames(self.backend)
            except zmq.Again:
                return
            self._handle_backend(frames)

    def _handle_backend(self, frames: list[bytes]) -> None:
        header = unpack_header(frames[1]) if len(frames) == 3 else None
        if header is None:
            self.stats.bad_backend_messages += 1
            return
        kind, token = header
        ident = frames[0]
        if kind == KIND_HELLO:
            try:
                role = Backend(frames[2].decode())
            except (UnicodeDecodeError, ValueError):
                self.stats.bad_backend_messages += 1
                return
            info = self._backends.get(ident)
            if info is None or info.role is not role:
                log.info("backend connected name=%r role=%s", ident, role.value)
                self._backends[ident] = _BackendInfo(role, self._clock())
            else:
                info.last_heard = self._clock()
            return
        if kind not in (KIND_REPLY, KIND_HANDOFF, KIND_REPLIES, KIND_BARRIER_ANSWER):
            self.stats.bad_backend_messages += 1
            return
        info = self._backends.get(ident)
        if info is not None:
            info.last_heard = self._clock()
        if kind == KIND_BARRIER_ANSWER:
            self._on_barrier_answer(token, frames[2])
            return
        if kind == KIND_REPLIES:  # one round's replies (concord.net.backend)
            replies = unpack_batch(frames[2])
            if replies is None:
                self.stats.bad_backend_messages += 1
                return
            for token, payload in replies:
                self._on_backend_reply(KIND_REPLY, token, payload)
            return
        self._on_backend_reply(kind, token, frames[2])

    def _on_backend_reply(self, kind: int, token: int, payload: bytes) -> None:
        """A backend's REPLY or HANDOFF for request `token`."""
        pending = self._pending.pop(token, None)
        if pending is None:
            self.stats.late_replies += 1
            return
        self._done(pending)
        if kind == KIND_HANDOFF:
            self._hand_off(token, pending, payload)
            return
        self._answer(pending.envelope, payload, pending.notes, pending.role)

    def _hand_off(self, token: int, pending: _Pending, payload: bytes) -> None:
        """Forward a request a read worker handed back to the raft worker (same token)."""
        if pending.role is not Backend.READ:
            # Only read workers hand off: from the raft worker it would loop (a bug there).
            self.stats.bad_backend_messages += 1
            log.warning("handoff from a %s backend refused", pending.role.value)
            self._answer(pending.envelope, error_reply(
                pending.request_id, "no_leader",
                f"the {pending.role.value} backend handed the request back; retry", None
            ), pending.notes, pending.role)
            return
        backend = self._pick(Backend.RAFT)
        if backend is None:
            self.stats.unroutable += 1
            self._answer(pending.envelope, error_reply(
                pending.request_id, "no_leader",
                "no raft worker is connected to this node's front door; retry", None
            ), pending.notes, pending.role)
            return
        self.stats.handoffs += 1
        pending.backend = backend
        pending.role = Backend.RAFT
        self._queue(backend, token, pending, payload)

    def _done(self, pending: _Pending) -> None:
        info = self._backends.get(pending.backend)
        if info is not None and info.inflight > 0:
            info.inflight -= 1

    def expire(self, now: float) -> int:
        """Answer `timeout` to every request past its deadline; returns how many."""
        self._strong.expire(now)
        count = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = heapq.heappop(self._deadlines)
            pending = self._pending.pop(token, None)
            if pending is None:
                continue
            count += 1
            self._done(pending)
            self.stats.timeouts += 1
            self._answer(pending.envelope, error_reply(
                pending.request_id,
                "timeout",
                f"no reply from the {pending.role.value} backend in time; outcome unknown",
                None,
            ), pending.notes, pending.role)
        return count

    # -- strong reads after a read barrier (concord/net/door_strong.py) --------------
    _hold_strong = door_strong.hold_strong
    _hold_plain_strong = door_strong.hold_plain_strong
    _send_barrier = door_strong.send_barrier
    _on_barrier_answer = door_strong.on_barrier_answer

    @property
    def backends(self) -> dict[str, str]:
        """Connected backends: name -> role."""
        return {k.decode(errors="replace"): v.role.value for k, v in self._backends.items()}

    @property
    def pending_count(self) -> int:
        """Requests forwarded and not yet answered."""
        return len(self._pending)

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Close both sockets (LINGER=0). Idempotent. Pending requests get no reply."""
        if self._closed:
            return
        self._closed = True
        if self._inline is not None:
            self._inline.close()
            self._inline = None
            self._plain_gets = False
        self.client.close(linger=0)
        self.backend.close(linger=0)
        # NB: libzmq unlinks a bound ipc path later, in its I/O thread; we own the path,
        # so remove it now and leave nothing behind whatever the timing.
        path = getattr(self, "backend_endpoint", "")
        if path.startswith("ipc://") and not path.startswith("ipc://@"):
            try:
                os.unlink(path[len("ipc://"):])
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove ipc socket path=%s error=%s", path, exc)

    def __enter__(self) -> FrontDoor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_process(options: FrontDoorOptions, conn: Connection) -> None:
    """
    Process entry point: run a front door until `conn` says "stop" or closes (lifeline).

    Sends ("ready", client_endpoint, backend_endpoint) on `conn` once bound, or
    ("error", message) if it cannot start. Creates and terminates its own zmq context.
    """
    ctx: Context = zmq.Context()
    try:
        try:
            door = FrontDoor(ctx, options)
        except ConfigError as exc:
            conn.send(("error", str(exc)))
            return
        with door:
            fd = conn.fileno()
            door.register_fd(fd)
            conn.send(("ready", door.client_endpoint, door.backend_endpoint))
            log.info("front door ready pid=%d client=%s", os.getpid(), door.client_endpoint)
            while True:
                # NB: look at the pipe only when poll says so; conn.poll() costs ~50 us.
                if door.poll_once(1000.0).get(fd):
                    try:
                        if conn.recv() == "stop":
                            return
                    except (EOFError, OSError):
                        return
    finally:
        ctx.term()
