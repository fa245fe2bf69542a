"""
Simulated clients: each issues one operation at a time to the node it believes leads,
follows leader hints, gives up after a timeout, and records every operation with its
invocation and completion times and outcome for the linearizability checker.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from concord.ids import NodeId
from concord.node.driver import Consistency, Reply, ReplyStatus
from concord.sim.linearizability import ABSENT, Operation, OpKind, Outcome
from concord.sim.loop import EventLoop, Timer
from concord.sim.machine import Adapter
from concord.sim.rng import SimRandom

__all__ = ["Client", "Workload", "WorkloadConfig"]


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 4
    keys: int = 3
    think_ms: tuple[int, int] = (2, 30)
    timeout_ms: int = 400
    stray_p: float = 0.2  # an op goes to a random node instead of the believed leader
    client_delay_ms: tuple[int, int] = (1, 3)
    # weights of put, get(strong), get(leader), get(eventual), delete, put_if, delete_if
    weights: tuple[int, int, int, int, int, int, int] = (30, 20, 15, 5, 8, 15, 7)


@dataclass(slots=True)
class _InFlight:
    request_id: int
    kind: OpKind
    key: str
    args: tuple[Hashable, ...]
    consistency: Consistency | None
    invoke_ms: int
    node: NodeId
    timer: Timer | None = None


@dataclass(slots=True)
class Client:
    id: int
    rng: SimRandom
    leader_guess: NodeId
    inflight: _InFlight | None = None
    stopped: bool = False
    counter: int = 0
    last_values: list[int] = field(default_factory=list)


class Workload:
    """
    The clients of one run.

    Args:
        loop: virtual time.
        rng: the workload's stream (each client forks its own).
        config: rates and sizes.
        adapter: encodes commands and reads keys for the state machine in use.
        submit: delivers a request to a node (returns False if the node is down).
        nodes: the node ids a client may pick.
        trace: the run's trace sink.
    """

    def __init__(
        self,
        loop: EventLoop,
        rng: SimRandom,
        config: WorkloadConfig,
        adapter: Adapter,
        submit: Callable[[NodeId, int, OpKind, str, tuple[Hashable, ...],
                          Consistency | None], None],
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
        self.eventual_reads = 0
        self._next_request = 0
        self._by_request: dict[int, Client] = {}
        self.keys = [f"k{i}" for i in range(config.keys)]
        self.clients = [
            Client(i, rng.fork(f"client/{i}"), self._nodes()[0]) for i in range(config.clients)
        ]
        self.written: dict[str, set[Hashable]] = {}

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
        key = rng.choice(self.keys)
        choice = rng.choices(range(7), weights=self.config.weights)[0]
        client.counter += 1
        value = client.id * 1_000_000 + client.counter
        consistency: Consistency | None = None
        args: tuple[Hashable, ...] = ()
        if choice == 0:
            kind, args = OpKind.PUT, (value,)
        elif choice in (1, 2, 3):
            kind = OpKind.GET
            consistency = (Consistency.STRONG, Consistency.LEADER, Consistency.EVENTUAL)[
                choice - 1
            ]
        elif choice == 4:
            kind = OpKind.DELETE
        elif choice == 5:
            seen = sorted(v for v in self.written.get(key, set()) if isinstance(v, int))
            expected: Hashable = ABSENT
            if seen and rng.random() < 0.8:
                expected = rng.choice(seen[-4:])
            kind, args = OpKind.PUT_IF, (expected, value)
        else:
            seen = sorted(v for v in self.written.get(key, set()) if isinstance(v, int))
            kind, args = OpKind.DELETE_IF, (rng.choice(seen[-4:]) if seen else value,)
        if kind in (OpKind.PUT, OpKind.PUT_IF):
            self.written.setdefault(key, set()).add(value)
        self.invoke(client, kind, key, args, consistency)

    def invoke(
        self,
        client: Client,
        kind: OpKind,
        key: str,
        args: tuple[Hashable, ...],
        consistency: Consistency | None,
        node: NodeId | None = None,
    ) -> int:
        """Send one operation now (the final reads of the checker use this too)."""
        self._next_request += 1
        rid = self._next_request
        target = node if node is not None else client.leader_guess
        if node is None and client.rng.random() < self.config.stray_p:
            # Clients with stale or no leader information (and followers' strong reads).
            target = client.rng.choice(self._nodes())
        flight = _InFlight(rid, kind, key, args, consistency, self.loop.now, target)
        client.inflight = flight
        self._by_request[rid] = client
        flight.timer = self.loop.after(self.config.timeout_ms, lambda: self._timeout(client, rid))
        lo, hi = self.config.client_delay_ms
        self.loop.after(
            client.rng.randint(lo, hi),
            lambda: self._submit(target, rid, kind, key, args, consistency),
        )
        return rid

    def on_reply(self, node: NodeId, reply: Reply, value: Hashable) -> None:
        """A node answered (`value` is what a read saw, read inside the reply callback)."""
        client = self._by_request.get(reply.request_id)
        if client is None:
            return
        lo, hi = self.config.client_delay_ms
        delay = client.rng.randint(lo, hi)
        self.loop.after(delay, lambda: self._complete(client, node, reply, value))

    def _complete(self, client: Client, node: NodeId, reply: Reply, value: Hashable) -> None:
        flight = client.inflight
        if flight is None or flight.request_id != reply.request_id:
            return  # timed out already
        if flight.timer is not None:
            flight.timer.cancel()
        del self._by_request[reply.request_id]
        client.inflight = None
        status = reply.status
        result: Hashable = None
        if status is ReplyStatus.OK:
            outcome = Outcome.OK
            result = value if flight.kind is OpKind.GET else self.adapter.decode(
                flight.kind, reply.result
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
        self._record(client, flight, outcome, result)
        self._schedule(client)

    def _timeout(self, client: Client, rid: int) -> None:
        flight = client.inflight
        if flight is None or flight.request_id != rid:
            return
        self._by_request.pop(rid, None)
        client.inflight = None
        # A write may still take effect; a read has no effect at all.
        outcome = Outcome.FAIL if flight.kind is OpKind.GET else Outcome.UNKNOWN
        client.leader_guess = client.rng.choice(self._nodes())
        self._record(client, flight, outcome, None)
        self._schedule(client)

    def _record(
        self, client: Client, flight: _InFlight, outcome: Outcome, result: Hashable
    ) -> None:
        done = None if outcome is Outcome.UNKNOWN else self.loop.now
        self._trace(
            f"op c{client.id}@{flight.node} {flight.kind.value} {flight.key} {flight.args} "
            f"{flight.consistency.value if flight.consistency else ''} -> "
            f"{outcome.value} {result!r}"
        )
        if flight.consistency is Consistency.EVENTUAL:
            self.eventual_reads += 1
            return  # not linearizable by contract
        self.history.append(
            Operation(client.id, flight.kind, flight.key, flight.args, flight.invoke_ms,
                      done, outcome, result)
        )
