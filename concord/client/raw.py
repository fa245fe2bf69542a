"""
Requests to one given endpoint, over the client's transport and retry plan.

- `call_endpoint`: one op to one node (no leader redirect, no other endpoint), resent on
  silence with a fresh id each attempt until the deadline; an error reply raises its
  ClientError. Under `Client.call_at` and subscriptions.
- `request`: one raw request map to one endpoint, for tests and tools (the chaos tool,
  `python -m concord.cluster`, benchmarks): sent as given (not checked against the wire
  table), resent on silence at most `retries` times with the same id, and the first reply
  map returned as it is, error replies included. A resent write may be applied twice
  unless the map carries `client_id` + `seq` (exactly-once sessions): callers retrying
  writes must set them.

Both are a `CallPlan` pinned to the endpoint, driven by `concord.client.plan.drive` over a
`Transport` (Lazy Pirate: a silent attempt reopens the socket): the same loop as every
other client call.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Iterator, Mapping

import zmq

from concord.client.link import Reply
from concord.client.plan import Attempt, CallPlan, Envelope, Exchange, Policy, Routing, drive
from concord.client.transport import Transport
from concord.errors import LocalProtocolError, RequestTimeoutError
from concord.net.curve import CurveClient
from concord.net.wire import pack

__all__ = ["call_endpoint", "exchange_over", "request"]

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

_ids = itertools.count(random.randrange(1 << 30))


def exchange_over(transport: Transport) -> Exchange:
    """The blocking exchange of one attempt over `transport` (for `drive`)."""

    def exchange(attempt: Attempt) -> Reply:
        return transport.exchange(attempt.to, pack(attempt.msg), attempt.request_id, attempt.wait_s)

    return exchange


def _pinned_policy(attempt_s: float, attempt_growth: float = 1.0) -> Policy:
    # Pinned plans never redirect or count retries: only the deadline matters.
    return Policy(attempt_timeout_s=attempt_s, retries=0, max_redirects=0, backoff_s=attempt_s,
                  max_backoff_s=attempt_s, attempt_growth=attempt_growth)


def call_endpoint(
    transport: Transport,
    ids: Iterator[int],
    endpoint: str,
    op: str,
    args: Mapping[str, object],
    build: Envelope,
    timeout_s: float,
    attempt_s: float,
    attempt_growth: float = 1.0,
) -> dict[str, object]:
    """
    One op to one endpoint (no redirects): `build(op, request_id, args)` makes the map;
    it is resent on silence (a new id each attempt, each waiting `attempt_growth` times
    longer than the last, first `attempt_s`) until `timeout_s`.

    Returns:
        The ok reply.

    Raises:
        RequestTimeoutError: no reply within `timeout_s`.
        ClientError: the error the endpoint answered.
    """
    plan = CallPlan(op, args, None, Routing((endpoint,)), _pinned_policy(attempt_s, attempt_growth), ids, build,
                    timeout_s, time.monotonic(), pinned=endpoint)
    return drive(plan, exchange_over(transport))


def _as_given(op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
    return {**args, "id": request_id}


def request(
    endpoint: str,
    msg: Mapping[str, object],
    timeout_ms: int = 2000,
    retries: int = 2,
    ctx: Context | None = None,
    curve: CurveClient | None = None,
) -> dict[str, object]:
    """
    Send one request map and return the reply map (an error reply too).

    Args:
        endpoint: the node's client endpoint, e.g. "tcp://127.0.0.1:7400".
        msg: the request; "id" (an integer) is filled in if absent.
        timeout_ms: wait per attempt.
        retries: extra attempts after the first (each on a fresh socket).
        ctx: zmq context to use; a private one is created and terminated if None.
        curve: CURVE settings, for a node whose client endpoint has
            `curve.client_secret_key_file` (docs/encryption.md).

    Raises:
        RequestTimeoutError: no reply after every attempt (for a write: outcome unknown).
        RemoteProtocolError: the reply was not a msgpack map.
        LocalProtocolError: the endpoint is malformed, or the id is not an integer.
    """
    if timeout_ms <= 0 or retries < 0:
        raise LocalProtocolError(f"timeout_ms must be > 0 and retries >= 0, got {timeout_ms} and {retries}")
    body = dict(msg)
    request_id = body.setdefault("id", next(_ids))
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise LocalProtocolError(f"request id must be an integer, got {request_id!r}")
    attempt_s = timeout_ms / 1000.0
    own_ctx = ctx is None
    context: Context = zmq.Context() if ctx is None else ctx
    transport = Transport(context, curve)
    try:
        plan = CallPlan(str(body.get("op")), body, None, Routing((endpoint,)), _pinned_policy(attempt_s),
                        itertools.repeat(request_id), _as_given, (retries + 1) * attempt_s,
                        time.monotonic(), pinned=endpoint, raw=True)
        try:
            return drive(plan, exchange_over(transport))
        except RequestTimeoutError:
            raise RequestTimeoutError(
                f"no reply from {endpoint} after {retries + 1} attempts of {timeout_ms} ms", request_id
            ) from None
    finally:
        transport.close()
        if own_ctx:
            context.term()
