"""
The Python client of Concord: wire protocol v1 (docs/protocol.md, concord.net.wire).

One `Client` talks to a cluster through any of its nodes' client endpoints. It

- speaks the protocol over one DEALER per endpoint (empty delimiter frame, then one
  msgpack map), with its own zmq context unless one is passed in (LINGER=0 everywhere);
- gives every call a deadline (`timeout_s`) and waits a short while per attempt (0.25 s,
  doubling after each silent attempt; or `attempt_timeout_s` each); a silent attempt
  closes and reopens that endpoint's socket (Lazy Pirate) and moves on to the next
  endpoint (reads: at most `retries` times per call; session writes: until the deadline);
- leaves a dead node at once: a dropped connection ends its requests as silence, and a
  node whose connection is down gets no request (concord.client.link);
- follows leaders: `not_leader` with a hint sends the request there at once (at most
  `max_redirects` hops per call) and remembers it for the next call; `no_leader`,
  `shutting_down`, `storage_unavailable` or `not_leader` without a hint try the next
  endpoint after a backoff (doubling from `backoff_s` up to `max_backoff_s`) until the
  deadline;
- makes writes exactly-once: the client has a session id (`client_id`, random 64-bit
  hex unless given) and every write carries (client_id, seq) with a fresh seq; a write
  retried after a timeout carries the SAME pair, so the state machine applies it once
  and answers the retry with the first result. Reads carry no session. When every
  attempt of a write ends without an answer, the call raises UnknownResultError (it may
  or may not have been applied). Writes without a session (`sessions=False`) and the
  membership ops (not deduplicated by the state machine) are never resent after an
  unanswered attempt: they raise UnknownResultError at once;
- maps error replies to concord.errors classes (ERROR_CLASSES), with `request_id` and,
  for NotLeaderError, `leader_hint`.

Outcomes of one attempt are a closed set (docs/client.md): OK, NOT_LEADER, DROPPED (refused:
certainly not applied), TIMEOUT (no answer, or the server's `timeout`), and a final error
reply; a call whose write attempts timed out ends as UNKNOWN.

Processes: a Client owns a zmq context, which must not cross a fork: create clients in
the process that uses them (after forking).

Thread safety: a Client may be shared by threads, with many requests in flight at once
on one connection per endpoint (concord.client.transport matches replies to callers by
request id; a call with no other in flight does its own socket I/O, one made while
another drives is handed to it: no thread waits for another's round trip). Writes in flight at once share one
session id with distinct seqs and carry `min_seq`, the lowest seq still in flight, so the
state machine answers a retry of any of them from its first result (Raft thesis §6.3;
concord.client.plan.SessionSlots, docs/protocol.md "Sessions").

Missing keys: `get` raises NotFoundError unless `default=` is given, then returns it;
`get_many` omits missing keys from its dict. Python-callable conditions
(`put_if(key, value, condition=fn)`) run an optimistic loop: read the key with its
mod_revision, call `fn(current)` (current is the value, or MISSING when absent), and
`put_if(mod_revision=...)`; a concurrent change makes it read again, at most
`cas_retries` times.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Mapping, Sequence, TypeVar, overload

import zmq

from concord.client.results import MISSING, DeleteResult, ValueWithMeta
from concord.client.raw import call_endpoint, exchange_over
from concord.client.transport import Transport
from concord.errors import ConditionFailedError, InvalidRequestError, NotFoundError, ShuttingDownError
from concord.client.plan import (
    OPS_KIND,
    CallPlan,
    OpKind,
    Outcome,
    _Value,
    drive,
    envelope,
    error_from_reply,
    normalize_endpoint,
)
from concord import telemetry
from concord.client import requests
from concord.client.auth import AuthMethods
from concord.client.methods import Consistency as Consistency
from concord.client.methods import BatchMethods, LeaseMethods, MemberMethods, QueryMethods
from concord.client.requests import NO_DEFAULT, Filter, Range, Req
from concord.client.shmreads import NOT_LOCAL, LocalReads
from concord.net.curve import CurveClient
from concord.net.wire import validate
from concord.tracing import client_span

if TYPE_CHECKING:
    from concord.client.local import LocalStore
    from concord.client.subscribe import Subscription

__all__ = [
    "Client", "OpKind", "Outcome", "OPS_KIND", "call_endpoint", "envelope", "error_from_reply",
    "explicit", "normalize_endpoint", "NO_DEFAULT", "Filter", "Range", "Condition", "Consistency",
]

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


T = TypeVar("T")

# NB: bound once: module attribute lookups are a tenth of a same-host get.
_listening = telemetry.listening
_CLIENT_CALL = telemetry.CLIENT_CALL

Condition = Callable[[object], bool]


class Client(BatchMethods, LeaseMethods, QueryMethods, MemberMethods, AuthMethods, LocalReads):
    """
    A connection to a Concord cluster. The auth ops (tokens, roles, tenants) are
    `concord.client.auth.AuthMethods`.

    Args:
        endpoints: one client endpoint ("tcp://host:port") or several (any nodes of the
            cluster; the leader is found by following hints).
        timeout_s: deadline of each call, retries included.
        retries: resends of a read after silent attempts, per call (session writes are
            resent until the deadline; no_leader replies are retried until the deadline).
        attempt_timeout_s: wait of every attempt; default: 0.25 s for the first attempt
            of a call, doubling after each silent one, within `timeout_s` (a read's last
            allowed attempt, and an op never resent, wait the rest of it).
        client_id: session id for exactly-once writes (default: 64 random bits, hex).
        sessions: attach (client_id, seq) to writes; False sends writes bare and never
            resends them after an unanswered attempt.
        token: auth token sent with every request.
        ns: tenant namespace sent with every request.
        shm: serve eventual (and leased leader) reads from a same-host node's shared
            memory when the node advertises it in `status` (see concord.client.local).
            Off whenever `token` or `ns` is given (shared memory knows neither).
        shm_probe_every_s: how often to ask `status` for a store while none is attached.
        context: a zmq context to use (not terminated by close()); default: the client
            creates and terminates its own.
        max_redirects: not_leader hops followed per call.
        backoff_s, max_backoff_s: wait before retrying after no_leader or a down
            endpoint (doubling from 20 ms to 50 ms: an election takes 250..500 ms).
        cas_retries: attempts of a `put_if(condition=fn)` loop.
        first_seq: the session seq to count up from (default: 0 for a random client_id,
            the wall clock in microseconds for a given one, so a restarted process
            reusing its client_id never goes below its earlier seqs).
        server_key: the nodes' client public key (Z85, `concord keys show`), for nodes
            whose client and events endpoints use CURVE (docs/encryption.md); None: plaintext.
        key_pair: this client's CURVE (public, secret) keys; default a fresh pair.
        direct: send writes to each node's direct endpoint, learned
            from its `status` (docs/client.md "Direct endpoint"); False: all through the
            client endpoints.

    Raises:
        ConfigError: no endpoint, or a bad timing value.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float = 5.0,
        retries: int = 4,
        attempt_timeout_s: float | None = None,
        client_id: str | None = None,
        sessions: bool = True,
        token: str | None = None,
        ns: str | None = None,
        shm: bool = True,
        context: Context | None = None,
        max_redirects: int = 5,
        backoff_s: float = 0.02,
        max_backoff_s: float = 0.05,
        cas_retries: int = 16,
        first_seq: int | None = None,
        shm_probe_every_s: float = 10.0,
        server_key: str | None = None,
        key_pair: tuple[str, str] | None = None,
        direct: bool = True,
    ) -> None:
        super().__init__(
            endpoints, timeout_s=timeout_s, retries=retries, attempt_timeout_s=attempt_timeout_s,
            client_id=client_id, sessions=sessions, token=token, ns=ns, max_redirects=max_redirects,
            backoff_s=backoff_s, max_backoff_s=max_backoff_s, cas_retries=cas_retries, first_seq=first_seq,
            direct=direct,
        )
        self._own_ctx = context is None
        self._ctx: Context = zmq.Context() if context is None else context
        self._curve = CurveClient.of(server_key, key_pair)
        self._transport = Transport(self._ctx, self._curve)
        self._exchange = exchange_over(self._transport)
        # Guards the shared-memory view and `_closed`; never held over a network round trip.
        self._lock = threading.RLock()
        self._probe_lock = threading.Lock()
        self._closed = False
        self._local_ok = shm and token is None and ns is None
        self.shm_probe_every_s = shm_probe_every_s
        self._store: LocalStore | None = None
        self._next_probe = 0.0

    # -- lifetime ------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """The socket layer (its counters are useful in tests and metrics)."""
        return self._transport

    def close(self) -> None:
        """Close sockets and the shared-memory view; terminate the context if owned. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._store is not None:
                self._store.close()
                self._store = None
            self._transport.close()
            if self._own_ctx:
                self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(endpoints={list(self.endpoints)!r}, client_id={self.client_id!r})"

    # -- the request loop ----------------------------------------------------------

    def call(
        self, op: str, args: Mapping[str, object] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, object]:
        """
        Send one op (arguments whose value is None are left out) and return the ok reply.

        This is the raw form under every typed method; ops the client has no method for
        are sent as reads (never with a session).

        Raises:
            ClientError: the error reply's class (concord.errors.ERROR_CLASSES), or
                UnknownResultError / RequestTimeoutError / NoLeaderError at the deadline.
            InvalidRequestError: the arguments break the wire table (checked before sending).
            RemoteProtocolError: the server answered something that is not a reply map.
            ShuttingDownError: the client is closed.
        """
        if self._closed:
            raise ShuttingDownError("client is closed")
        started = time.perf_counter()
        outcome: BaseException | None = None
        try:
            with client_span(op), self._session(op) as session:
                return self._run(self._plan(op, args, session, timeout_s))
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if telemetry.listening(telemetry.CLIENT_CALL):
                telemetry.client_call(op, args, time.perf_counter() - started, outcome, "wire")

    def _run(self, plan: CallPlan) -> dict[str, object]:
        return drive(plan, self._exchange)

    # -- key-value ops ---------------------------------------------------------------

    def _do(self, req: Req[T]) -> T:
        """Send a typed op (a same-host shared-memory read when allowed) and decode its reply."""
        if req.consistency is not None:
            return req.decode(self._local_or_call(req.op, req.args, req.consistency))
        return req.decode(self.call(req.op, req.args))

    def put(
        self, key: str, value: object, ttl: float | None = None, compress: bool | None = None,
        *, lease: int | None = None,
    ) -> int:
        """
        Store `value` under `key`; `ttl` seconds of life (None: forever); `compress`
        forces (True) or forbids (False) zlib compression (None: the server's threshold);
        `lease` attaches the key to a lease (`lease_grant`; not with ttl): the key is
        deleted when the lease expires or is revoked.

        Returns:
            The store revision of the write.

        Raises:
            NotFoundError: the lease is not live.
        """
        return self._do(requests.put(key, value, ttl, compress, lease))

    @overload
    def get(self, key: str, consistency: Consistency = ..., *, meta: Literal[True]) -> ValueWithMeta: ...

    @overload
    def get(
        self, key: str, consistency: Consistency = ..., meta: bool = ..., default: object = ...
    ) -> object: ...

    def get(
        self,
        key: str,
        consistency: Consistency = "leader",
        meta: bool = False,
        default: object = NO_DEFAULT,
    ) -> object:
        """
        The value of `key` (a ValueWithMeta with `meta=True`).

        Args:
            consistency: "eventual" (any node's local state), "leader" (default; the
                leader under a valid lease) or "strong" (linearizable, ReadIndex).
            default: returned when the key is absent; without it, NotFoundError.

        Raises:
            NotFoundError: the key is absent and no default was given.
        """
        store = self._store
        if store is not None and not meta and not _listening(_CLIENT_CALL):
            # The hot path: the attached store answers (see concord.client.local), with no
            # request object and no timing (nobody listens).
            value = store.get(key, consistency)
            if value is not store.DECLINED:
                if value is MISSING:
                    if default is NO_DEFAULT:
                        raise NotFoundError(f"key {key!r} not found")
                    return default
                return value
            if not store.closed:
                return self._wire_get(key, consistency, meta, default)
        if not meta and self._local_ok and consistency != "strong":
            started = time.perf_counter()
            value = self._local_get(key, consistency)
            if value is not NOT_LOCAL:
                if telemetry.listening(telemetry.CLIENT_CALL):
                    telemetry.client_call(
                        "get", {"consistency": consistency}, time.perf_counter() - started,
                        {"ok": False, "error": "not_found"} if value is MISSING else None, "shm")
                if value is MISSING:
                    if default is NO_DEFAULT:
                        raise NotFoundError(f"key {key!r} not found")
                    return default
                return value
        return self._wire_get(key, consistency, meta, default)

    def _wire_get(self, key: str, consistency: str, meta: bool, default: object) -> object:
        """`get` over the wire (declined by shared memory, or none here)."""
        req = requests.get(key, consistency, meta)
        if not meta and self._local_ok and consistency != "strong":
            # NB: the wire, not shm again (a Req without consistency goes straight to call)
            req = Req(req.op, {**req.args, "consistency": consistency}, req.decode)
        try:
            return self._do(req)
        except NotFoundError:
            if default is NO_DEFAULT:
                raise
            return default

    def delete(self, key: str) -> DeleteResult:
        """Delete `key`; `deleted` is False if it was absent."""
        return self._do(requests.delete(key))

    # -- conditional writes ----------------------------------------------------------

    def put_if(
        self,
        key: str,
        value: object,
        *,
        expected: object = NO_DEFAULT,
        version: int | None = None,
        mod_revision: int | None = None,
        absent: bool | None = None,
        ttl: float | None = None,
        condition: Condition | None = None,
        lease: int | None = None,
    ) -> int:
        """
        Store `value` only if a condition holds (`ttl` and `lease` as for put); exactly one of:

        - `expected`: the current value equals it (kv comparison rules);
        - `version` / `mod_revision`: the key's (0 matches an absent key);
        - `absent=True`: the key does not exist;
        - `condition`: a Python callable given the current value (MISSING if absent),
          run as an optimistic read / compare / put_if(mod_revision) loop.

        Returns:
            The store revision of the write.

        Raises:
            ConditionFailedError: the condition does not hold (for `condition`: the
                callable said no, or the key kept changing for `cas_retries` rounds).
        """
        conds = requests.conditions(expected, version, mod_revision, absent)
        if condition is None:
            return self._do(requests.put_if(key, value, conds, ttl, lease))
        check_condition_alone(conds)
        for attempt in range(self.cas_retries):
            seen, revision = cas_view(self.get(key, consistency="leader", meta=True, default=None))
            if not condition(seen):
                raise ConditionFailedError(f"condition on key {key!r} is false")
            try:
                return self.put_if(key, value, mod_revision=revision, ttl=ttl, lease=lease)
            except ConditionFailedError:
                log.debug("put_if condition lost a race key=%s attempt=%d", key, attempt + 1)
        raise ConditionFailedError(f"key {key!r} changed during each of {self.cas_retries} put_if attempts")

    def update(self, key: str, fn: Callable[[object], object], *, ttl: float | None = None) -> object:
        """
        Replace the value of `key` by `fn(current)` (current: MISSING if absent), atomically:
        an optimistic loop of read (with mod_revision) and put_if(mod_revision), retried
        when another write got in between. `fn` may run several times: keep it pure.

        Returns:
            The value stored.

        Raises:
            ConditionFailedError: the key changed during each of `cas_retries` rounds.
        """
        for attempt in range(self.cas_retries):
            seen, revision = cas_view(self.get(key, consistency="leader", meta=True, default=None))
            value = fn(seen)
            try:
                self.put_if(key, value, mod_revision=revision, ttl=ttl)
                return value
            except ConditionFailedError:
                log.debug("update lost a race key=%s attempt=%d", key, attempt + 1)
        raise ConditionFailedError(f"key {key!r} changed during each of {self.cas_retries} update attempts")

    def delete_if(
        self,
        key: str,
        *,
        expected: object = NO_DEFAULT,
        version: int | None = None,
        mod_revision: int | None = None,
        absent: bool | None = None,
    ) -> DeleteResult:
        """
        Delete `key` only if exactly one given condition holds (as for put_if).

        Raises:
            ConditionFailedError: the condition does not hold.
        """
        return self._do(requests.delete_if(key, requests.conditions(expected, version, mod_revision, absent)))

    # -- change stream (batches, counters, leases, queries, indexes, membership:
    #    concord.client.methods) ----------------------------------------------------

    def subscribe(
        self,
        prefix: str = "",
        types: Iterable[str] | None = None,
        since_revision: int | None = None,
        hwm: int = 10_000,
        *,
        events_endpoint: str | None = None,
        dead_after_s: float = 2.0,
    ) -> Subscription:
        """
        Follow the change stream of keys starting with `prefix`: an iterator of `Event`
        in revision order, with no gap and no duplicate (concord.client.subscribe).
        `since_revision` None starts from now; `types` keeps only those event types;
        `hwm` is the SUB socket's RCVHWM. The subscription owns its sockets: close it.

        Raises:
            CompactedError: (while iterating) changes to deliver are no longer retained.
        """
        from concord.client.subscribe import Subscription  # noqa: PLC0415

        return Subscription(
            self.endpoints, prefix=prefix, types=types, since_revision=since_revision, hwm=hwm,
            events_endpoint=events_endpoint, token=self.token, ns=self.ns,
            timeout_s=self.timeout_s, dead_after_s=dead_after_s, curve=self._curve,
        )

    # -- cluster ---------------------------------------------------------------------

    def status(self, endpoint: str | None = None) -> dict[str, object]:
        """
        The answering node's status map (fields defined by the node; the reply minus
        `id` and `ok`). `endpoint` asks that node rather than the leader.
        """
        req = requests.status()
        if endpoint is None:
            return self._do(req)
        return req.decode(self.call_at(endpoint, req.op))

    def call_at(
        self, endpoint: str, op: str, args: Mapping[str, object] | None = None,
        *, timeout_s: float | None = None,
    ) -> dict[str, object]:
        """
        Send one op to the node at `endpoint` itself: no leader redirect, no other
        endpoint; resent on silence (a fresh id each attempt) until the deadline. For
        per-node ops (`status`, `hash_kv`) and reads meant for one node.

        Raises:
            RequestTimeoutError: no reply within the deadline.
            ClientError: the error reply's class.
        """
        clean = {k: v for k, v in (args or {}).items() if v is not None}
        validate(self._envelope(op, 0, clean))
        if self._closed:
            raise ShuttingDownError("client is closed")
        return self._call_at(endpoint, op, clean, timeout_s or self.timeout_s)

    def _call_at(
        self, endpoint: str, op: str, args: Mapping[str, object], timeout_s: float
    ) -> dict[str, object]:
        return call_endpoint(self._transport, self._ids, endpoint, op, args, self._envelope,
                             timeout_s, self.attempt_timeout_s, self.attempt_growth)

    def transfer_leader(self, member_id: str | None = None) -> dict[str, object]:
        """Hand leadership to `member_id` (default: the best follower); returns the reply fields."""
        reply = self._do(requests.transfer_leader(member_id))
        self._routing.follow(None)  # the next call finds the new leader through hints
        return reply


def explicit(value: object) -> object:
    """An argument for `Client.call` that is sent even when it is None (a stored nil)."""
    return _Value(value)


def check_condition_alone(conds: Mapping[str, object]) -> None:
    """put_if(condition=fn) takes no other condition."""
    if conds:
        raise InvalidRequestError(
            "put_if takes condition= alone, without expected, version, mod_revision or absent"
        )


def cas_view(current: object) -> tuple[object, int]:
    """What a condition callable sees and the mod_revision to put_if on (0: absent)."""
    if current is None:
        return MISSING, 0  # mod_revision 0 matches an absent key
    assert isinstance(current, ValueWithMeta)
    return current.value, current.revision
