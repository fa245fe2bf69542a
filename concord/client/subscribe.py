"""
A change-stream subscriber with no gap and no duplicate (zguide Clone pattern, change
stream v1 of docs/formats/events.md).

`Subscription` (made by `Client.subscribe`) SUBscribes FIRST to a node's events endpoint
(found in that node's `status` reply, or given), waits for the publisher's sync on its
prefix (which fixes the epoch and the prefix's sequence number), then catches up through
the `events` op of the SAME node from `since_revision` up to the sync's revision, and from
then on:

- drops what it already has: every change has a position (revision, i), and only
  positions above the last one delivered are yielded (the Clone pattern's
  `seq <= snapshot.seq` rule);
- checks the prefix's seq in every change and every sync: a jump means messages were
  lost (a full queue, a dropped tail), and the missing range is fetched through
  `events` before anything later is yielded;
- a new epoch (the node's raft worker restarted, or installed a snapshot) is caught up
  through `events` the same way; history the node no longer holds raises
  `CompactedError`, never a silent skip;
- a node that goes silent (no heartbeat for `dead_after_s`) is left for another member
  (learned from `status`), where the subscriber catches up by revision.

Events come out in revision order. Not thread-safe: one thread iterates a Subscription.
Owns its zmq context (closed by `close()`); create it in the process that uses it.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

import msgpack
import zmq

from concord.auth.tenants import key_prefix
from concord.client.plan import envelope, normalize_endpoint
from concord.client.raw import call_endpoint
from concord.client.results import Event, event_from
from concord.client.transport import Transport
from concord.net.events import AUTH_TOPIC
from concord.errors import (
    ClientError,
    CompactedError,
    ConfigError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RequestTimeoutError,
    ShuttingDownError,
)
from concord.net.curve import CurveClient

__all__ = ["EVENT_TYPES", "Subscription", "UntrackedPrefixError"]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

EVENT_TYPES: Final = frozenset({"put", "delete", "expire", "touch"})
_COMPLETE: Final = 1 << 62  # batch index of a position known to close its revision
_PAGE: Final = 1000


class UntrackedPrefixError(RemoteProtocolError):
    """The node tracks too many subscription prefixes to sequence this one (not retried)."""


class Subscription:
    """
    An iterator of `Event`s for keys starting with `prefix`, in revision order.

    Args:
        endpoints: client endpoints of the cluster's nodes (more are learned from
            `status`).
        prefix: key prefix (filtered by ZeroMQ at the publisher).
        types: event types to yield (None: all); filtered here, after ordering.
        since_revision: yield changes after this revision (None: from now on).
        hwm: RCVHWM of the SUB socket (messages queued before ZeroMQ drops; drops are
            detected and repaired).
        events_endpoint: subscribe here first instead of asking `status` (again after a
            missing sync, until the first subscription through it succeeds).
        token, ns: sent with every request.
        timeout_s: deadline of each `status` / `events` exchange.
        dead_after_s: a node silent this long (heartbeats come every 0.5 s) is left for
            another.
        sync_timeout_s: wait for the publisher's first sync before trying again.

    Raises:
        ConfigError: a bad argument.
        RequestTimeoutError: no node's change stream could be subscribed within timeout_s.
        CompactedError: the node no longer holds the changes after since_revision.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        prefix: str = "",
        types: Iterable[str] | None = None,
        since_revision: int | None = None,
        hwm: int = 10_000,
        events_endpoint: str | None = None,
        token: str | None = None,
        ns: str | None = None,
        timeout_s: float = 5.0,
        dead_after_s: float = 2.0,
        sync_timeout_s: float = 1.0,
        curve: CurveClient | None = None,
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not eps or not all(isinstance(e, str) and e for e in eps):
            raise ConfigError(f"endpoints must be one or more non-empty strings, got {endpoints!r}")
        wanted = None if types is None else frozenset(types)
        if wanted is not None and not wanted <= EVENT_TYPES:
            raise ConfigError(f"types must be among {sorted(EVENT_TYPES)}, got {sorted(wanted)}")
        if since_revision is not None and since_revision < 0:
            raise ConfigError(f"since_revision must be >= 0, got {since_revision}")
        if hwm < 0 or timeout_s <= 0 or dead_after_s <= 0 or sync_timeout_s <= 0:
            raise ConfigError("need hwm >= 0 and positive timeout_s, dead_after_s, sync_timeout_s")
        self.prefix = prefix
        self.types = wanted
        self.hwm = hwm
        self.token = token
        self.ns = ns
        self.timeout_s = timeout_s
        self.dead_after_s = dead_after_s
        self.sync_timeout_s = sync_timeout_s
        self._topic = prefix.encode("utf-8")
        # With a token: the stored-key prefix of its tenant ("" for a root token), learnt
        # from `whoami` at the first subscribe (docs/protocol.md "Change stream").
        self._scope: str | None = None
        self._candidates: list[str] = list(dict.fromkeys(eps))
        self._cursor = 0
        self._explicit_events = events_endpoint
        self._ctx: Context = zmq.Context()
        self._curve = curve
        self._transport = Transport(self._ctx, curve)
        self._ids = itertools.count(random.getrandbits(30))
        self._sub: Socket | None = None
        self._closed = False
        self._failed: CompactedError | UntrackedPrefixError | None = None
        # Position of the last change delivered (or skipped by `types`).
        self._rev = -1 if since_revision is None else since_revision
        self._index = _COMPLETE
        self._ready: deque[Event] = deque()
        # The live link.
        self.node: str | None = None
        self.client_endpoint: str | None = None
        self.events_endpoint: str | None = None
        self._epoch: int | None = None
        self._expected = 0  # the prefix's next seq
        self._heard = 0.0
        #: Counters, for tests and metrics.
        self.gaps = 0  # seq jumps repaired through `events`
        self.epochs = 0  # publisher epochs seen (1 on the first connect)
        self.switches = 0  # nodes left for another
        self.received = 0  # changes read from the SUB socket
        self.fetched = 0  # changes read from `events` replies
        # Subscribe now, so that changes from here on are queued (or known to be lost).
        try:
            self._connect(time.monotonic() + timeout_s)
        except BaseException:
            self.close()
            raise

    # -- lifetime ----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the last change delivered (or the start revision)."""
        return self._rev

    def close(self) -> None:
        """Close the sockets and the context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_sub()
        self._transport.close()
        self._ctx.term()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            event = self.next(3600.0)
            if event is not None:
                return event

    def next(self, timeout_s: float) -> Event | None:
        """
        The next event, or None if none came within `timeout_s`.

        Raises:
            CompactedError: changes after the last delivered revision are no longer
                retained by the node (read the state and subscribe again from its revision).
            RequestTimeoutError: no node could be reached to subscribe or catch up.
            ShuttingDownError: the subscription is closed.
        """
        if self._closed:
            raise ShuttingDownError("subscription is closed")
        if self._failed is not None and not self._ready:
            raise self._failed
        deadline = time.monotonic() + timeout_s
        try:
            while not self._ready:
                if self._sub is None:
                    self._connect(deadline + self.timeout_s)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._pump(remaining)
        except (CompactedError, UntrackedPrefixError) as exc:
            # Final: the events already queued are still delivered, then this again.
            self._failed = exc
            self._close_sub()
            if not self._ready:
                raise
        return self._ready.popleft()

    # -- connecting ----------------------------------------------------------------

    def _close_sub(self) -> None:
        if self._sub is not None:
            self._sub.close(0)
            self._sub = None
        self._epoch = None

    def _connect(self, deadline: float) -> None:
        """Subscribe to a node (the next candidate), wait for its sync, catch up."""
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            client_ep = self._candidates[self._cursor % len(self._candidates)]
            try:
                events_ep = self._explicit_events or self._discover(client_ep)
                if self._subscribe(client_ep, events_ep):
                    self._explicit_events = None  # later reconnects ask `status`
                    return
            except UntrackedPrefixError:
                self._close_sub()
                raise
            except (ClientError, ProtocolError) as exc:
                last_error = exc
                self._explicit_events = None
                log.warning("events subscribe failed endpoint=%s error=%s", client_ep, exc)
            self._close_sub()
            if self._explicit_events is None:
                self._cursor += 1
        raise RequestTimeoutError(f"could not subscribe to any node's change stream: {last_error}")

    def _discover(self, client_ep: str) -> str:
        """The events endpoint of the node at `client_ep`; learns the other members."""
        status = self._exchange(client_ep, "status", {})
        node = status.get("node")
        members = status.get("members")
        events_ep: str | None = None
        if isinstance(members, list):
            for member in members:
                if not isinstance(member, dict):
                    continue
                client = member.get("client")
                if isinstance(client, str) and client:
                    client = normalize_endpoint(client)
                    if client not in self._candidates:
                        self._candidates.append(client)
                if member.get("id") == node and isinstance(member.get("events"), str):
                    events_ep = str(member["events"])
        if events_ep is None:
            raise RemoteProtocolError(f"status of {client_ep} names no events endpoint for node {node!r}")
        self.node = str(node)
        return normalize_endpoint(events_ep)

    def _subscribe(self, client_ep: str, events_ep: str) -> bool:
        self._close_sub()
        if self.token is not None and self._scope is None:
            tenant = self._exchange(client_ep, "whoami", {}).get("tenant")
            self._scope = key_prefix(tenant) if isinstance(tenant, str) else ""
            self._topic = (self._scope + self.prefix).encode("utf-8")
        sub: Socket = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, self.hwm)
        if self.token is not None:
            # Authenticated subscription: the node sets our prefix from this message; the
            # plain one below is our SUB socket's local filter (ignored by the node).
            sub.setsockopt(zmq.SUBSCRIBE, AUTH_TOPIC + self.token.encode("ascii") + b"\x1f"
                           + self.prefix.encode("utf-8"))
        sub.setsockopt(zmq.SUBSCRIBE, self._topic)
        if self._curve is not None:
            self._curve.apply(sub)
        try:
            sub.connect(events_ep)
        except zmq.ZMQError as exc:
            sub.close(0)
            raise LocalProtocolError(f"cannot connect to events endpoint {events_ep!r}: {exc}") from exc
        self._sub = sub
        self.client_endpoint = client_ep
        self.events_endpoint = events_ep
        self._heard = time.monotonic()
        # Changes before our sync carry no seq for our prefix: the catch-up that follows
        # the sync covers them (they were published before it).
        wait_until = time.monotonic() + self.sync_timeout_s
        while True:
            remaining_ms = (wait_until - time.monotonic()) * 1000
            if remaining_ms <= 0 or not sub.poll(max(1, int(remaining_ms)), zmq.POLLIN):
                log.info("no sync from events endpoint=%s", events_ep)
                return False
            msg = self._decode(sub.recv_multipart())
            if msg is not None and msg.get("type") == "sync" and msg.get("prefix") == self._topic:
                self._on_sync(msg)
                log.info("subscribed node=%s endpoint=%s prefix=%r revision=%d",
                         self.node, events_ep, self.prefix, self._rev)
                return True

    # -- the live stream -----------------------------------------------------------

    def _pump(self, timeout_s: float) -> None:
        """Read from the SUB socket for up to `timeout_s` (or until events are ready)."""
        sub = self._sub
        assert sub is not None
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            now = time.monotonic()
            wait_s = min(deadline - now, self._heard + self.dead_after_s - now)
            # NB: poll before judging silence: messages queued while the application was
            # not reading are signs of life too.
            if not sub.poll(max(0, int(wait_s * 1000)), zmq.POLLIN):
                now = time.monotonic()
                if now - self._heard >= self.dead_after_s:
                    log.warning("events node silent node=%s endpoint=%s after_s=%.1f",
                                self.node, self.events_endpoint, self.dead_after_s)
                    self.switches += 1
                    self._close_sub()
                    self._cursor += 1
                    return
                if now >= deadline:
                    return
                continue
            # Drain what is queued without polling again (a burst is read in one go).
            for _ in range(1000):
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._heard = time.monotonic()
                msg = self._decode(frames)
                if msg is None:
                    continue
                try:
                    if msg.get("type") == "sync":
                        if msg.get("prefix") == self._topic:
                            self._on_sync(msg)
                    else:
                        self._on_change(msg)
                except UntrackedPrefixError:
                    raise
                except (ClientError, ProtocolError) as exc:
                    # The node's history could not be read (it died, or lags for good):
                    # resume at another node from the last delivered position.
                    log.warning("events catch-up failed node=%s error=%s", self.node, exc)
                    self.switches += 1
                    self._close_sub()
                    self._cursor += 1
                    return
                if self._sub is None:
                    return

    def _decode(self, frames: list[bytes]) -> dict[str, object] | None:
        if len(frames) != 2:
            return None
        try:
            msg = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.warning("undecodable change stream message dropped")
            return None
        if not isinstance(msg, dict) or msg.get("v") != 1:
            return None
        return msg

    def _on_sync(self, msg: Mapping[str, object]) -> None:
        if msg.get("tracked") is False:
            raise UntrackedPrefixError(
                f"node {self.node} tracks too many subscription prefixes to sequence {self.prefix!r}"
            )
        epoch, seq, head = msg.get("epoch"), msg.get("seq"), msg.get("revision")
        if not isinstance(epoch, int) or not isinstance(seq, int) or not isinstance(head, int):
            raise RemoteProtocolError("change stream sync lacks epoch, seq or revision")
        if epoch != self._epoch:
            self.epochs += 1
            self._epoch = epoch
            if self._rev < 0:
                self._rev, self._index = head, _COMPLETE  # since_revision None: from now on
            self._catch_up(head)
        elif seq >= self._expected:
            self.gaps += 1  # a lost tail: changes up to `head` we never saw
            self._catch_up(head)
        self._expected = seq + 1

    def _on_change(self, msg: Mapping[str, object]) -> None:
        self.received += 1
        epoch = msg.get("epoch")
        seq = self._seq_of(msg)
        if seq is None:
            return  # sent before the publisher knew our subscription: the catch-up covers it
        key = msg.get("key")
        if self._scope and isinstance(key, str) and key.startswith(self._scope):
            msg = {**msg, "key": key[len(self._scope):]}  # a tenant's keys, as `events` gives them
        event = event_from(msg)
        if epoch != self._epoch:
            # A restarted publisher whose sync we lost: fetch up to this change.
            self.epochs += 1
            self._epoch = epoch if isinstance(epoch, int) else None
            self._catch_up(event.revision)
        elif seq > self._expected:
            self.gaps += 1
            log.debug("events gap prefix=%r expected=%d got=%d revision=%d",
                      self.prefix, self._expected, seq, event.revision)
            self._catch_up(event.revision)
        elif seq < self._expected:
            return  # already seen
        self._expected = seq + 1
        if event.type in EVENT_TYPES:  # a type from a later version is counted, not yielded
            self._offer(event)

    def _seq_of(self, msg: Mapping[str, object]) -> int | None:
        seqs = msg.get("seqs")
        if not isinstance(seqs, list):
            return None
        for pair in seqs:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == self._topic:
                seq = pair[1]
                return seq if isinstance(seq, int) else None
        return None

    def _offer(self, event: Event) -> None:
        """Deliver `event` unless its position is at or below the last one delivered."""
        if event.revision < self._rev or (
            event.revision == self._rev and event.batch_index <= self._index
        ):
            return
        if not event.key.startswith(self.prefix):
            return
        self._rev = event.revision
        self._index = _COMPLETE if event.batch_index + 1 >= event.batch_size else event.batch_index
        if self.types is None or event.type in self.types:
            self._ready.append(event)

    # -- catch-up through `events` -------------------------------------------------

    def _catch_up(self, target: int) -> None:
        """
        Fetch every change after the last delivered position up to revision `target`
        from the subscribed node's history.

        Raises:
            CompactedError: the node no longer holds them.
        """
        assert self.client_endpoint is not None
        # A revision delivered in part is fetched again whole (the rest is deduplicated).
        since = self._rev if self._index == _COMPLETE else self._rev - 1
        deadline = time.monotonic() + self.timeout_s
        backoff = 0.005
        while since < target:
            reply = self._exchange(self.client_endpoint, "events", {
                "since_revision": max(0, since), "prefix": self.prefix or None, "limit": _PAGE,
            })
            events = reply.get("events")
            next_revision = reply.get("next_revision")
            if not isinstance(events, list) or not isinstance(next_revision, int):
                raise RemoteProtocolError("reply to events lacks events or next_revision")
            if reply.get("compacted") is True:
                raise CompactedError(
                    f"changes after revision {since} are no longer retained by node {self.node}"
                    f" (history starts after revision {next_revision}); read the current"
                    f" state and subscribe again from its revision"
                )
            for raw in events:
                self.fetched += 1
                self._offer(event_from(raw))
            if next_revision <= since:
                # The node has not applied up to `target` yet (it cannot be: its sync or
                # change named it); ask again shortly.
                if time.monotonic() > deadline:
                    raise RequestTimeoutError(
                        f"node {self.node} history stays at revision {since} below {target}"
                    )
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.1)
            since = next_revision

    def _exchange(self, endpoint: str, op: str, args: Mapping[str, object]) -> dict[str, object]:
        """One request to one endpoint (no redirects), resent on silence until timeout_s."""
        return call_endpoint(
            self._transport, self._ids, endpoint, op, args,
            lambda op_, request_id, args_: envelope(op_, request_id, args_, self.token, self.ns),
            self.timeout_s, max(0.05, self.timeout_s / 4),
        )
