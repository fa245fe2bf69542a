"""
The client's request logic without I/O: envelopes, sessions, leader routing, the retry
plan of one call and the mapping of replies to outcomes and errors.

Every client-side request goes through a `CallPlan`: the sync `concord.Client` (its calls,
`call_at`), subscriptions, the raw `concord.client.raw.request` used by tools and tests
(all through `drive`) and the asyncio `concord.aio.Client` (its awaiting twin of `drive`),
so all have the same retry semantics by construction (docs/client.md). No sockets here;
`drive` is the one place that sleeps (a backoff the plan asks for); thread-safe where noted.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator, Mapping, Protocol, Sequence

from concord.client.direct import PROBE_OP, PROBE_WAIT_S, DirectRoutes, eligible
from concord.client.link import REFUSED, Reply
from concord.client.sessions import SessionSlots, Ticket
from concord.errors import (
    ERROR_CLASSES,
    ClientError,
    ConfigError,
    NotLeaderError,
    RemoteProtocolError,
    RequestTimeoutError,
    UnknownResultError,
)
from concord.net.wire import LEADER_CLIENT_FIELD, OPS, OpKind, validate
from concord.tracing import current_traceparent

__all__ = [
    "Attempt", "CallPlan", "ClientCore", "Envelope", "Exchange", "drive", "OPS_KIND", "OpKind", "Outcome", "Policy", "Routing", "SessionSlots", "Ticket",
    "classify", "envelope", "error_from_reply", "normalize_endpoint", "server_timeout_ms",
]

log = logging.getLogger(__name__)


class Outcome(Enum):
    """The closed set of outcomes of one attempt (docs/client.md "Retries and outcomes")."""

    OK = "ok"
    NOT_LEADER = "not_leader"
    DROPPED = "dropped"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"


#: The retry class of every op, derived from the wire table (concord.net.wire.OPS).
OPS_KIND: Mapping[str, OpKind] = {name: spec.kind for name, spec in OPS.items()}

_DROPPED_CODES = frozenset({"no_leader", "shutting_down", "storage_unavailable"})

#: Longest client_id a Client accepts: slot ids append "/<n>" and kv allows 256 bytes.
MAX_CLIENT_ID_BYTES = 240


class _Value:
    """Marks an argument as a user value (never dropped when it is None)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


def unwrap(obj: object) -> object:
    """An argument as sent: user values unwrapped (also inside lists)."""
    if isinstance(obj, _Value):
        return obj.value
    if isinstance(obj, list):
        return [unwrap(x) for x in obj]
    return obj


def envelope(
    op: str, request_id: int, args: Mapping[str, object], token: str | None, ns: str | None
) -> dict[str, object]:
    """
    A request map: `args` whose value is None are left out; token and ns if set; the
    caller's traceparent inside a recording OpenTelemetry span (concord.tracing).
    """
    msg: dict[str, object] = {"op": op, "id": request_id}
    for name, value in args.items():
        if value is not None:
            msg[name] = unwrap(value)
    if token is not None:
        msg["token"] = token
    if ns is not None:
        msg["ns"] = ns
    traceparent = current_traceparent()
    if traceparent is not None:
        msg["traceparent"] = traceparent
    return msg


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def server_timeout_ms(wait_s: float) -> int:
    """
    The `timeout_ms` sent with an attempt we wait `wait_s` for: the server answers
    `timeout` a little before we stop listening (the front door adds ~100 ms of grace),
    so that the socket need not be reopened and a live but slow node is asked again
    (with a longer wait) rather than left for another.
    """
    if wait_s > 0.5:
        return _ms(wait_s - 0.3)
    if wait_s > 0.3:
        return _ms(wait_s - 0.15)
    return _ms(wait_s * 0.4)


def normalize_endpoint(endpoint: str) -> str:
    """A leader hint as a zmq endpoint: "host:port" gets the "tcp://" scheme."""
    return endpoint if "://" in endpoint else f"tcp://{endpoint}"


def error_from_reply(reply: Mapping[str, object], request_id: int | None = None) -> ClientError:
    """The ClientError an error reply stands for (unknown codes: ClientError itself)."""
    code = reply.get("error")
    message = reply.get("message")
    text = message if isinstance(message, str) else f"error {code!r}"
    rid_raw = reply.get("id")
    rid = rid_raw if isinstance(rid_raw, int) and not isinstance(rid_raw, bool) else request_id
    cls = ERROR_CLASSES.get(code) if isinstance(code, str) else None
    if cls is NotLeaderError:
        leader = reply.get("leader")
        hint = normalize_endpoint(leader) if isinstance(leader, str) and leader else None
        return NotLeaderError(text, rid, hint)
    if cls is None:
        return ClientError(f"{text} (unknown error code {code!r})", rid)
    return cls(text, rid)


def classify(reply: dict[str, object] | None, request_id: int) -> tuple[Outcome, ClientError | None]:
    """The outcome of one attempt and the error its reply carries, if any."""
    if reply is None:
        return Outcome.TIMEOUT, None
    ok = reply.get("ok")
    if ok is True:
        return Outcome.OK, None
    if ok is not False:
        raise RemoteProtocolError(f"reply to request {request_id} has no boolean ok field")
    error = error_from_reply(reply, request_id)
    code = reply.get("error")
    if code == "not_leader":
        return Outcome.NOT_LEADER, error
    if code in _DROPPED_CODES:
        return Outcome.DROPPED, error
    if code == "timeout":
        return Outcome.TIMEOUT, error
    # A definitive answer (not_found, condition_failed, invalid_request, ...): the
    # exchange completed; the caller raises the error.
    return Outcome.OK, error


class Routing:
    """
    Where a client sends next: the last known leader, a cursor, and the endpoints whose
    connection was last found down (a leader hint naming one is not followed). Thread-safe.
    """

    def __init__(self, endpoints: tuple[str, ...]) -> None:
        self.endpoints = endpoints
        self._lock = threading.Lock()
        self.leader: str | None = None
        self.direct = DirectRoutes()  # client endpoint -> direct endpoint (concord.client.direct)
        self._cursor = 0
        self._down: set[str] = set()

    def first(self) -> str:
        with self._lock:
            return self.leader or self.endpoints[self._cursor]

    def after(self, current: str) -> str:
        """The endpoint to try after `current` failed."""
        with self._lock:
            if current in self.endpoints:
                self._cursor = (self.endpoints.index(current) + 1) % len(self.endpoints)
            else:
                self._cursor = (self._cursor + 1) % len(self.endpoints)
            return self.endpoints[self._cursor]

    def follow(self, endpoint: str | None) -> None:
        """Remember `endpoint` as the leader (None: forget the leader)."""
        with self._lock:
            self.leader = endpoint

    def forget(self, endpoint: str) -> None:
        """Forget the leader if it is `endpoint`."""
        with self._lock:
            if self.leader == endpoint:
                self.leader = None

    def down(self, endpoint: str) -> None:
        """`endpoint` refused a request (its connection is down): not the leader, not a hint to follow."""
        with self._lock:
            self._down.add(endpoint)
            if self.leader == endpoint:
                self.leader = None

    def reached(self, endpoint: str) -> None:
        """`endpoint` answered."""
        if endpoint in self._down:
            with self._lock:
                self._down.discard(endpoint)

    def is_down(self, endpoint: str) -> bool:
        return endpoint in self._down


#: The default wait of a call's first attempt, and how each silent attempt's wait grows.
FIRST_ATTEMPT_S = 0.25
ATTEMPT_GROWTH = 2.0


@dataclass(frozen=True, slots=True)
class Policy:
    """
    The retry settings of a client (docs/client.md "Retries and outcomes"): a call's
    first attempt waits `attempt_timeout_s`, each attempt after a silent one
    `attempt_growth` times longer (1.0: all alike), always within the call's deadline.
    """

    attempt_timeout_s: float
    retries: int
    max_redirects: int
    backoff_s: float
    max_backoff_s: float
    attempt_growth: float = 1.0
    direct: bool = False  # writes to direct endpoints (concord.client.direct)


@dataclass(frozen=True, slots=True)
class Attempt:
    """
    One request to send: where (the client endpoint `target`; the socket's `endpoint`,
    its node's direct endpoint or the same), its id, the map and how long to wait for it;
    `probe`: the `status` that asks `target` its direct endpoint (concord.client.direct).
    """

    target: str
    request_id: int
    msg: dict[str, object]
    wait_s: float
    endpoint: str = ""
    probe: bool = False

    @property
    def to(self) -> str:
        """The endpoint to send to."""
        return self.endpoint or self.target


class Envelope(Protocol):
    """Builds the request map of one attempt: (op, request_id, args) -> map."""

    def __call__(self, op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]: ...


class CallPlan:
    """
    The retry plan of one call (docs/client.md "Retries and outcomes"). A driver loops:
    `attempt(now)`; None means give up (raise `failure()`); else send it, wait, and pass
    the reply (None for silence) to `settle`, which returns the ok reply, raises the
    final error, or returns seconds to pause before the next attempt.

    `pinned`: talk to that endpoint only: silence is resent there (a fresh id each
    attempt) until the deadline, any error reply is final, routing is left alone.
    `raw` (pinned only): send the map as built (not checked against the wire table, no
    `timeout_ms` added), resend it on silence whatever its op, and return the first reply
    map as it is, error replies included (the caller's rule: tests and tools).
    """

    def __init__(
        self, op: str, args: Mapping[str, object], session: Ticket | None,
        routing: Routing, policy: Policy, ids: Iterator[int], build: Envelope,
        timeout_s: float, now: float, *, pinned: str | None = None, raw: bool = False,
    ) -> None:
        self.op = op
        self.args = args
        self.kind = OpKind.READ if raw else OPS_KIND.get(op, OpKind.READ)
        self.session = session
        self.timeout_s = timeout_s
        self._routing = routing
        self._policy = policy
        self._ids = ids
        self._build = build
        self._deadline = now + timeout_s
        if pinned is None and raw:
            raise ValueError("a raw plan must be pinned to one endpoint")
        self._pinned = pinned
        self._raw = raw
        if not raw:
            # Check the arguments once against the wire table, before anything is sent.
            validate(build(op, 0, args))
        self._target = pinned if pinned is not None else routing.first()
        self._direct = (routing.direct if pinned is None and policy.direct and eligible(op, args)
                        else None)
        self._unanswered = False  # a write attempt went out and got no answer: outcome unknown
        self._silent = 0
        self._silent_at: set[str] = set()  # endpoints silent in this call: their hints are no hints
        self._wait = policy.attempt_timeout_s
        self._hops = 0
        self._backoff = policy.backoff_s
        self._last: ClientError | None = None
        self._exhausted = False

    def attempt(self, now: float) -> Attempt | None:
        remaining = self._deadline - now
        if remaining <= 0 or self._exhausted:
            return None
        request_id = next(self._ids)
        msg = self._build(self.op, request_id, self.args)
        if self.session is not None:
            msg["client_id"], msg["seq"] = self.session.pair
            msg["min_seq"] = self.session.min_seq()
        wait_s = remaining if self._last_chance() else min(remaining, self._wait)
        if not self._raw:
            msg["timeout_ms"] = server_timeout_ms(wait_s)
        if self._direct is None:
            return Attempt(self._target, request_id, msg, wait_s)
        direct, probe = self._direct.route(self._target, now)
        if probe:
            # NB: at most half the call's time, so a silent node still gets the request
            # itself (a write sent and unanswered is `outcome unknown`, not unreachable).
            wait_s = min(remaining / 2, max(self._policy.attempt_timeout_s, PROBE_WAIT_S))
            status = self._build(PROBE_OP, request_id, {})
            status["timeout_ms"] = server_timeout_ms(wait_s)
            return Attempt(self._target, request_id, status, wait_s, probe=True)
        return Attempt(self._target, request_id, msg, wait_s, direct or "")

    def _last_chance(self) -> bool:
        """
        No attempt may follow this one after silence, so it waits the rest of the
        deadline: an op never resent (admin, or a write without a session: silence ends
        it UNKNOWN) and a read's last allowed attempt (routed plans only: a pinned read
        is resent until the deadline).
        """
        if self._raw:
            return False
        if self.kind is not OpKind.READ:
            return self.session is None
        return self._pinned is None and self._silent == self._policy.retries

    def settle(self, attempt: Attempt, reply: Reply, now: float) -> dict[str, object] | float:
        target = attempt.target
        if self._direct is not None and (attempt.probe or attempt.endpoint):
            if attempt.probe:  # its outcome is the direct endpoint's, not the call's
                self._direct.learned(target, None if reply is REFUSED else reply, now)
                return 0.0
            if reply is REFUSED or reply is None:
                self._direct.failed(target, now)
                if reply is REFUSED:
                    return 0.0  # not sent: now through the client endpoint
        if reply is REFUSED:
            return self._refused(attempt, now)
        if self._pinned is None:
            self._routing.reached(target)
        if self._raw and reply is not None:
            return reply
        outcome, error = classify(reply, attempt.request_id)
        if self._pinned is not None:
            return self._settle_pinned(attempt, reply, error)
        if outcome is Outcome.OK:
            assert reply is not None
            if error is not None:
                raise error
            if attempt.msg.get("consistency") != "eventual":
                self._routing.follow(self._answered_by(reply, target))
            return reply
        if outcome is Outcome.NOT_LEADER:
            assert isinstance(error, NotLeaderError)
            hint = error.leader_hint
            self._last = error
            # NB: a follower names the old leader until its election timeout: a hint to an
            # endpoint whose connection is down, or that was silent in this call, is no
            # hint (the next endpoint instead; the rotation comes back to it).
            if (hint and hint != target and not self._routing.is_down(hint)
                    and hint not in self._silent_at and self._hops < self._policy.max_redirects):
                self._hops += 1
                log.debug("following leader hint op=%s from=%s to=%s", self.op, target, hint)
                self._routing.follow(hint)
                self._target = hint
                return 0.0
            outcome = Outcome.DROPPED
        if outcome is Outcome.DROPPED:
            assert error is not None
            self._last = error
            self._routing.forget(target)
            self._target = self._routing.after(target)
            return self._pause(now)
        return self._silence(attempt, reply, error)

    def _answered_by(self, reply: dict[str, object], target: str) -> str:
        """After an ok write: the leader a forwarding follower named (`leader_client`, popped)."""
        if self.kind is OpKind.READ:
            return target  # never forwarded; `status` has a field of that name
        hint = reply.pop(LEADER_CLIENT_FIELD, None)
        if isinstance(hint, str) and hint and self._policy.max_redirects > 0:
            return normalize_endpoint(hint)
        return target

    def _pause(self, now: float) -> float:
        """The backoff before the next attempt (doubling from backoff_s to max_backoff_s)."""
        pause = min(self._backoff, self._deadline - now)
        self._backoff = min(self._backoff * 2, self._policy.max_backoff_s)
        return max(0.0, pause)

    def _refused(self, attempt: Attempt, now: float) -> float:
        """
        The transport did not send the attempt (its endpoint's connection is down):
        certainly not applied, so any op may go elsewhere; the next endpoint (pinned: the
        same one) after a backoff, so that a cluster that is all down is not spun on.
        """
        target = attempt.target
        if self._last is None or isinstance(self._last, RequestTimeoutError):
            self._last = RequestTimeoutError(
                f"{self.op} not sent: cannot connect to {target} (connection down)", attempt.request_id)
        if self._pinned is None:
            log.debug("endpoint down op=%s endpoint=%s", self.op, target)
            self._routing.down(target)
            self._target = self._routing.after(target)
        return self._pause(now)

    def _settle_pinned(
        self, attempt: Attempt, reply: dict[str, object] | None, error: ClientError | None
    ) -> dict[str, object] | float:
        """One endpoint only: an answer ends the call, silence is resent there."""
        if error is not None:
            raise error
        if reply is not None:
            return reply
        self._last = RequestTimeoutError(
            f"no reply from {attempt.target} to {self.op} within {self.timeout_s} s", attempt.request_id
        )
        if self.kind is not OpKind.READ:
            self._unanswered = True
            if self.session is None:
                raise UnknownResultError(
                    f"{self.op} sent to {attempt.target} got no answer and carries no session; "
                    f"outcome unknown", attempt.request_id
                )
        self._silent += 1
        self._wait *= self._policy.attempt_growth
        return 0.0

    def _silence(self, attempt: Attempt, reply: dict[str, object] | None, error: ClientError | None) -> float:
        target = attempt.target
        timed_out = error or RequestTimeoutError(
            f"no reply from {target} to {self.op} within {attempt.wait_s:.3f} s", attempt.request_id
        )
        # A refusal (no_leader, not_leader) says more than silence: keep it.
        if self._last is None or isinstance(self._last, RequestTimeoutError):
            self._last = timed_out
        if self.kind is not OpKind.READ:
            self._unanswered = True
            if self.session is None:
                raise UnknownResultError(
                    f"{self.op} sent to {target} got no answer and carries no session; "
                    f"outcome unknown", attempt.request_id
                )
        self._silent += 1
        self._wait *= self._policy.attempt_growth
        log.warning("no answer op=%s endpoint=%s attempt=%d", self.op, target, self._silent)
        self._routing.forget(target)
        # Reads stop after `retries` silent attempts; a session write goes on until the
        # deadline (giving up early only leaves its outcome unknown).
        if self.session is None and self._silent > self._policy.retries:
            self._exhausted = True
        if reply is None:
            self._silent_at.add(target)
            self._target = self._routing.after(target)
        return 0.0

    def failure(self) -> ClientError:
        """The error a call that gave up raises."""
        if self._unanswered:
            rid = self._last.request_id if self._last is not None else None
            client_id, seq = self.session.pair if self.session else (None, None)
            return UnknownResultError(
                f"{self.op} (client_id={client_id} seq={seq}) got no answer within "
                f"{self.timeout_s} s; outcome unknown", rid
            )
        if self._last is not None:
            return self._last
        return RequestTimeoutError(f"{self.op} got no answer within {self.timeout_s} s")


Exchange = Callable[[Attempt], Reply]


def drive(plan: CallPlan, exchange: Exchange) -> dict[str, object]:
    """
    Run a plan to its end over a blocking `exchange` (send one attempt, wait up to its
    `wait_s`, return the reply, None for silence or REFUSED if it could not be sent): the
    one request/retry loop of the sync callers. concord.aio has its awaiting twin.

    Returns:
        The reply the plan ends with.

    Raises:
        ClientError: the plan's final error (`plan.failure()`, or an error reply).
    """
    while (attempt := plan.attempt(time.monotonic())) is not None:
        reply = exchange(attempt)
        outcome = plan.settle(attempt, reply, time.monotonic())
        if isinstance(outcome, dict):
            return outcome
        if outcome > 0:
            time.sleep(outcome)
    raise plan.failure()


class ClientCore:
    """
    What the sync and asyncio clients share: checked settings, leader routing, session
    slots and request ids (docs/client.md); each adds its own sockets and waiting.

    Raises:
        ConfigError: no endpoint, or a bad timing value or client_id.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout_s: float,
        retries: int,
        attempt_timeout_s: float | None,
        client_id: str | None,
        sessions: bool,
        token: str | None,
        ns: str | None,
        max_redirects: int,
        backoff_s: float,
        max_backoff_s: float,
        cas_retries: int,
        first_seq: int | None,
        direct: bool = True,
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not eps or not all(isinstance(e, str) and e for e in eps):
            raise ConfigError(f"endpoints must be one or more non-empty strings, got {endpoints!r}")
        if timeout_s <= 0 or retries < 0 or max_redirects < 0 or cas_retries < 1:
            raise ConfigError(
                f"need timeout_s > 0, retries >= 0, max_redirects >= 0, cas_retries >= 1, got "
                f"{timeout_s}, {retries}, {max_redirects}, {cas_retries}"
            )
        if attempt_timeout_s is not None and attempt_timeout_s <= 0:
            raise ConfigError(f"attempt_timeout_s must be > 0, got {attempt_timeout_s}")
        if backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ConfigError(f"need 0 < backoff_s <= max_backoff_s, got {backoff_s}, {max_backoff_s}")
        if first_seq is not None and first_seq < 0:
            raise ConfigError(f"first_seq must be >= 0, got {first_seq}")
        if client_id is not None and not (
            isinstance(client_id, str) and 1 <= len(client_id.encode("utf-8")) <= MAX_CLIENT_ID_BYTES
        ):
            raise ConfigError(
                f"client_id must be a string of 1..{MAX_CLIENT_ID_BYTES} UTF-8 bytes, got {client_id!r}")
        self.endpoints: tuple[str, ...] = tuple(eps)
        self.timeout_s = timeout_s
        self.retries = retries
        # The first attempt's wait; by default short and growing (docs/client.md "Dead nodes").
        self.attempt_timeout_s = attempt_timeout_s if attempt_timeout_s is not None else FIRST_ATTEMPT_S
        self.attempt_growth = 1.0 if attempt_timeout_s is not None else ATTEMPT_GROWTH
        self.client_id: str = client_id if client_id is not None else f"{random.getrandbits(64):016x}"
        self.sessions = sessions
        self.token = token
        self.ns = ns
        self.max_redirects = max_redirects
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cas_retries = cas_retries
        self._ids = itertools.count(random.getrandbits(30))
        # NB: the state machine refuses a seq below the last one it applied for this
        # client_id, so a client_id reused across processes must not start over: a given
        # id starts from the wall clock in microseconds (monotonic across restarts at
        # fewer than a million writes a second); a fresh random id starts at 0.
        if first_seq is None:
            first_seq = 0 if client_id is None else time.time_ns() // 1000
        self._slots = SessionSlots(self.client_id, first_seq)
        self._routing = Routing(self.endpoints)
        self._policy = Policy(self.attempt_timeout_s, retries, max_redirects, backoff_s, max_backoff_s,
                              self.attempt_growth, direct)
        self._closed = False

    @property
    def leader(self) -> str | None:
        """The endpoint this client currently sends to first (last known leader)."""
        return self._routing.leader

    @property
    def seq(self) -> int:
        """The session seq of the last write sent (`first_seq` before any)."""
        return self._slots.last_seq

    @property
    def session_slots(self) -> int:
        """How many session ids this client has used (the most writes it had in flight at once)."""
        return self._slots.slots

    def _envelope(self, op: str, request_id: int, args: Mapping[str, object]) -> dict[str, object]:
        return envelope(op, request_id, args, self.token, self.ns)

    @contextmanager
    def _session(self, op: str) -> Iterator[Ticket | None]:
        """The session of one call of `op`, its seq in flight for the whole call, or None."""
        if OPS_KIND.get(op, OpKind.READ) is not OpKind.WRITE or not self.sessions:
            yield None
            return
        ticket = self._slots.take()
        try:
            yield ticket
        finally:
            self._slots.give_back(ticket)

    def _plan(
        self, op: str, args: Mapping[str, object] | None, session: Ticket | None,
        timeout_s: float | None,
    ) -> CallPlan:
        return CallPlan(op, dict(args or {}), session, self._routing, self._policy, self._ids,
                        self._envelope, timeout_s or self.timeout_s, time.monotonic())
