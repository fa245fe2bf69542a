"""
The raft worker's direct client endpoint: writes and strong reads without the front
door's hop (docs/protocol.md "Direct endpoint").

Through the front door a write costs two more process wake-ups each way (client ->
door -> raft worker -> door -> client). The direct endpoint is a second client ROUTER,
bound by the raft worker itself (`cluster.members[i].direct_port`, default 0: any free
port; -1: off) and served from its own poll loop, with the same envelope and payload as
the client endpoint (concord.net.frontdoor `split_envelope`, concord.net.wire
`decode_request`: every value checked, the size limit `limits.max_request_bytes`).

What it serves: exactly what reaches the raft worker through the door (every op whose
spec's backend is the raft worker: writes, auth ops, membership, status, events, ...),
plus reads at `strong` or `leader` consistency (the raft worker serves those too: a
ReadIndex round, or its lease). An `eventual` read is refused with `invalid_request`
naming the client endpoint (it is served from shared memory there, which the raft
worker does not read). The requests go through the SAME handler as the door's
(concord.node.worker_requests `serve_decoded`): the token is admitted there from the
replicated auth tables, writes checked again at apply, and on a follower leader-only
requests are forwarded to the leader (concord.node.forward) or answered `not_leader`
exactly as through the door. Nothing the door path checks is skipped: the door itself
checks only the envelope, the size and the op table, and so does this endpoint.

Observers: the door's audit log, tracing spans and request metrics
(concord.net.observer) see only what passes the door. So the endpoint is not bound while
any of them is on (`[audit]`, `[tracing]` or `[metrics]` enabled): every request then
goes through the door, and `status` reports `direct` nil (`direct_enabled`).

Tokens: a request taken here runs in the worker under a token from DIRECT_TOKEN_BASE
(2**64) up, which neither the door (u64 tokens) nor forwarding (negative) uses, so its
reply is told apart where the worker sends replies (`RaftWorker.reply_clients`). A
request with no reply by its deadline (its `timeout_ms`, else 5 s, at most 120 s, plus
100 ms: the door's rule) is answered `timeout` (outcome unknown), as the door does.
Never blocks: replies to a client gone or not reading are dropped and counted.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from concord.config import NodeConfig
from concord.errors import ConfigError, InvalidRequestError, ShuttingDownError
from concord.net._zmqutil import new_socket, recv_frames, send_to_client
from concord.net.curve import CurveServer
from concord.net.frontdoor import FrontDoorOptions, envelope_error, route, split_envelope
from concord.net.wire import OPS, Backend, OpSpec, Request, decode_request, error_reply, reply_for_error
from concord.node.worker_requests import serve_decoded

if TYPE_CHECKING:
    from concord.node.raft_worker import RaftWorker

__all__ = ["DIRECT_TOKEN_BASE", "DirectEndpoint", "DirectStats", "direct_enabled", "serves"]

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

#: The first token of a direct request (door tokens are u64, forwarded ones negative).
DIRECT_TOKEN_BASE = 1 << 64
#: Client messages taken per drain, so peers and the writer are not starved.
MAX_DRAIN = 1000
#: The door's timing and socket limits, so a request is timed out alike on both paths.
_DOOR = FrontDoorOptions(client_endpoint="", backend_endpoint="")


def direct_enabled(config: NodeConfig) -> bool:
    """
    Whether this node binds the direct endpoint: `direct_port` not -1, and none of the
    door's observers on (the audit log, tracing, request metrics see only the door).
    """
    return (config.member.direct_port >= 0 and not config.audit.enabled
            and not config.tracing.enabled and not config.metrics.enabled)


def serves(request: Request, registry: Mapping[str, OpSpec] = OPS) -> bool:
    """Whether the direct endpoint serves `request` (the module docstring)."""
    return route(request, registry) is Backend.RAFT or request.consistency != "eventual"


@dataclass(slots=True)
class _Waiting:
    envelope: list[bytes]
    request_id: int
    deadline: float


@dataclass(slots=True)
class DirectStats:
    """Counters (monotonic)."""

    requests: int = 0  # client messages received
    invalid: int = 0  # refused: bad envelope or payload, or not served here
    replies: int = 0  # replies sent
    timeouts: int = 0  # answered `timeout` at their deadline
    late: int = 0  # replies for a request already answered (timed out)
    client_gone: int = 0  # reply dropped: client disconnected or not reading


class DirectEndpoint:
    """
    The direct endpoint's socket and its requests in flight. Not thread-safe (the raft
    worker's loop).

    Args:
        ctx: the worker's zmq context (not owned).
        endpoint: where to bind, e.g. "tcp://127.0.0.1:7700" (port 0: any free port).
        max_request_bytes: `limits.max_request_bytes`.
        curve: CURVE on the endpoint (the client endpoint's keys), None: plaintext.
        door_endpoint: the node's client endpoint, named in refusals (None: unknown).
        clock: monotonic seconds; injected for tests.

    Raises:
        ConfigError: the endpoint cannot be bound.
    """

    def __init__(self, ctx: Context, endpoint: str, max_request_bytes: int,
                 curve: CurveServer | None, door_endpoint: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_request_bytes = max_request_bytes
        self._door = door_endpoint or "this node's client endpoint"
        self._clock = clock
        self.stats = DirectStats()
        self._tokens = itertools.count(DIRECT_TOKEN_BASE)
        self._waiting: dict[int, _Waiting] = {}
        self._deadlines: list[tuple[float, int]] = []
        self.socket = new_socket(ctx, zmq.ROUTER, "direct endpoint")
        try:
            self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.socket.setsockopt(zmq.SNDHWM, _DOOR.client_sndhwm)
            self.socket.setsockopt(zmq.RCVHWM, _DOOR.client_rcvhwm)
            # As the door's: frames over it drop the connection instead of being buffered.
            self.socket.setsockopt(zmq.MAXMSGSIZE, 4 * max_request_bytes + 4096)
            if curve is not None:
                curve.apply(self.socket)
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)
            raise ConfigError(f"cannot bind direct endpoint {endpoint}: {exc}") from exc
        raw = self.socket.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def drain(self, worker: RaftWorker) -> None:
        """Take the waiting client messages and serve them as one batch."""
        decoded: list[tuple[int, bytes, Request]] = []
        replies: list[tuple[int, bytes]] = []
        for _ in range(MAX_DRAIN):
            try:
                frames = recv_frames(self.socket)
            except zmq.Again:
                break
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"direct endpoint socket failed: {exc}") from exc
            self.stats.requests += 1
            taken = self._take(frames)
            if taken is not None:
                decoded.append(taken)
        if not decoded:
            return
        # NB: the door's requests' handler: auth, forwarding, not_leader, proposals.
        serve_decoded(worker, decoded, replies)
        self.reply_many(replies)

    def _take(self, frames: list[bytes]) -> tuple[int, bytes, Request] | None:
        """One client message: (token, payload, request) to serve, or None (answered)."""
        envelope, payload = split_envelope(frames)
        if payload is None:
            self._refuse(envelope, reply_for_error(envelope_error(frames)))
            return None
        try:
            request = decode_request(payload, OPS, self._max_request_bytes)
        except InvalidRequestError as exc:
            self._refuse(envelope, reply_for_error(exc))
            return None
        if not serves(request):
            self._refuse(envelope, error_reply(
                request.id, "invalid_request",
                f"{request.op} at consistency eventual is not served on the direct endpoint "
                f"(writes and strong or leader reads only); send it to {self._door}"))
            return None
        timeout_ms = min(request.timeout_ms or _DOOR.default_timeout_ms, _DOOR.max_timeout_ms)
        deadline = self._clock() + (timeout_ms + _DOOR.reply_grace_ms) / 1000.0
        token = next(self._tokens)
        self._waiting[token] = _Waiting(envelope, request.id, deadline)
        heapq.heappush(self._deadlines, (deadline, token))
        return token, payload, request

    def _refuse(self, envelope: list[bytes], reply: bytes) -> None:
        self.stats.invalid += 1
        self._send(envelope, reply)

    def take_own(self, replies: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Send the replies of direct requests among `replies`; returns the others."""
        rest: list[tuple[int, bytes]] = []
        own: list[tuple[int, bytes]] = []
        for item in replies:
            (own if item[0] >= DIRECT_TOKEN_BASE else rest).append(item)
        if own:
            self.reply_many(own)
        return rest

    def reply_many(self, replies: list[tuple[int, bytes]]) -> None:
        """Send each (token, reply) to the client that sent the request of `token`."""
        for token, payload in replies:
            waiting = self._waiting.pop(token, None)
            if waiting is None:
                self.stats.late += 1
                continue
            self._send(waiting.envelope, payload)

    def expire(self, now: float) -> None:
        """Answer `timeout` (outcome unknown) to the requests past their deadline."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, token = heapq.heappop(deadlines)
            waiting = self._waiting.pop(token, None)
            if waiting is None:
                continue
            self.stats.timeouts += 1
            self._send(waiting.envelope, error_reply(
                waiting.request_id, "timeout",
                "no reply from the raft worker in time; outcome unknown", None))

    def _send(self, envelope: list[bytes], reply: bytes) -> None:
        if send_to_client(self.socket, [*envelope, reply], "direct endpoint"):
            self.stats.replies += 1
        else:
            self.stats.client_gone += 1

    def close(self) -> None:
        """Close the socket (LINGER=0); requests in flight get no reply."""
        self.socket.close(linger=0)
