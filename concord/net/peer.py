"""
Raft peer links over ZeroMQ ROUTER/DEALER, bytes-level.

Owned by the raft worker process (one `zmq.Context`, created in that process). The
payload is opaque: raft message encoding belongs to concord/storage/codec.py. This module never
blocks the raft loop: every send is NOBLOCK, and a message that cannot be queued (peer
down, high-water mark reached) is dropped and counted, since Raft retransmits.

Topology: each node binds one ROUTER on its peer endpoint and keeps one DEALER per peer,
connected to that peer's ROUTER. Traffic is one-way per socket: we send on our DEALERs and
receive on our ROUTER. The ROUTER never sends (it has ROUTER_MANDATORY set anyway, so a
send to an unknown peer would raise, not vanish).

Wire layout (peer envelope v2). A DEALER sends two frames; the ROUTER receives three:

    frame 0  routing id      assigned by the receiving ROUTER; ignored (see below)
    frame 1  header, 3..257 bytes
               byte 0   version   = 2 (PEER_VERSION)
               byte 1   kind      1 = DATA (frame 2 is an opaque raft message)
                                  2 = PING (liveness; frame 2 is empty)
               byte 2.. sender    the sending node's id, UTF-8, 1..255 bytes
    frame 2  payload          opaque bytes

A message with another version, an unknown kind, another frame count or a sender id that
is not UTF-8 is discarded and counted (`stats.bad_envelope`); one from a sender that is not
one of our current peers is discarded and counted (`stats.dropped_unknown_sender`). Both
are logged at most once per `drop_log_interval_s` per reason. Nothing here ever raises on
input: anyone who can reach the port can send anything.

Why the sender is in the header and not the ZeroMQ routing id (found by the whole-cluster restart tests):
with peer-chosen routing ids the ROUTER needed ROUTER_HANDOVER (so a restarted peer's new
connection is not ignored while its old one lingers), and any stranger could then take a
member's routing id. In libzmq 4.3.5 the displaced connection's engine keeps reading into a
terminated pipe, stops its input, and on the next input event (a close, a reset) marks
itself `_io_error` without being torn down; its ZMTP heartbeat timer then calls out_event,
which asserts `!_io_error` (src/stream_engine_base.cpp:310) and aborts the process
(libzmq issue 4841). So: our DEALERs set no routing id (the ROUTER numbers connections
itself, and no member's connection can be displaced), the ROUTER has no ROUTER_HANDOVER
(a connection repeating an id in use never displaces the first: libzmq keeps it apart, and
at worst its first message arrives misframed, a bad envelope) and no
ZMTP heartbeat (no timer can run on an engine stalled that way); TCP keepalive finds dead
incoming connections instead. The sender id in the header is not authenticated (CURVE is
issue 16): a stranger who knows a member's id can still send as it; what it cannot do is
stop the process or cut a member's link.

Liveness: every `heartbeat_interval_s` we PING each peer we sent no DATA to since the
previous ping round (that DATA already told it we are alive); any message from a peer (DATA or
PING) updates its last-heard time. `unreachable()` lists peers not heard from
within `dead_after_s` (a freshly added peer gets `dead_after_s` of grace). ZMTP
heartbeats and bounded reconnect intervals are set on the DEALERs so libzmq notices dead
TCP connections and reconnects by itself; IMMEDIATE=1 keeps messages for an unconnected
peer from piling up in its queue (they are dropped instead).

Caller loop (timers are serviced by the caller; this module never sleeps):

    poller = zmq.Poller(); transport.register(poller)
    while running:
        timeout_s = min(next_tick_at, transport.next_deadline() or inf) - clock()
        poller.poll(max(0, timeout_s) * 1000)
        transport.service_timers(clock())
        while (msg := transport.recv()) is not None:
            from_id, payload = msg
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import zmq

from concord.errors import ConfigError, ShuttingDownError
from concord.ids import NodeId
from concord.net._zmqutil import new_socket
from concord.net.faults import Action, FaultFilter
from concord.net.ratelog import RateLimitedLog

__all__ = ["PeerOptions", "PeerStats", "PeerTransport", "PEER_VERSION", "KIND_DATA", "KIND_PING"]

log = logging.getLogger(__name__)

PEER_VERSION = 2
KIND_DATA = 1
KIND_PING = 2

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


@dataclass(frozen=True, slots=True)
class PeerOptions:
    """Tuning of the peer links; defaults suit a LAN cluster with 100 ms ticks."""

    heartbeat_interval_s: float = 0.1
    dead_after_s: float = 1.0
    reconnect_ivl_ms: int = 50
    reconnect_ivl_max_ms: int = 1000
    sndhwm: int = 1000
    rcvhwm: int = 10000
    zmtp_heartbeat_ivl_ms: int = 500
    zmtp_heartbeat_timeout_ms: int = 2000
    tcp_keepalive_idle_s: int = 10
    tcp_keepalive_intvl_s: int = 2
    tcp_keepalive_cnt: int = 3
    drop_log_interval_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    faults_enabled: bool = False
    faults_seed: int = 0

    def validate(self) -> None:
        """
        Raises:
            ConfigError: naming the bad field.
        """
        if self.heartbeat_interval_s <= 0:
            raise ConfigError(f"peer heartbeat_interval_s must be > 0, got {self.heartbeat_interval_s}")
        if self.dead_after_s <= self.heartbeat_interval_s:
            raise ConfigError(
                f"peer dead_after_s {self.dead_after_s} must exceed heartbeat_interval_s "
                f"{self.heartbeat_interval_s}"
            )
        if self.reconnect_ivl_ms <= 0 or self.reconnect_ivl_max_ms < self.reconnect_ivl_ms:
            raise ConfigError(
                f"peer reconnect intervals must satisfy 0 < reconnect_ivl_ms <= reconnect_ivl_max_ms, "
                f"got {self.reconnect_ivl_ms} and {self.reconnect_ivl_max_ms}"
            )
        if self.sndhwm <= 0 or self.rcvhwm <= 0:
            raise ConfigError(f"peer sndhwm and rcvhwm must be > 0, got {self.sndhwm} and {self.rcvhwm}")
        keepalive = (self.tcp_keepalive_idle_s, self.tcp_keepalive_intvl_s, self.tcp_keepalive_cnt)
        if min(keepalive) <= 0:
            raise ConfigError(f"peer tcp keepalive idle, interval and count must be > 0, got {keepalive}")
        if self.drop_log_interval_s < 0:
            raise ConfigError(f"peer drop_log_interval_s must be >= 0, got {self.drop_log_interval_s}")


@dataclass(slots=True)
class PeerStats:
    """Counters (monotonic; read them for metrics and tests)."""

    sent: int = 0
    received: int = 0
    pings_sent: int = 0
    pings_received: int = 0
    dropped_unreachable: int = 0  # NOBLOCK send refused: peer not connected or HWM reached
    dropped_unknown_peer: int = 0  # send to a node id we have no link to
    dropped_fault: int = 0  # fault filter dropped (send or receive side)
    delayed: int = 0  # fault filter delayed (released later by service_timers)
    bad_envelope: int = 0  # malformed incoming message, discarded
    dropped_unknown_sender: int = 0  # well-formed, but the sender is not a current peer
    send_errors: int = 0  # unexpected zmq error on send (logged, dropped)


def _check_node_id(node_id: str) -> bytes:
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError(f"node id {node_id!r} must be a non-empty string")
    raw = node_id.encode("utf-8")
    if len(raw) > 255 or raw[0] == 0:
        # libzmq routing ids are 1..255 bytes and may not start with a zero byte.
        raise ConfigError(f"node id {node_id!r} must be 1..255 UTF-8 bytes not starting with NUL")
    return raw


class PeerTransport:
    """
    Bytes-level Raft peer links for one node.

    Args:
        ctx: this process's zmq context (the transport does not own or terminate it).
        node_id: our node id, used as our DEALERs' routing id.
        bind_endpoint: our peer ROUTER endpoint, e.g. "tcp://127.0.0.1:7500"; port 0 binds
            any free port (see `endpoint`).
        peers: initial peers, node id -> their peer endpoint (our own id is ignored).
        options: tuning and the fault filter switch.
        clock: monotonic seconds; injected for tests.

    Raises:
        ConfigError: bad node id, options or endpoint, or the endpoint cannot be bound.
    """

    def __init__(
        self,
        ctx: Context,
        node_id: NodeId,
        bind_endpoint: str,
        peers: Mapping[NodeId, str] | None = None,
        options: PeerOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        identity = _check_node_id(node_id)
        self.options = options if options is not None else PeerOptions()
        self.options.validate()
        self._data_header = bytes((PEER_VERSION, KIND_DATA)) + identity
        self._ping_header = bytes((PEER_VERSION, KIND_PING)) + identity
        self._drop_log = RateLimitedLog(log, self.options.drop_log_interval_s, clock)
        self._ctx = ctx
        self._clock = clock
        self.stats = PeerStats()
        self.faults = FaultFilter(node_id, self.options.faults_enabled, self.options.faults_seed)
        self._dealers: dict[NodeId, Socket] = {}
        self._endpoints: dict[NodeId, str] = {}
        self._last_heard: dict[NodeId, float] = {}
        self._added_at: dict[NodeId, float] = {}
        # When a DATA message last left for each peer: a peer that got one since the
        # previous ping round has heard from us, so it gets no PING (saves it a wakeup).
        self._data_sent_at: dict[NodeId, float] = {}
        self._last_ping_round = float("-inf")
        # Delayed outgoing messages: (release_at, seq, dst, payload, is_ping).
        self._delayed: list[tuple[float, int, NodeId, bytes, bool]] = []
        self._delay_seq = 0
        self._next_ping_at = clock()
        self._closed = False
        self.router = self._make_router(bind_endpoint)
        try:
            self.endpoint = self._last_endpoint(self.router)
            for peer_id, peer_endpoint in (peers or {}).items():
                if peer_id != node_id:
                    self.add_peer(peer_id, peer_endpoint)
        except BaseException:
            self.close()
            raise

    # -- sockets -------------------------------------------------------------------

    def _make_router(self, endpoint: str) -> Socket:
        opts = self.options
        sock = new_socket(self._ctx, zmq.ROUTER, "peer router")
        try:
            # NB: no ROUTER_HANDOVER and no ZMTP heartbeat here: see the module docstring.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.RCVHWM, opts.rcvhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, opts.max_message_bytes)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, opts.tcp_keepalive_idle_s)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, opts.tcp_keepalive_intvl_s)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, opts.tcp_keepalive_cnt)
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ConfigError(f"cannot bind peer endpoint {endpoint}: {exc}") from exc
        return sock

    @staticmethod
    def _last_endpoint(sock: Socket) -> str:
        raw = sock.getsockopt(zmq.LAST_ENDPOINT)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _make_dealer(self, endpoint: str) -> Socket:
        opts = self.options
        sock = new_socket(self._ctx, zmq.DEALER, "peer dealer")
        try:
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, opts.sndhwm)
            sock.setsockopt(zmq.RECONNECT_IVL, opts.reconnect_ivl_ms)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, opts.reconnect_ivl_max_ms)
            sock.setsockopt(zmq.HEARTBEAT_IVL, opts.zmtp_heartbeat_ivl_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, opts.zmtp_heartbeat_timeout_ms)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ConfigError(f"cannot connect to peer endpoint {endpoint}: {exc}") from exc
        return sock

    def register(self, poller: zmq.Poller) -> None:
        """Register the receiving socket for POLLIN with the caller's poller."""
        poller.register(self.router, zmq.POLLIN)

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """The sockets the caller should poll for POLLIN (just the ROUTER)."""
        return (self.router,)

    # -- membership ----------------------------------------------------------------

    def add_peer(self, peer_id: NodeId, endpoint: str) -> None:
        """Start (or re-point) the link to `peer_id`. Idempotent for the same endpoint."""
        self._require_open()
        _check_node_id(peer_id)
        if peer_id == self.node_id:
            raise ConfigError(f"cannot add a peer link to ourselves ({peer_id})")
        if self._endpoints.get(peer_id) == endpoint:
            return
        if peer_id in self._dealers:
            self._dealers.pop(peer_id).close(linger=0)
        self._dealers[peer_id] = self._make_dealer(endpoint)
        self._endpoints[peer_id] = endpoint
        self._added_at[peer_id] = self._clock()
        self._last_heard.pop(peer_id, None)
        log.info("peer link added node=%s peer=%s endpoint=%s", self.node_id, peer_id, endpoint)

    def remove_peer(self, peer_id: NodeId) -> None:
        """Close the link to `peer_id` and forget it (no-op if unknown)."""
        sock = self._dealers.pop(peer_id, None)
        if sock is None:
            return
        sock.close(linger=0)
        self._endpoints.pop(peer_id, None)
        self._added_at.pop(peer_id, None)
        self._last_heard.pop(peer_id, None)
        self._data_sent_at.pop(peer_id, None)
        self._delayed = [d for d in self._delayed if d[2] != peer_id]
        heapq.heapify(self._delayed)
        log.info("peer link removed node=%s peer=%s", self.node_id, peer_id)

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Make the links match `peers` exactly (our own id is ignored)."""
        wanted = {p: e for p, e in peers.items() if p != self.node_id}
        for peer_id in list(self._dealers):
            if peer_id not in wanted:
                self.remove_peer(peer_id)
        for peer_id, endpoint in wanted.items():
            self.add_peer(peer_id, endpoint)

    @property
    def peers(self) -> dict[NodeId, str]:
        """Current peers: node id -> endpoint."""
        return dict(self._endpoints)

    # -- sending -------------------------------------------------------------------

    def send(self, to: NodeId, payload: bytes) -> bool:
        """
        Queue `payload` for `to` without blocking.

        Returns:
            True if queued (or held by a fault delay), False if dropped (unknown peer,
            peer unreachable, high-water mark, fault filter). Never raises for those.

        Raises:
            ShuttingDownError: the transport was closed.
        """
        self._require_open()
        return self._send(to, payload, ping=False, now=None)

    def _send(self, to: NodeId, payload: bytes, ping: bool, now: float | None) -> bool:
        sock = self._dealers.get(to)
        if sock is None:
            self.stats.dropped_unknown_peer += 1
            return False
        verdict = self.faults.on_send(to) if self.faults.enabled else None
        if verdict is not None:
            if verdict.action is Action.DROP:
                self.stats.dropped_fault += 1
                return False
            if verdict.delay_s > 0.0:
                at = (self._clock() if now is None else now) + verdict.delay_s
                self._delay_seq += 1
                heapq.heappush(self._delayed, (at, self._delay_seq, to, payload, ping))
                self.stats.delayed += 1
                return True
        return self._send_now(sock, to, payload, ping)

    def _send_now(self, sock: Socket, to: NodeId, payload: bytes, ping: bool) -> bool:
        header = self._ping_header if ping else self._data_header
        try:
            sock.send_multipart((header, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats.dropped_unreachable += 1
            return False
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                raise ShuttingDownError(f"peer transport of {self.node_id} is shutting down") from exc
            self.stats.send_errors += 1
            log.warning("peer send failed node=%s peer=%s error=%s", self.node_id, to, exc)
            return False
        if ping:
            self.stats.pings_sent += 1
        else:
            self.stats.sent += 1
            self._data_sent_at[to] = self._clock()
        return True

    # -- timers --------------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest clock time at which `service_timers` has work (ping or delay)."""
        deadline = self._next_ping_at
        if self._delayed and self._delayed[0][0] < deadline:
            deadline = self._delayed[0][0]
        return deadline

    def service_timers(self, now: float) -> None:
        """Send pings that are due and release delayed messages whose time has come."""
        self._require_open()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, to, payload, ping = heapq.heappop(self._delayed)
            sock = self._dealers.get(to)
            if sock is None:
                self.stats.dropped_unknown_peer += 1
                continue
            self._send_now(sock, to, payload, ping)
        if now >= self._next_ping_at:
            interval = self.options.heartbeat_interval_s
            since = self._last_ping_round
            for peer_id in list(self._dealers):
                sent_at = self._data_sent_at.get(peer_id)
                if sent_at is not None and sent_at >= since:
                    continue  # DATA since the last round: it heard from us (liveness counts both)
                self._send(peer_id, b"", ping=True, now=now)
            self._last_ping_round = now
            # Never schedule in the past: a stalled loop pings once, not in a burst.
            self._next_ping_at += interval
            if self._next_ping_at <= now:
                self._next_ping_at = now + interval

    # -- receiving -----------------------------------------------------------------

    def recv_ready(self) -> bool:
        """True if the ROUTER has a message waiting (cheap, non-blocking)."""
        if self._closed:
            return False
        try:
            events = self.router.getsockopt(zmq.EVENTS)
        except zmq.ZMQError as exc:
            raise ShuttingDownError(f"peer transport of {self.node_id} is shutting down") from exc
        return bool(int(events) & zmq.POLLIN)

    def recv(self) -> tuple[NodeId, bytes] | None:
        """
        The next DATA message as (from_id, payload), or None when nothing is waiting.

        Pings and malformed or fault-filtered messages are consumed here and never
        returned. Never blocks.

        Raises:
            ShuttingDownError: the transport was closed.
        """
        self._require_open()
        while True:
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return None
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"peer transport of {self.node_id} is shutting down") from exc
            message = self._accept(frames)
            if message is not None:
                return message

    def _accept(self, frames: list[bytes]) -> tuple[NodeId, bytes] | None:
        header = frames[1] if len(frames) == 3 else b""
        if len(header) < 3 or header[0] != PEER_VERSION or header[1] not in (KIND_DATA, KIND_PING):
            self._drop("bad_envelope", frames)
            return None
        try:
            sender = NodeId(header[2:].decode("utf-8"))
        except UnicodeDecodeError:
            self._drop("bad_envelope", frames)
            return None
        if sender not in self._dealers:
            self._drop("dropped_unknown_sender", frames, sender)
            return None
        if self.faults.enabled and self.faults.on_recv(sender).action is Action.DROP:
            self.stats.dropped_fault += 1
            return None
        self._last_heard[sender] = self._clock()
        if header[1] == KIND_PING:
            self.stats.pings_received += 1
            return None
        self.stats.received += 1
        return sender, frames[2]

    def _drop(self, reason: str, frames: list[bytes], sender: str | None = None) -> None:
        """Count a discarded incoming message under `reason` and log it, rate-limited."""
        count = getattr(self.stats, reason) + 1
        setattr(self.stats, reason, count)
        self._drop_log.warning(
            reason, "peer message dropped node=%s reason=%s sender=%r frames=%d header=%r total=%d",
            self.node_id, reason, sender, len(frames), frames[1][:16] if len(frames) > 1 else b"",
            count)

    # -- liveness ------------------------------------------------------------------

    def last_heard(self, peer_id: NodeId) -> float | None:
        """Clock time of the last message (DATA or PING) from `peer_id`, or None."""
        return self._last_heard.get(peer_id)

    def unreachable(self, now: float | None = None) -> list[NodeId]:
        """Peers not heard from within `dead_after_s` (sorted)."""
        now = self._clock() if now is None else now
        limit = self.options.dead_after_s
        dead = []
        for peer_id in self._dealers:
            seen = self._last_heard.get(peer_id, self._added_at[peer_id])
            if now - seen > limit:
                dead.append(peer_id)
        return sorted(dead)

    # -- faults --------------------------------------------------------------------

    def apply_fault_command(self, cmd: Mapping[str, object]) -> dict[str, object]:
        """
        Apply a test-only fault command (see concord.net.faults); the admin op `fault`.

        Raises:
            InvalidRequestError: faults are disabled, or the command is malformed.
        """
        result = self.faults.apply_command(cmd)
        log.warning("fault command applied node=%s cmd=%s", self.node_id, cmd.get("cmd"))
        return result

    # -- lifetime ------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise ShuttingDownError(f"peer transport of {self.node_id} is closed")

    def close(self) -> None:
        """Close every socket (LINGER=0). Idempotent. The context stays the caller's."""
        if self._closed:
            return
        self._closed = True
        for sock in self._dealers.values():
            sock.close(linger=0)
        self._dealers.clear()
        self._delayed.clear()
        router = getattr(self, "router", None)
        if router is not None:
            router.close(linger=0)

    def __enter__(self) -> PeerTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
