"""
Simulated clients: each issues one operation at a time to the node it believes leads,
follows leader hints, gives up after a timeout, and records every operation with its
invocation and completion times and outcome for the linearizability checker.

The operations are what users run (docs/protocol.md): puts with and without TTLs, reads at
every consistency level (with the key's version), deletes, conditional puts on a value,
on absence or on a version, conditional deletes, and atomic bulk puts, deletes and
reads. Writes carry an exactly-once session pair (client id, seq) when the state
machine has sessions, and a write without a definite answer is retried with the same
pair at another node (twice at most), as the client library does: the retries make one
operation of the history, which the state machine must apply once.

Leases (with `lease_p` > 0, drawn from each client's own `lease` stream after the usual
draws): a share of the operations grant a lease, keep one alive, revoke one, or put a
key attached to one (put, or put_if on absence or on a value), picking among the last
leases granted (including revoked or expired ones: those must answer not_found).

Pipelined clients (Raft thesis §6.3): with `pipeline` > 1, that many clients share one
session id, each with its own operation in flight, so one session has several writes in
flight at once; each try carries `min_seq`, the session's lowest seq still in flight,
and the state machine must answer a retry of any of them from its first result.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

from concord.ids import NodeId
from concord.node.driver import Consistency, Reply, ReplyStatus
from concord.sim.history import (
    ABSENT,
    Operation,
    OpKind,
    Outcome,
    Version,
    Versioned,
    lease_key,
)
from concord.sim.loop import EventLoop, Timer
from concord.sim.machine import Adapter
from concord.sim.rng import SimRandom

__all__ = ["Client", "Request", "Workload", "WorkloadConfig"]

#: What a client picks from (kind, consistency or a variant), with weights.
_CHOICES: tuple[tuple[OpKind, str, int], ...] = (
    (OpKind.PUT, "", 22),
    (OpKind.PUT, "ttl", 6),
    (OpKind.GET, "strong", 14),
    (OpKind.GET, "leader", 12),
    (OpKind.GET, "eventual", 4),
    (OpKind.DELETE, "", 6),
    (OpKind.PUT_IF, "value", 10),
    (OpKind.PUT_IF, "version", 6),
    (OpKind.DELETE_IF, "", 5),
    (OpKind.PUT_MANY, "", 6),
    (OpKind.DELETE_MANY, "", 3),
    (OpKind.GET_MANY, "strong", 3),
    (OpKind.GET_MANY, "leader", 2),
)
#: TTLs drawn for puts that expire (ms): short enough to expire within a run.
_TTLS_MS = (40, 150, 600)
#: Lease operations (with `WorkloadConfig.lease_p`), with weights, and the TTLs granted.
_LEASE_CHOICES: tuple[tuple[str, int], ...] = (
    ("grant", 3), ("put", 5), ("put_if", 1), ("keepalive", 4), ("revoke", 3),
)
_LEASE_TTLS_MS = (150, 400, 1000)
#: Where a put's args carry its lease, if they do.
_LEASE_ARG = {OpKind.PUT: 2, OpKind.PUT_IF: 3}
#: The key a grant's request carries before its lease id is known.
_GRANT_KEY = lease_key(0)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 4
    keys: int = 3
    think_ms: tuple[int, int] = (2, 30)
    timeout_ms: int = 400
    stray_p: float = 0.2  # an op goes to a random node instead of the believed leader
    client_delay_ms: tuple[int, int] = (1, 3)
    retries: int = 2  # more tries of a write without a definite answer (sessions only)
    pipeline: int = 1  # clients sharing one session id (writes in flight per session)
    incr_p: float = 0.0  # share of operations that are counter increments (incr)
    lease_p: float = 0.0  # share of operations on leases (grant, keepalive, revoke, put)


@dataclass(frozen=True, slots=True)
class Request:
    """One try of an operation, as a node receives it."""

    request_id: int
    kind: OpKind
    keys: tuple[str, ...]
    args: tuple[Hashable, ...]
    consistency: Consistency | None
    session: tuple[str, int] | None  # (client id, seq) of an exactly-once write
    min_seq: int | None = None  # the session's lowest seq in flight, when below seq

    @property
    def key(self) -> str:
        return self.keys[0]


@dataclass(slots=True)
class _InFlight:
    request: Request
    invoke_ms: int
    node: NodeId
    timer: Timer | None = None
    tries: int = 1
    maybe_applied: bool = False  # an earlier try may have taken effect

    @property
    def request_id(self) -> int:
        return self.request.request_id

    @property
    def kind(self) -> OpKind:
        return self.request.kind


@dataclass(slots=True)
class Session:
    """One session id shared by `WorkloadConfig.pipeline` clients."""

    client_id: str
    seq: int = 0
    inflight: set[int] = field(default_factory=set)

    def take(self) -> int:
        self.seq += 1
        self.inflight.add(self.seq)
        return self.seq

    def min_seq(self, seq: int) -> int | None:
        """The min_seq to send with `seq`: None when it is `seq` itself (the default)."""
        floor = min(self.inflight, default=seq)
        return floor if floor < seq else None


@dataclass(slots=True)
class Client:
    id: int
    rng: SimRandom
    leader_guess: NodeId
    inflight: _InFlight | None = None
    stopped: bool = False
    counter: int = 0
    last_values: list[int] = field(default_factory=list)
    session: Session = field(default_factory=lambda: Session(""))
    incr_rng: SimRandom = field(default_factory=lambda: SimRandom(0))
    lease_rng: SimRandom = field(default_factory=lambda: SimRandom(0))

    def __post_init__(self) -> None:
        if not self.session.client_id:
            self.session.client_id = f"sim-c{self.id}"
        self.incr_rng = self.rng.fork("incr")
        self.lease_rng = self.rng.fork("lease")


class Workload:
    """
    The clients of one run.

    Args:
        loop: virtual time.
        rng: the workload's stream (each client forks its own).
        config: rates and sizes.
        adapter: encodes commands and reads keys for the state machine in use.
        submit: delivers a request to a node (lost if the node is down).
        nodes: the node ids a client may pick.
        trace: the run's trace sink.
    """

    def __init__(
        self,
        loop: EventLoop,
        rng: SimRandom,
        config: WorkloadConfig,
        adapter: Adapter,
        submit: Callable[[NodeId, Request], None],
        nodes: Callable[[], list[NodeId]],
        trace: Callable[[str], None],
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.config = config
        self.adapter = adapter
        self._submit = submit
        self._nodes = nodes
        self._trace = trace
        self.history: list[Operation] = []
        #: The session pair of history entries that carried one (by position).
        self.sessions: dict[int, tuple[str, int]] = {}
        #: Versions read per key, for put_if on a version.
        self.versions: dict[str, set[int]] = {}
        self.eventual_reads = 0
        #: Session writes sent while a lower seq of their session was in flight.
        self.overlapping_writes = 0
        self._next_request = 0
        self._by_request: dict[int, Client] = {}
        self.keys = [f"k{i}" for i in range(config.keys)]
        sessions = [Session(f"sim-c{i}") for i in range(0, config.clients, config.pipeline)]
        self.clients = [
            Client(i, rng.fork(f"client/{i}"), self._nodes()[0],
                   session=sessions[i // config.pipeline])
            for i in range(config.clients)
        ]
        self.written: dict[str, set[Hashable]] = {}
        #: Lease ids granted (OK answers), in order.
        self.leases: list[int] = []

    def start(self) -> None:
        for client in self.clients:
            self._schedule(client)

    def stop(self) -> None:
        """Issue no new operations (in-flight ones still complete or time out)."""
        for client in self.clients:
            client.stopped = True

    @property
    def busy(self) -> bool:
        return any(c.inflight is not None for c in self.clients)

    def _schedule(self, client: Client) -> None:
        lo, hi = self.config.think_ms
        self.loop.after(client.rng.randint(lo, hi), lambda: self._issue(client))

    def _issue(self, client: Client) -> None:
        if client.stopped or client.inflight is not None:
            return
        rng = client.rng
        adapter = self.adapter
        choices = [
            c for c in _CHOICES
            if c[0] in adapter.kinds
            and (c[1] != "ttl" or adapter.ttl)
            and (c[1] != "version" or adapter.versions)
        ]
        kind, variant, _ = rng.choices(choices, weights=[c[2] for c in choices])[0]
        key = rng.choice(self.keys)
        keys: tuple[str, ...] = (key,)
        client.counter += 1
        value = client.id * 1_000_000 + client.counter
        consistency: Consistency | None = None
        args: tuple[Hashable, ...] = ()
        bulk: tuple[int, ...] = ()
        ttl_ms = 0
        if adapter.ttl and (variant == "ttl" or rng.random() < 0.1):
            ttl_ms = rng.choice(_TTLS_MS)
        if kind in (OpKind.GET, OpKind.GET_MANY):
            consistency = Consistency(variant)
        if kind in (OpKind.PUT_MANY, OpKind.DELETE_MANY, OpKind.GET_MANY):
            keys = tuple(sorted(rng.sample(self.keys, min(len(self.keys), 2))))
        if kind is OpKind.PUT:
            args = (value, ttl_ms) if ttl_ms else (value,)
        elif kind is OpKind.PUT_IF:
            expected: Hashable = ABSENT
            if variant == "version":
                seen_versions = sorted(self.versions.get(key, set()))
                expected = Version(rng.choice(seen_versions[-3:]) if seen_versions else 0)
            else:
                seen = sorted(v for v in self.written.get(key, set()) if isinstance(v, int))
                if seen and rng.random() < 0.8:
                    expected = rng.choice(seen[-4:])
            args = (expected, value, ttl_ms) if ttl_ms else (expected, value)
        elif kind is OpKind.DELETE_IF:
            seen = sorted(v for v in self.written.get(key, set()) if isinstance(v, int))
            args = (rng.choice(seen[-4:]) if seen else value,)
        elif kind is OpKind.PUT_MANY:
            bulk = tuple(value * 10 + i for i in range(len(keys)))
            args = (bulk, ttl_ms)
            for k, v in zip(keys, bulk):
                self.written.setdefault(k, set()).add(v)
        if kind in (OpKind.PUT, OpKind.PUT_IF):
            self.written.setdefault(key, set()).add(value)
        if OpKind.INCR in adapter.kinds and client.incr_rng.chance(self.config.incr_p):
            # Drawn from the client's own incr stream after the usual draws, so runs
            # without increments draw exactly as before.
            kind, keys, consistency = OpKind.INCR, (key,), None
            args = (client.incr_rng.randint(1, 3),)
        if OpKind.LEASE_GRANT in adapter.kinds and client.lease_rng.chance(self.config.lease_p):
            # Its own stream too: runs without leases draw exactly as before.
            kind, keys, args = self._lease_op(client.lease_rng, key, value)
            consistency = None
        self.invoke(client, kind, keys[0], args, consistency, keys=keys)

    def _lease_op(
        self, rng: SimRandom, key: str, value: int
    ) -> tuple[OpKind, tuple[str, ...], tuple[Hashable, ...]]:
        """A lease operation: its kind, keys and args (OpKind's docstring)."""
        what = "grant"
        if self.leases:
            what = rng.choices(_LEASE_CHOICES, weights=[c[1] for c in _LEASE_CHOICES])[0][0]
        if what == "grant":
            return OpKind.LEASE_GRANT, (_GRANT_KEY,), (rng.choice(_LEASE_TTLS_MS),)
        lease = rng.choice(self.leases[-3:])
        if what in ("keepalive", "revoke"):
            kind = OpKind.LEASE_KEEPALIVE if what == "keepalive" else OpKind.LEASE_REVOKE
            return kind, (lease_key(lease),), (lease,)
        self.written.setdefault(key, set()).add(value)
        if what == "put":
            return OpKind.PUT, (key,), (value, 0, lease)
        seen = sorted(v for v in self.written.get(key, set()) if isinstance(v, int) and v != value)
        expected: Hashable = rng.choice(seen[-4:]) if seen and rng.random() < 0.5 else ABSENT
        return OpKind.PUT_IF, (key,), (expected, value, 0, lease)

    def invoke(
        self,
        client: Client,
        kind: OpKind,
        key: str,
        args: tuple[Hashable, ...],
        consistency: Consistency | None,
        node: NodeId | None = None,
        keys: tuple[str, ...] = (),
    ) -> int:
        """Send one operation now (the final reads of the checker use this too)."""
        session: tuple[str, int] | None = None
        min_seq: int | None = None
        if kind not in (OpKind.GET, OpKind.GET_MANY) and self.adapter.sessions:
            seq = client.session.take()
            session = (client.session.client_id, seq)
            min_seq = client.session.min_seq(seq)
            self.overlapping_writes += min_seq is not None
        self._next_request += 1
        request = Request(self._next_request, kind, keys or (key,), args, consistency, session,
                          min_seq)
        target = node if node is not None else client.leader_guess
        if node is None and client.rng.random() < self.config.stray_p:
            # Clients with stale or no leader information (and followers' strong reads).
            target = client.rng.choice(self._nodes())
        client.inflight = _InFlight(request, self.loop.now, target)
        self._send(client, target)
        return request.request_id

    def _send(self, client: Client, target: NodeId) -> None:
        """Send (or send again) the client's request to `target`, with a timeout."""
        flight = client.inflight
        assert flight is not None
        flight.node = target
        rid = flight.request_id
        self._by_request[rid] = client
        flight.timer = self.loop.after(self.config.timeout_ms, lambda: self._timeout(client, rid))
        lo, hi = self.config.client_delay_ms
        request = flight.request
        self.loop.after(client.rng.randint(lo, hi), lambda: self._submit(target, request))

    def _retry(self, client: Client, maybe_applied: bool) -> bool:
        """Try a session write again at another node; False when out of tries."""
        flight = client.inflight
        assert flight is not None
        flight.maybe_applied = flight.maybe_applied or maybe_applied
        if flight.request.session is None or flight.tries > self.config.retries:
            return False
        flight.tries += 1
        self._next_request += 1
        min_seq = client.session.min_seq(flight.request.session[1])
        flight.request = replace(flight.request, request_id=self._next_request, min_seq=min_seq)
        self._send(client, client.leader_guess)
        return True

    def request_of(self, request_id: int) -> Request | None:
        """The request in flight with this id, if any."""
        client = self._by_request.get(request_id)
        flight = client.inflight if client is not None else None
        return flight.request if flight is not None and flight.request_id == request_id else None

    def on_reply(self, node: NodeId, reply: Reply, value: Hashable, ts: float | None) -> None:
        """
        A node answered: `value` is what a read saw and `ts` the cluster time it saw it
        at, both read inside the reply callback.
        """
        client = self._by_request.get(reply.request_id)
        if client is None:
            return
        lo, hi = self.config.client_delay_ms
        delay = client.rng.randint(lo, hi)
        self.loop.after(delay, lambda: self._complete(client, node, reply, value, ts))

    def _complete(
        self, client: Client, node: NodeId, reply: Reply, value: Hashable, ts: float | None
    ) -> None:
        flight = client.inflight
        if flight is None or flight.request_id != reply.request_id:
            return  # timed out already
        if flight.timer is not None:
            flight.timer.cancel()
        del self._by_request[reply.request_id]
        status = reply.status
        result: Hashable = None
        if status is ReplyStatus.OK:
            outcome = Outcome.OK
            result = value if flight.kind in (OpKind.GET, OpKind.GET_MANY) else (
                self.adapter.decode(flight.kind, reply.result)
            )
        elif status is ReplyStatus.UNKNOWN:
            outcome = Outcome.UNKNOWN
        else:
            outcome = Outcome.FAIL
        if status in (ReplyStatus.NOT_LEADER, ReplyStatus.DROPPED, ReplyStatus.TIMEOUT):
            nodes = self._nodes()
            hint = reply.leader_hint
            client.leader_guess = (
                hint if hint is not None and hint in nodes else client.rng.choice(nodes)
            )
        if outcome is not Outcome.OK and self._retry(client, outcome is Outcome.UNKNOWN):
            return
        if outcome is Outcome.FAIL and flight.maybe_applied:
            outcome = Outcome.UNKNOWN
        client.inflight = None
        self._record(client, flight, outcome, result, ts)
        self._schedule(client)

    def _timeout(self, client: Client, rid: int) -> None:
        flight = client.inflight
        if flight is None or flight.request_id != rid:
            return
        self._by_request.pop(rid, None)
        client.leader_guess = client.rng.choice(self._nodes())
        # A write may still take effect; a read has no effect at all.
        is_read = flight.kind in (OpKind.GET, OpKind.GET_MANY)
        if not is_read and self._retry(client, maybe_applied=True):
            return
        client.inflight = None
        outcome = Outcome.FAIL if is_read else Outcome.UNKNOWN
        self._record(client, flight, outcome, None, None)
        self._schedule(client)

    def _record(
        self,
        client: Client,
        flight: _InFlight,
        outcome: Outcome,
        result: Hashable,
        ts: float | None,
    ) -> None:
        done = None if outcome is Outcome.UNKNOWN else self.loop.now
        request = flight.request
        if request.session is not None:
            client.session.inflight.discard(request.session[1])  # acknowledged, or given up
        self._trace(
            f"op c{client.id}@{flight.node} {request.kind.value} {' '.join(request.keys)} "
            f"{request.args} {request.consistency.value if request.consistency else ''} "
            f"tries={flight.tries} -> {outcome.value} {result!r}"
        )
        if request.consistency is Consistency.EVENTUAL:
            self.eventual_reads += 1
            return  # not linearizable by contract
        if request.kind not in (OpKind.GET, OpKind.GET_MANY) or outcome is not Outcome.OK:
            ts = None
        if isinstance(result, Versioned):
            self.versions.setdefault(request.key, set()).add(result.version)
        key, keys = _history_keys(request, outcome, result)
        if not key:
            return  # a grant without an answer: nobody learned its id, nobody uses it
        if request.kind is OpKind.LEASE_GRANT:
            assert isinstance(result, int)
            self.leases.append(result)
        if request.session is not None:
            self.sessions[len(self.history)] = request.session
        self.history.append(
            Operation(client.id, request.kind, key, request.args, flight.invoke_ms,
                      done, outcome, result, keys=keys, ts=ts)
        )

    def timed_history(
        self,
        applied_ts: dict[tuple[str, int], int],
        lease_expiries: Sequence[tuple[int, tuple[int, ...], int]] = (),
    ) -> list[Operation]:
        """
        The history with each session write's cluster time (its entry's timestamp), and
        the leader's lease_expire entries (`lease_expiries`: timestamp, lease ids, first
        apply time) as operations of their own that took effect at their first apply,
        on the leases some client learned the id of.

        A session write without an answer that no node applied (no timestamp) is left
        out: `applied_ts` holds every apply of the run, so it took no effect within the
        history (the checker could only place it after everything, where an unchecked
        write changes nothing observed), and each one kept can double the search.
        """
        out = list(self.history)
        unapplied: set[int] = set()
        for i, session in self.sessions.items():
            ts = applied_ts.get(session)
            if ts is not None:
                out[i] = replace(out[i], ts=ts)
            elif out[i].outcome is Outcome.UNKNOWN:
                unapplied.add(i)
        if unapplied:
            out = [op for i, op in enumerate(out) if i not in unapplied]
        known = set(self.leases)
        for ts, leases, at_ms in lease_expiries:
            ids = tuple(lease for lease in leases if lease in known)
            if ids:
                keys = tuple(lease_key(lease) for lease in ids)
                out.append(Operation(-2, OpKind.LEASE_EXPIRE, keys[0], ids, at_ms, at_ms,
                                     Outcome.OK, keys=keys if len(keys) > 1 else (), ts=ts))
        return out


def _history_keys(request: Request, outcome: Outcome, result: Hashable) -> tuple[str, tuple[str, ...]]:
    """
    The key and keys an operation has in the history: a lease op's are its lease's
    pseudo-key (a grant's known from its answer only: "" without one), a put with a
    lease joins its key and its lease's.
    """
    kind = request.kind
    if kind in (OpKind.PUT_MANY, OpKind.DELETE_MANY, OpKind.GET_MANY):
        return request.key, request.keys
    if kind is OpKind.LEASE_GRANT:
        return (lease_key(result), ()) if outcome is Outcome.OK and isinstance(result, int) else ("", ())
    at = _LEASE_ARG.get(kind)
    if at is not None and len(request.args) > at:
        lease = request.args[at]
        assert isinstance(lease, int)
        return request.key, (request.key, lease_key(lease))
    return request.key, ()
