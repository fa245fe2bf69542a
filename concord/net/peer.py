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

Wire layout (peer envelope v3: a header frame with version, kind DATA or PING, the
sender's cluster id and node id, then the opaque payload), what is discarded and counted
(`stats.bad_envelope`, `dropped_unknown_sender`, `refused_other_cluster`,
`refused_wrong_key`; each logged at most once per `drop_log_interval_s` per reason;
nothing here ever raises on input), why the sender is in the header and not the ZeroMQ
routing id (no ROUTER_HANDOVER, no ZMTP heartbeat on the ROUTER: libzmq issue 4841),
the socket options and liveness (a PING to every peer sent no DATA since the last
round every `heartbeat_interval_s`; `unreachable()` lists peers silent for
`dead_after_s`): docs/formats/net.md section 1. Options and counters:
concord.net.peer_options.

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
import struct
import time
from typing import Callable, Mapping

import zmq

from concord.errors import ConfigError, ShuttingDownError
from concord.ids import NodeId
from concord.net._zmqutil import new_socket, recv_frames, send_frames
from concord.net.curve import (
    HANDSHAKE_EVENTS,
    PEER_DOMAIN,
    CurveClient,
    CurveServer,
    handshake_reason,
    public_key_of,
)
from concord.net.faults import Action, FaultFilter
from concord.net.peer_options import (  # re-exported: their old home
    PeerCurve as PeerCurve,
    PeerOptions as PeerOptions,
    PeerStats as PeerStats,
)
from concord.net.ratelog import RateLimitedLog, WarningLogger

__all__ = ["PeerCurve", "PeerOptions", "PeerStats", "PeerTransport", "PEER_VERSION", "KIND_DATA",
           "KIND_PING"]

log = logging.getLogger(__name__)

PEER_VERSION = 3
KIND_DATA = 1
KIND_PING = 2

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


def _check_node_id(node_id: str) -> bytes:
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError(f"node id {node_id!r} must be a non-empty string")
    raw = node_id.encode("utf-8")
    if len(raw) > 255 or raw[0] == 0:
        # libzmq routing ids are 1..255 bytes and may not start with a zero byte.
        raise ConfigError(f"node id {node_id!r} must be 1..255 UTF-8 bytes not starting with NUL")
    return raw


#: The first frame of a zmq_socket_monitor event: event id (16 bits), value (32 bits).
_MONITOR_EVENT = struct.Struct("=hi")
# Plain ints: zmq's flag enums cost ~1 µs per use.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _monitor_event(frames: list[bytes]) -> tuple[int, int]:
    """
    (event, value) of a zmq monitor message, decoded as zmq.utils.monitor's
    parse_monitor_message does; that module imports asyncio (zmq.asyncio), tens of ms
    at every node start for two integers.
    """
    if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
        raise ValueError(f"invalid zmq monitor message: {frames!r}")
    event, value = _MONITOR_EVENT.unpack(frames[0])
    return event, value


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
        curve: CURVE on every link (None: plaintext).
        logger: where dropped and refused messages are logged, rate-limited (the raft
            worker's adapter adds term and role); default this module's logger.

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
        curve: PeerCurve | None = None,
        logger: WarningLogger | None = None,
    ) -> None:
        self.node_id = node_id
        self._identity = _check_node_id(node_id)
        self.options = options if options is not None else PeerOptions()
        self.options.validate()
        self._cluster_id: str | None = None
        self._cluster_raw = b""
        self._data_header = self._ping_header = b""
        self._set_headers()
        self._drop_log = RateLimitedLog(logger if logger is not None else log,
                                        self.options.drop_log_interval_s, clock)
        self._curve = curve
        self._public_key = public_key_of(curve.secret_key) if curve is not None else ""
        self._dealer_keys: dict[NodeId, str] = {}  # CURVE: the server key each dealer uses
        self._next_reload_at = clock()
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
        self.monitor: Socket | None = None
        try:
            # CURVE: the ROUTER's failed handshakes (a peer with no key, a wrong key, a
            # wrong server key) reach us only through a socket monitor; each is logged.
            if curve is not None:
                self.monitor = self.router.get_monitor_socket(HANDSHAKE_EVENTS)
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
            if self._curve is not None:
                CurveServer(self._curve.secret_key, PEER_DOMAIN).apply(sock)
            # NB: no ROUTER_HANDOVER and no ZMTP heartbeat here: docs/formats/net.md section 1.
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

    def _make_dealer(self, endpoint: str, server_key: str | None) -> Socket:
        opts = self.options
        sock = new_socket(self._ctx, zmq.DEALER, "peer dealer")
        try:
            if self._curve is not None and server_key is not None:
                CurveClient(server_key, self._public_key, self._curve.secret_key).apply(sock)
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
        """Register the receiving sockets for POLLIN with the caller's poller."""
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """The sockets the caller should poll for POLLIN (the ROUTER; with CURVE its monitor)."""
        return (self.router,) if self.monitor is None else (self.router, self.monitor)

    # -- membership ----------------------------------------------------------------

    def add_peer(self, peer_id: NodeId, endpoint: str) -> None:
        """Start (or re-point) the link to `peer_id`. Idempotent for the same endpoint."""
        self._require_open()
        _check_node_id(peer_id)
        if peer_id == self.node_id:
            raise ConfigError(f"cannot add a peer link to ourselves ({peer_id})")
        if self._endpoints.get(peer_id) == endpoint:
            return
        self._endpoints[peer_id] = endpoint
        self._added_at[peer_id] = self._clock()
        self._last_heard.pop(peer_id, None)
        if self._curve is not None and peer_id not in self._curve.keys.by_node:
            self._reload_keys()
        self._link(peer_id)
        log.info("peer link added node=%s peer=%s endpoint=%s", self.node_id, peer_id, endpoint)

    def _link(self, peer_id: NodeId) -> None:
        """(Re)make the DEALER to `peer_id`; with CURVE, only if its key is known."""
        old = self._dealers.pop(peer_id, None)
        if old is not None:
            old.close(linger=0)
        self._dealer_keys.pop(peer_id, None)
        key = None
        if self._curve is not None:
            key = self._curve.keys.by_node.get(peer_id)
            if key is None:
                self.stats.no_peer_key += 1
                self._drop_log.warning(
                    "no_peer_key", "peer has no public key in the allow-list: no link to it "
                    "node=%s peer=%s keys=%s", self.node_id, peer_id, self._curve.keys.directory)
                return
            self._dealer_keys[peer_id] = key
        self._dealers[peer_id] = self._make_dealer(self._endpoints[peer_id], key)

    def maybe_reload_keys(self, now: float) -> None:
        """CURVE: re-read the allow-list if `reload_interval_s` passed since the last time."""
        if self._curve is not None and now >= self._next_reload_at:
            self._next_reload_at = now + self._curve.reload_interval_s
            self._reload_keys()

    def _reload_keys(self) -> None:
        """CURVE: re-read the allow-list; re-make the links whose peer key changed."""
        assert self._curve is not None
        try:
            changed = self._curve.keys.reload()
        except ConfigError as exc:
            self._drop_log.warning("bad_peer_keys", "peer keys not reloaded (the previous "
                                   "ones stay in force) node=%s error=%s", self.node_id, exc)
            return
        if not changed:
            return
        log.info("peer keys reloaded node=%s keys=%d", self.node_id, len(self._curve.keys.by_node))
        for peer_id in list(self._endpoints):
            if self._curve.keys.by_node.get(peer_id) != self._dealer_keys.get(peer_id):
                self._link(peer_id)

    def remove_peer(self, peer_id: NodeId) -> None:
        """Close the link to `peer_id` and forget it (no-op if unknown)."""
        if self._endpoints.pop(peer_id, None) is None:
            return
        sock = self._dealers.pop(peer_id, None)
        if sock is not None:
            sock.close(linger=0)
        self._dealer_keys.pop(peer_id, None)
        self._added_at.pop(peer_id, None)
        self._last_heard.pop(peer_id, None)
        self._data_sent_at.pop(peer_id, None)
        self._delayed = [d for d in self._delayed if d[2] != peer_id]
        heapq.heapify(self._delayed)
        log.info("peer link removed node=%s peer=%s", self.node_id, peer_id)

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Make the links match `peers` exactly (our own id is ignored)."""
        wanted = {p: e for p, e in peers.items() if p != self.node_id}
        for peer_id in list(self._endpoints):
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
            self.stats.dropped_unknown_peer += 1  # (with CURVE: also a peer with no key)
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
            send_frames(sock, (header, payload))
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
        if self._curve is not None and self._next_reload_at < deadline:
            deadline = self._next_reload_at
        if self._delayed and self._delayed[0][0] < deadline:
            deadline = self._delayed[0][0]
        return deadline

    def service_timers(self, now: float) -> None:
        """Send pings that are due and release delayed messages whose time has come."""
        self._require_open()
        self.maybe_reload_keys(now)
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
        if self.monitor is not None:
            self._drain_monitor()
        while True:
            user: str | None = None
            try:
                if self._curve is None:
                    router = self.router
                    # NB: asking costs a fifth of the zmq.Again a drained socket raises.
                    if not int(router.getsockopt(_EVENTS)) & _POLLIN:
                        return None
                    frames = recv_frames(router)
                else:
                    parts = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                    user = self._key_owner(parts[0])
                    frames = [part.bytes for part in parts]
            except zmq.Again:
                return None
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"peer transport of {self.node_id} is shutting down") from exc
            message = self._accept(frames, user)
            if message is not None:
                return message

    @staticmethod
    def _key_owner(frame: zmq.Frame) -> str | None:
        """The node the connection's CURVE key belongs to (our ZAP handler's User-Id)."""
        try:
            return str(frame.get("User-Id"))
        except zmq.ZMQError:  # no ZAP handler answered for this connection
            return None

    def _accept(self, frames: list[bytes], user: str | None = None) -> tuple[NodeId, bytes] | None:
        header = frames[1] if len(frames) == 3 else b""
        if len(header) < 4 or header[0] != PEER_VERSION or header[1] not in (KIND_DATA, KIND_PING):
            self._drop("bad_envelope", frames)
            return None
        end = 3 + header[2]
        try:
            cluster_id = header[3:end].decode("utf-8")
            sender = NodeId(header[end:].decode("utf-8"))
        except UnicodeDecodeError:
            self._drop("bad_envelope", frames)
            return None
        if not sender:
            self._drop("bad_envelope", frames)
            return None
        if self._curve is not None and user != sender:
            self._drop("refused_wrong_key", frames, sender, f"key_owner={user}")
            return None
        if sender not in self._endpoints:
            self._drop("dropped_unknown_sender", frames, sender)
            return None
        if cluster_id and self._cluster_id is not None and cluster_id != self._cluster_id:
            self._drop("refused_other_cluster", frames, sender,
                       f"cluster_id={self._cluster_id} peer_cluster_id={cluster_id}")
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

    def _drop(self, reason: str, frames: list[bytes], sender: str | None = None,
              detail: str = "") -> None:
        """Count a discarded incoming message under `reason` and log it, rate-limited."""
        count = getattr(self.stats, reason) + 1
        setattr(self.stats, reason, count)
        self._drop_log.warning(
            reason, "peer message dropped node=%s reason=%s sender=%r %sframes=%d header=%r "
            "total=%d", self.node_id, reason, sender, f"{detail} " if detail else "", len(frames),
            frames[1][:16] if len(frames) > 1 else b"", count)

    def _drain_monitor(self) -> None:
        assert self.monitor is not None
        while True:
            try:
                event, value = _monitor_event(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"peer transport of {self.node_id} is shutting down") from exc
            reason = handshake_reason(event, value)
            if reason is None:
                continue
            self.stats.refused_handshakes += 1
            self._drop_log.warning(
                f"handshake:{reason}", "peer connection refused (CURVE handshake failed) "
                "node=%s reason=%s endpoint=%s total=%d", self.node_id, reason,
                self.endpoint, self.stats.refused_handshakes)

    # -- cluster id ----------------------------------------------------------------

    @property
    def cluster_id(self) -> str | None:
        """Our cluster id as sent in every header (None: not known yet)."""
        return self._cluster_id

    @cluster_id.setter
    def cluster_id(self, cluster_id: str | None) -> None:
        if cluster_id == self._cluster_id:
            return
        raw = (cluster_id or "").encode("utf-8")
        if len(raw) > 255:
            raise ConfigError(f"cluster id {cluster_id!r} is longer than 255 UTF-8 bytes")
        self._cluster_id = cluster_id or None
        self._cluster_raw = raw
        self._set_headers()
        log.info("peer envelope cluster id set node=%s cluster_id=%s", self.node_id, cluster_id)

    def _set_headers(self) -> None:
        tail = bytes((len(self._cluster_raw),)) + self._cluster_raw + self._identity
        self._data_header = bytes((PEER_VERSION, KIND_DATA)) + tail
        self._ping_header = bytes((PEER_VERSION, KIND_PING)) + tail

    # -- liveness ------------------------------------------------------------------

    def last_heard(self, peer_id: NodeId) -> float | None:
        """Clock time of the last message (DATA or PING) from `peer_id`, or None."""
        return self._last_heard.get(peer_id)

    def unreachable(self, now: float | None = None) -> list[NodeId]:
        """Peers not heard from within `dead_after_s` (sorted)."""
        now = self._clock() if now is None else now
        limit = self.options.dead_after_s
        dead = []
        for peer_id in self._endpoints:
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
        monitor = getattr(self, "monitor", None)
        if monitor is not None and router is not None:
            router.disable_monitor()
            monitor.close(linger=0)
        if router is not None:
            router.close(linger=0)

    def __enter__(self) -> PeerTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
