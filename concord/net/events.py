"""
The change stream of a node (docs/formats/events.md): an XPUB publisher of one message per changed
user key, a bounded retained history served by the `events` op, and the per-prefix
sequence numbers that let a subscriber detect every lost message, even with a prefix
filter.

Used by every node's raft worker after apply: `publish(changes)` never blocks (XPUB
drops for a subscriber whose queue is full, SNDHWM per subscriber), `service(now_s)`
reads the subscriptions the XPUB socket reports and sends heartbeats. SYSTEM-space
changes are never published. Never raises zmq errors: they become concord.errors types.

Wire layout (change stream v1: every message is two frames, topic and one msgpack
payload map, a change or a sync), guarded subscriptions (`AUTH_TOPIC` + token + 0x1f +
prefix, with XPUB_MANUAL) and the gap scheme (a counter per active prefix, a sync
answering every subscribe and every `heartbeat_s`): docs/formats/events.md "Messages",
"Guarded subscriptions" and "The gap scheme". The change maps and the retained history
(the `events` op) are built in concord.net.event_history.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

import zmq

from concord.errors import ConfigError, ShuttingDownError
from concord.kv.record import Change
from concord.net._zmqutil import Context, Socket, new_socket
from concord.net.curve import CurveServer
from concord.net.event_history import (  # the encoding and history, re-exported: their old home
    DEFAULT_EVENTS_LIMIT as DEFAULT_EVENTS_LIMIT,
    ENTRY_OVERHEAD_BYTES as ENTRY_OVERHEAD_BYTES,
    EVENTS_VERSION as EVENTS_VERSION,
    MAX_EVENTS_LIMIT as MAX_EVENTS_LIMIT,
    EventHistory as EventHistory,
    EventsPage as EventsPage,
    HistoryEntry as HistoryEntry,
    _key,
    _packer,
    _rescoped,
    encode_change as encode_change,
    encode_events_reply as encode_events_reply,
    user_entries as user_entries,
)
from concord.net.wire import Request, error_reply, pack

__all__ = [
    "EVENTS_VERSION",
    "DEFAULT_EVENTS_LIMIT",
    "MAX_EVENTS_LIMIT",
    "EventHistory",
    "EventStream",
    "EventsPage",
    "HistoryEntry",
    "PrefixCounters",
    "encode_change",
]

log = logging.getLogger(__name__)

#: The topic start of an authenticated subscription (module docstring).
AUTH_TOPIC: Final = b"\x1fauth\x1f"

#: Decides a subscription topic: the prefix to subscribe and the token's expiry (cluster
#: ms, 0: never), or None to refuse it.
Guard = Callable[[bytes], "tuple[bytes, int] | None"]

_NOBLOCK: Final = int(zmq.NOBLOCK)
_SNDMORE: Final = int(zmq.SNDMORE)
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)


_K_EPOCH_SEQS: Final = (_key("epoch"), _key("seqs"))


# --------------------------------------------------------------------------- gap scheme


class PrefixCounters:
    """
    Per-prefix sequence numbers of one publisher epoch (the gap scheme, module docstring).

    Pure. `match(topic)` counts one message on every active prefix the topic starts with
    and returns their [prefix, seq] pairs. Lookup is one dict probe per distinct prefix
    length, not per prefix.

    Args:
        max_prefixes: prefixes tracked at most; a subscription beyond it is untracked
            (its sync says so, and the subscriber reports an error).
    """

    def __init__(self, max_prefixes: int = 4096) -> None:
        self.max_prefixes = max_prefixes
        self._seqs: dict[bytes, int] = {}
        self._lengths: dict[int, int] = {}  # prefix length -> number of active prefixes

    def __contains__(self, prefix: bytes) -> bool:
        return prefix in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def prefixes(self) -> list[bytes]:
        return sorted(self._seqs)

    def seq(self, prefix: bytes) -> int:
        return self._seqs.get(prefix, 0)

    def subscribe(self, prefix: bytes) -> bool:
        """Activate `prefix` (idempotent); False when it cannot be tracked."""
        if prefix in self._seqs:
            return True
        if len(self._seqs) >= self.max_prefixes:
            return False
        self._seqs[prefix] = 0
        self._lengths[len(prefix)] = self._lengths.get(len(prefix), 0) + 1
        return True

    def unsubscribe(self, prefix: bytes) -> None:
        """Deactivate `prefix` (the last subscriber of it left)."""
        if self._seqs.pop(prefix, None) is None:
            return
        left = self._lengths[len(prefix)] - 1
        if left:
            self._lengths[len(prefix)] = left
        else:
            del self._lengths[len(prefix)]

    def reset(self) -> None:
        """A new epoch: every active prefix starts again from 0."""
        for prefix in self._seqs:
            self._seqs[prefix] = 0

    def match(self, topic: bytes) -> list[list[bytes | int]]:
        """Count one message on `topic`; the [prefix, seq] pairs it carries."""
        seqs = self._seqs
        out: list[list[bytes | int]] = []
        size = len(topic)
        for length in self._lengths:
            if length <= size:
                prefix = topic[:length]
                seq = seqs.get(prefix)
                if seq is not None:
                    seqs[prefix] = seq + 1
                    out.append([prefix, seq + 1])
        return out


# --------------------------------------------------------------------------- the stream


def new_epoch() -> int:
    """A random 63-bit epoch (a restarted publisher never repeats its predecessor's)."""
    return int.from_bytes(os.urandom(8), "big") >> 1


class EventStream:
    """
    The node's change stream: XPUB socket, prefix counters and retained history.

    Not thread-safe: one owner (the raft worker loop) calls everything.

    Args:
        ctx: the process's zmq context.
        endpoint: where to bind ("tcp://host:port", port 0: any free port).
        history_entries, history_bytes: retention bounds ([events] section).
        send_values: changes carry their values ([events] send_values).
        start_revision: the store revision when the stream starts.
        sndhwm: messages queued per subscriber before XPUB drops for it.
        heartbeat_s: interval of the sync heartbeat on every active prefix.
        max_prefixes: subscription prefixes tracked at most.
        curve: CURVE on the endpoint (concord.net.curve; None: plaintext). Only the
            transport: what a subscriber may receive is decided above it.
        guard: decides every subscription (XPUB_MANUAL, module docstring); None: every
            subscription is taken as sent.

    Raises:
        ConfigError: the endpoint cannot be bound.
    """

    def __init__(
        self,
        ctx: Context,
        endpoint: str,
        *,
        history_entries: int = 10_000,
        history_bytes: int = 64 * 1024 * 1024,
        send_values: bool = True,
        start_revision: int = 0,
        sndhwm: int = 10_000,
        heartbeat_s: float = 0.5,
        max_prefixes: int = 4096,
        curve: CurveServer | None = None,
        guard: Guard | None = None,
    ) -> None:
        if heartbeat_s <= 0 or sndhwm < 0:
            raise ConfigError(f"need heartbeat_s > 0 and sndhwm >= 0, got {heartbeat_s}, {sndhwm}")
        self.history = EventHistory(history_entries, history_bytes, start_revision)
        self.send_values = send_values
        self.heartbeat_s = heartbeat_s
        self.counters = PrefixCounters(max_prefixes)
        self.epoch = new_epoch()
        self._ctx = ctx
        self._sndhwm = sndhwm
        self.guard = guard
        #: Earliest expiry (cluster ms) of a token holding a subscription; 0: none.
        self.guarded_until_ms = 0
        #: Counters, for tests and metrics.
        self.published = 0
        self.dropped = 0
        self.syncs = 0
        self._curve = curve
        self.refused = 0
        self._unbound = False  # rebind() waits for the old listener to let the port go
        self.socket: Socket = self._bind(endpoint)
        raw = self.socket.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint: str = raw.decode() if isinstance(raw, bytes) else str(raw)
        self._next_heartbeat = time.monotonic() + heartbeat_s
        log.info("events stream bound endpoint=%s epoch=%d revision=%d",
                 self.endpoint, self.epoch, start_revision)

    def _bind(self, endpoint: str) -> Socket:
        socket = self._new_socket()
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            socket.close(0)
            raise ConfigError(f"cannot bind events endpoint {endpoint}: {exc}") from exc
        return socket

    def _new_socket(self) -> Socket:
        socket = new_socket(self._ctx, zmq.XPUB, "events XPUB")
        socket.setsockopt(zmq.SNDHWM, self._sndhwm)
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        if self.guard is not None:
            socket.setsockopt(zmq.XPUB_MANUAL, 1)
        if self._curve is not None:
            self._curve.apply(socket)
        return socket

    def rebind(self, reason: str) -> Socket:
        """
        Drop every subscriber: close the socket and bind a new one to the same endpoint,
        in a new epoch, so each subscriber must subscribe, and authenticate, again.
        Returns the new socket (the owner polls it instead of the old one).

        NB: libzmq closes a listener asynchronously; until the port is free again the new
        socket stays unbound (changes are still retained, for `events`) and `service`
        retries the bind.
        """
        self.socket.close(0)
        self.socket = self._new_socket()
        self._unbound = True
        self._try_bind()
        self.guarded_until_ms = 0
        self.epoch = new_epoch()
        for prefix in self.counters.prefixes():
            self.counters.unsubscribe(prefix)
        log.info("events stream rebound reason=%s epoch=%d bound=%s", reason, self.epoch,
                 not self._unbound)
        return self.socket

    def _try_bind(self) -> None:
        try:
            self.socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise ConfigError(f"cannot bind events endpoint {self.endpoint}: {exc}") from exc
            return
        self._unbound = False

    # -- publishing ------------------------------------------------------------------

    def publish(self, changes: Sequence[Change]) -> None:
        """
        Retain and send the user changes of applied entries (in apply order). Call it
        after every apply round; never blocks.
        """
        entries = user_entries(changes, self.send_values)
        if not entries:
            return
        # Subscriptions that arrived before these changes get seqs first. NB: asking the
        # socket whether any wait is cheaper than the raising receive that finds none.
        self.service(readable=bool(int(self.socket.getsockopt(_EVENTS)) & _POLLIN))
        try:
            self.history.append(entries)
        except ValueError as exc:
            # NB: never crash the raft loop over the stream: restart it in a new epoch, so
            # subscribers catch up (or learn they cannot) instead of missing changes.
            log.error("events history out of order, resetting error=%s", exc)
            self.reset(entries[0].revision - 1)
            self.history.append(entries)
        if not len(self.counters):
            # No prefix is subscribed: any receiver would ignore these (a change without
            # its prefix's seq predates its sync; the history covers it, docs/formats/
            # events.md "The gap scheme"), so they are retained but not sent.
            return
        p = _packer
        epoch_part = _K_EPOCH_SEQS[0] + p.pack(self.epoch) + _K_EPOCH_SEQS[1]
        match = self.counters.match
        send = self.socket.send
        more, last = _NOBLOCK | _SNDMORE, _NOBLOCK
        with self._sending():
            for entry in entries:
                topic = entry.key.encode("utf-8")
                body, fields = entry.encoded()
                send(topic, more)
                send(b"".join((p.pack_map_header(fields + 2), body, epoch_part,
                               p.pack(match(topic)))), last)
        self.published += len(entries)

    def advance(self, revision: int) -> None:
        """The applied revision moved without a user change (next_revision follows it)."""
        self.history.advance(revision)

    def reset(self, revision: int) -> None:
        """
        The published state was replaced whole (a snapshot install): the history restarts
        at `revision` in a new epoch, and every active prefix gets a sync.
        """
        self.history.reset(revision)
        self.epoch = new_epoch()
        self.counters.reset()
        log.info("events stream reset epoch=%d revision=%d", self.epoch, revision)
        for prefix in self.counters.prefixes():
            self._sync(prefix, True)

    # -- subscriptions and heartbeats ----------------------------------------------------

    def next_deadline(self) -> float:
        """time.monotonic() of the next heartbeat (for the owner's poll timeout)."""
        return self._next_heartbeat

    def service(self, now_s: float | None = None, readable: bool = True) -> None:
        """
        Handle subscription messages waiting on the XPUB socket; heartbeat when due.

        Args:
            readable: False when the owner's poll saw nothing on `socket`, which skips
                the (raising) non-blocking receive.
        """
        if self._unbound:
            self._try_bind()
        sock = self.socket
        for _ in range(10_000 if readable else 0):
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    raise ShuttingDownError("events stream context terminated") from exc
                raise
            if not msg:
                continue
            prefix = bytes(msg[1:])
            if self.guard is not None:
                guarded = self._guarded(msg[0], prefix)
                if guarded is None:
                    continue
                prefix = guarded
            if msg[0] == 1:
                tracked = self.counters.subscribe(prefix)
                if not tracked:
                    log.warning("events prefix not tracked prefixes=%d", len(self.counters))
                self._sync(prefix, tracked)
            elif msg[0] == 0:
                self.counters.unsubscribe(prefix)
        now = time.monotonic() if now_s is None else now_s
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            for prefix in self.counters.prefixes():
                self._sync(prefix, True)

    def _guarded(self, kind: int, topic: bytes) -> bytes | None:
        """Set (or remove) the guard's prefix for the last pipe; None: refused or ignored."""
        assert self.guard is not None
        if kind == 0:
            # Unsubscribe: narrows this pipe only. The prefix stays counted (another pipe
            # may hold it: with XPUB_MANUAL every pipe's messages reach us) until a rebind;
            # an authenticated subscription stays until its pipe closes or a rebind.
            if not topic.startswith(AUTH_TOPIC):
                opened = self.guard(topic)
                if opened is not None:
                    self.socket.setsockopt(zmq.UNSUBSCRIBE, opened[0])
            return None
        decided = self.guard(topic)
        if decided is None:
            self.refused += 1
            log.info("events subscription refused topic_bytes=%d", len(topic))
            return None
        prefix, expires_at_ms = decided
        if expires_at_ms and (not self.guarded_until_ms or expires_at_ms < self.guarded_until_ms):
            self.guarded_until_ms = expires_at_ms
        self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        return prefix

    def _sync(self, prefix: bytes, tracked: bool) -> None:
        payload = pack({
            "v": EVENTS_VERSION,
            "type": "sync",
            "prefix": prefix,
            "seq": self.counters.seq(prefix),
            "epoch": self.epoch,
            "revision": self.history.head,
            "floor": self.history.floor,
            "tracked": tracked,
        })
        self._send([prefix, payload])
        self.syncs += 1

    def _send(self, frames: list[bytes]) -> None:
        with self._sending():
            self.socket.send_multipart(frames, zmq.NOBLOCK)

    @contextmanager
    def _sending(self) -> Iterator[None]:
        """Around sends (once per batch): a full queue counts a drop; errors are named."""
        try:
            yield
        except zmq.Again:
            self.dropped += 1  # only with XPUB_NODROP; XPUB drops silently otherwise
        except zmq.ZMQError as exc:
            if exc.errno == zmq.ETERM:
                raise ShuttingDownError("events stream context terminated") from exc
            raise ConfigError(f"events publish failed: {exc}") from exc

    # -- the `events` op ---------------------------------------------------------------

    def query(self, since_revision: int, prefix: str = "", limit: int = 0) -> EventsPage:
        """The retained changes after `since_revision` (see EventHistory.query)."""
        return self.history.query(since_revision, prefix, limit)

    def handle(self, request: Request, scope: str = "", hide: str | None = None) -> bytes:
        """
        The reply payload to a validated `events` request.

        Args:
            scope: a keyspace prefix (a tenant's): only its keys, returned without it.
            hide: leave out keys starting with this (tenant keys, for root non-admins).
        """
        args: Mapping[str, object] = request.args
        since = args.get("since_revision")
        prefix = args.get("prefix", "")
        limit = args.get("limit", 0)
        if not isinstance(since, int) or not isinstance(prefix, str) or not isinstance(limit, int):
            return error_reply(request.id, "invalid_request", "events takes since_revision, prefix?, limit?")
        page = self.history.query(since, scope + prefix, limit)
        if scope or hide is not None:
            page = EventsPage(tuple(_rescoped(e, scope) for e in page.entries
                                    if hide is None or not e.key.startswith(hide)),
                              page.next_revision, page.compacted)
        return encode_events_reply(request.id, page)

    def close(self) -> None:
        """Close the socket (LINGER=0). Idempotent."""
        self.socket.close(0)
