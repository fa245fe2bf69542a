"""
Leader-only requests reaching a follower, forwarded to the leader inside the cluster.

A request only the leader may serve (`LEADER_ONLY`: every write, auth write, membership
change and leader transfer) that reaches a follower's raft worker through its front
door is relayed UNCHANGED (the client's payload, byte for byte: id, token, ns,
timeout_ms, client_id/seq/min_seq, traceparent) to the leader's raft worker over the
Raft peer link, and the leader's reply is relayed back (a success with the leader's
client endpoint added) to the front door that holds the client. A client in any language can then write through any node
without following `not_leader` hints (docs/protocol.md "Forwarding to the leader").
On (`raft.forward_to_leader`, default true), the follower forwards; whatever the
setting, a node serves what its followers forward to it.

Why here, and over the peer link:
- the follower's raft worker is where "I am not the leader; the leader is X" is known
  (the front door knows no leader, a read worker only the published one);
- the peer link is the one cluster-internal path between raft workers: authenticated
  by CURVE when it is on (the sender is the owner of the connection's key), the
  cluster id checked, the test fault filter applied. The front doors' client endpoints
  would need client CURVE keys of every node, and an extra hop each way;
- the leader serves a forwarded request through the SAME handler as its own front
  door's (`worker_requests.handle`): the token is admitted there, from the leader's own
  replicated auth tables (role, tenant, expiry, revocation, write rate), and the write's
  credential is checked again at apply. The follower checks nothing and is trusted with
  nothing but relaying bytes: forwarding is no way around auth;
- one hop, never two: a forwarded request reaching a node that is no longer the leader
  is answered there exactly as a direct one would be (`not_leader` with that node's
  hint, or `no_leader`), and the follower relays that answer. No loops, no chains.

Outcomes the client sees (the same set as without forwarding):
- the leader's reply, relayed (success or any error); a success gets one field added,
  `leader_client`: the leader's client endpoint (`with_leader_client`: the reply's bytes
  are kept, only its map header's count changes), so that a client following hints
  writes to the leader directly afterwards;
- `not_leader`/`no_leader` from the follower itself when it knows no leader, has no link
  to it, or the link refuses the message (nothing was sent: not applied);
- `timeout` ("outcome unknown") from the follower when the leader it forwarded to stops
  being the leader before answering (checked every tick), or from the front door at the
  request's deadline. Resend with the same client_id + seq: the session applies the
  write once (docs/protocol.md "Sessions").
A reply that arrives after that is dropped (counted). Nothing is retried here: resending
a write whose outcome is unknown is the client's decision (its session makes it safe).

Forward message (forward v2), the payload of a peer DATA frame (docs/formats/net.md
section 1: the envelope is unchanged, so the link's checks, counters and faults apply):

    byte 0       0xC1: the one byte msgpack never uses, so no raft message (a msgpack
                 array, concord/storage/codec.py) starts with it
    byte 1       forward version = 2 (1 is read too: kinds 1 and 2 only)
    byte 2       kind: 1 = REQUEST   follower -> leader, body = the client's request
                       2 = REPLY     leader -> follower, body = the reply to send
                       3 = REQUESTS  follower -> leader, body = several requests (batch)
                       4 = REPLIES   leader -> follower, body = several replies (batch)
    bytes 3-10   forward id, u64 big-endian, chosen by the follower (a random 24-bit
                 epoch per raft worker process, then a counter: never reused across a
                 restart; a REPLY carries its REQUEST's); 0 in REQUESTS and REPLIES
    bytes 11..   body: a msgpack map (the wire protocol's request or reply), or for
                 REQUESTS and REPLIES the batch layout of the backend link
                 (concord.net.backend `pack_batch`: count u32, then (forward id u64,
                 length u32) per item, then the maps), at most MAX_BATCH_BYTES of maps

The follower forwards the leader-only requests of one front-door message (one pass of
its door's loop) as one REQUESTS message, and the leader sends each follower the
replies of one round as one REPLIES message (a lone one as REQUEST or REPLY): one peer
message and one wake-up per batch each way instead of one per request.

A malformed forward message is dropped whole and counted (`stats.bad`). A node of an
earlier build drops it as a bad peer message: forwarding needs every node on a build with
it (or `raft.forward_to_leader = false` on the new ones during a rolling upgrade).

Pure bookkeeping around the worker's transport and front-door link; never blocks.
"""

from __future__ import annotations

import itertools
import random
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from concord.errors import InvalidRequestError
from concord.ids import NodeId
from concord.net.backend import batches, pack_batch, unpack_batch
from concord.net.wire import Request, decode_request, error_reply, with_leader_client
from concord.node import worker_requests
from concord.node.worker_requests import LEADER_ONLY
from concord.raft.state import Role

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["FORWARD_BYTE", "FORWARD_MARK", "FORWARD_VERSION", "Forwarder", "ForwardStats", "LEADER_ONLY",
           "pack_forward", "pack_forwards", "unpack_forward"]

FORWARD_MARK = 0xC1
FORWARD_BYTE = bytes((FORWARD_MARK,))  # a peer DATA payload starting with it is ours
FORWARD_VERSION = 2
KIND_REQUEST = 1
KIND_REPLY = 2
KIND_REQUESTS = 3
KIND_REPLIES = 4
_KINDS = {1: (KIND_REQUEST, KIND_REPLY), 2: (KIND_REQUEST, KIND_REPLY, KIND_REQUESTS, KIND_REPLIES)}
_HEADER = struct.Struct(">BBBQ")

#: How long past a request's own deadline its bookkeeping is kept (the front door
#: answers `timeout` at deadline + its reply grace; later replies are dropped).
_GRACE_S = 1.0
_DEFAULT_TIMEOUT_MS = 5000
_MAX_TIMEOUT_MS = 120_000


def pack_forward(kind: int, forward_id: int, body: bytes) -> bytes:
    """One forward message (layout in the module docstring)."""
    return _HEADER.pack(FORWARD_MARK, FORWARD_VERSION, kind, forward_id) + body


def pack_forwards(single: int, items: list[tuple[int, bytes]]) -> bytes:
    """
    One forward message carrying `items` (forward id, body): kind `single` (REQUEST or
    REPLY) for one item, its batch kind (REQUESTS or REPLIES) for several.
    """
    if len(items) == 1:
        return pack_forward(single, *items[0])
    return pack_forward(single + 2, 0, pack_batch(items))


def unpack_forward(payload: bytes) -> tuple[int, int, bytes] | None:
    """(kind, forward id, body) of a well-formed forward message, else None."""
    if len(payload) <= _HEADER.size:
        return None
    mark, version, kind, forward_id = _HEADER.unpack_from(payload)
    if mark != FORWARD_MARK or kind not in _KINDS.get(version, ()):
        return None
    return kind, forward_id, payload[_HEADER.size:]


def _deadline(now: float, request: Request) -> float:
    timeout_ms = min(request.timeout_ms or _DEFAULT_TIMEOUT_MS, _MAX_TIMEOUT_MS)
    return now + timeout_ms / 1000.0 + _GRACE_S


@dataclass(slots=True)
class _Sent:
    """A request this follower forwarded, waiting for the leader's reply."""

    token: int  # the front door's token of the client's request
    request_id: int
    leader: NodeId
    deadline: float


@dataclass(slots=True)
class _Served:
    """A request a follower forwarded to this node, being served here."""

    sender: NodeId
    forward_id: int
    deadline: float


@dataclass(slots=True)
class ForwardStats:
    """Counters (monotonic)."""

    forwarded: int = 0  # requests this node relayed to its leader
    served: int = 0  # requests followers relayed to this node
    unsent: int = 0  # forwards the peer link refused (answered not_leader here instead)
    abandoned: int = 0  # forwards answered `timeout` here: the leader changed first
    expired: int = 0  # forwards forgotten at their deadline (the front door timed them out)
    late: int = 0  # replies that came after their request was answered or forgotten
    bad: int = 0  # malformed forward messages, or from a node that was not asked


class Forwarder:
    """
    Both ends of forwarding for one raft worker. Not thread-safe (the worker's loop).

    Args:
        worker: the raft worker (its driver, transport, front-door link, address book).
        enabled: forward this node's leader-only requests while it follows
            (`raft.forward_to_leader`); serving forwarded requests is always on.
        max_request_bytes: the largest forwarded request served (`limits`).
        clock: monotonic seconds; injected for tests.
    """

    def __init__(self, worker: RaftWorker, enabled: bool, max_request_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._worker = worker
        self.enabled = enabled
        self._max_request_bytes = max_request_bytes
        self._clock = clock
        self.stats = ForwardStats()
        # An epoch in the high bits: after a restart of this worker, a late REPLY meant for
        # its predecessor matches none of its own forward ids (it would answer a stranger).
        self._ids = map((random.getrandbits(24) << 40).__or__, itertools.count(1))
        self._sent: dict[int, _Sent] = {}
        # Forwarded requests being served here run under NEGATIVE tokens, which no front
        # door uses (its tokens are u64): `reply` routes their answers back here.
        self._tokens = itertools.count(1)
        self._served: dict[int, _Served] = {}

    # -- follower side -----------------------------------------------------------------

    def take(self, token: int, payload: bytes, request: Request) -> bool:
        """
        Forward a front-door request to the leader if it is leader-only and this node
        follows a known leader it has a link to. False: not forwarded, serve it here
        (it gets `not_leader` / `no_leader` as without forwarding).
        """
        return not self.take_many([(token, payload, request)])

    def take_many(self, items: list[tuple[int, bytes, Request]]) -> list[tuple[int, bytes, Request]]:
        """
        `take` for the (token, payload, request) of one front-door message: those to
        forward go to the leader in as few messages as the batch cap allows. Returns
        the items not forwarded (serve them here): those not to forward, in order, then
        those the link refused.
        """
        if not self.enabled:
            return items
        worker = self._worker
        driver = worker.driver
        leader = driver.leader_id
        if driver.role is Role.LEADER or leader is None or leader == worker.node_id:
            return items
        rest: list[tuple[int, bytes, Request]] = []
        chosen: dict[int, tuple[int, bytes, Request]] = {}
        for item in items:
            if item[2].op in LEADER_ONLY:
                chosen[next(self._ids)] = item
            else:
                rest.append(item)
        if not chosen:
            return items
        now = self._clock()
        for batch in batches([(forward_id, item[1]) for forward_id, item in chosen.items()]):
            if not worker.transport.send(leader, pack_forwards(KIND_REQUEST, batch)):
                self.stats.unsent += len(batch)
                rest += (chosen[forward_id] for forward_id, _ in batch)
                continue
            for forward_id, _ in batch:
                token, _, request = chosen[forward_id]
                self._sent[forward_id] = _Sent(token, request.id, leader, _deadline(now, request))
            self.stats.forwarded += len(batch)
        return rest

    def _on_reply(self, sender: NodeId, forward_id: int, body: bytes) -> tuple[int, bytes] | None:
        """The (front-door token, reply to send) of a leader's reply, None to drop it."""
        sent = self._sent.get(forward_id)
        if sent is None:
            self.stats.late += 1
            return None
        if sent.leader != sender:
            self.stats.bad += 1
            return None
        del self._sent[forward_id]
        # The leader's endpoint rides on a success: a client that follows hints writes
        # there directly from now on (docs/protocol.md "Forwarding to the leader").
        return sent.token, with_leader_client(body, self._worker.book.client_endpoint(sender))

    # -- leader side -------------------------------------------------------------------

    def _on_request(self, sender: NodeId, forward_id: int, body: bytes,
                    proposals: list[tuple[int, bytes]]) -> bytes | None:
        """Serve a forwarded request: its reply now, or None (it comes later, `reply`)."""
        worker = self._worker
        self.stats.served += 1
        try:
            request = decode_request(body, max_bytes=self._max_request_bytes)
        except InvalidRequestError as exc:
            return error_reply(exc.request_id, exc.code, exc.message)
        if request.op not in LEADER_ONLY:
            # A member relays only leader-only ops; anything else is not served this way.
            return error_reply(request.id, "invalid_request",
                               f"op {request.op} is not forwarded to the leader")
        token = -next(self._tokens)
        self._served[token] = _Served(sender, forward_id, _deadline(self._clock(), request))
        # NB: the same handler as the front door's requests: auth admitted HERE, and a
        # node that is not the leader answers not_leader / no_leader (never forwards).
        reply = worker_requests.handle(worker, token, request, proposals)
        if reply is not None:
            del self._served[token]
        return reply

    def reply(self, token: int, payload: bytes) -> None:
        """The reply to a forwarded request served here (a negative token): send it back."""
        self.reply_many([(token, payload)])

    def reply_many(self, replies: list[tuple[int, bytes]]) -> None:
        """
        The replies of forwarded requests served here (negative tokens), sent back with
        one message per follower (as the batch cap allows).
        """
        by_sender: dict[NodeId, list[tuple[int, bytes]]] = {}
        for token, payload in replies:
            served = self._served.pop(token, None)
            if served is None:
                self.stats.late += 1
                continue
            by_sender.setdefault(served.sender, []).append((served.forward_id, payload))
        for sender, items in by_sender.items():
            self._send_replies(sender, items)

    def _send_replies(self, to: NodeId, items: list[tuple[int, bytes]]) -> None:
        # NB: dropped if the link refuses it: the follower answers its client `timeout`
        # (outcome unknown), and the client's resend is deduplicated by its session.
        for batch in batches(items):
            self._worker.transport.send(to, pack_forwards(KIND_REPLY, batch))

    # -- both --------------------------------------------------------------------------

    def on_peer(self, sender: NodeId, payload: bytes) -> None:
        """A forward message from a peer (its first byte is FORWARD_MARK)."""
        message = unpack_forward(payload)
        if message is None:
            self.stats.bad += 1
            return
        kind, forward_id, body = message
        items = [(forward_id, body)] if kind <= KIND_REPLY else unpack_batch(body)
        if items is None:
            self.stats.bad += 1
            return
        if kind in (KIND_REQUEST, KIND_REQUESTS):
            now: list[tuple[int, bytes]] = []  # replies known at once, sent together
            proposals: list[tuple[int, bytes]] = []  # the batch's writes, proposed together
            for forward_id, body in items:
                reply = self._on_request(sender, forward_id, body, proposals)
                if reply is not None:
                    now.append((forward_id, reply))
            worker_requests.propose(self._worker, proposals)
            if now:
                self._send_replies(sender, now)
            return
        relayed = [r for r in (self._on_reply(sender, i, b) for i, b in items) if r is not None]
        if relayed:
            self._worker.reply_clients(relayed)

    def on_tick(self, now: float) -> None:
        """
        Answer `timeout` (outcome unknown) to forwards whose leader is no longer this
        node's leader; forget what is past its deadline.
        """
        if self._sent:
            self._settle_sent(now)
        if self._served:
            for token in [t for t, s in self._served.items() if s.deadline <= now]:
                del self._served[token]
                self.stats.expired += 1

    def _settle_sent(self, now: float) -> None:
        worker = self._worker
        leader = worker.driver.leader_id
        abandoned = 0
        for forward_id, sent in list(self._sent.items()):
            if sent.deadline <= now:
                del self._sent[forward_id]
                self.stats.expired += 1
            elif sent.leader != leader:
                del self._sent[forward_id]
                abandoned += 1
                hint = None if leader is None or leader == worker.node_id else (
                    worker.book.client_endpoint(leader))
                worker.reply_clients([(sent.token, error_reply(
                    sent.request_id, "timeout",
                    f"leadership changed while the request was forwarded to {sent.leader}: "
                    "the outcome is unknown (resend with the same client_id and seq)", hint))])
        if abandoned:
            self.stats.abandoned += abandoned
            worker.log.info("forwarded requests answered unknown: the leader changed count=%d "
                            "leader=%s", abandoned, leader)

    @property
    def in_flight(self) -> tuple[int, int]:
        """(requests forwarded and unanswered, forwarded requests being served here)."""
        return len(self._sent), len(self._served)
