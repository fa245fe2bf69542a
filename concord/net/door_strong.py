"""
Strong reads the front door answers itself, after one read barrier per batch.

A `strong` read of the ops and key limits the door answers inline otherwise
(`door_reads.is_strong_inline`) is held by the door instead of being sent to the raft
worker. At the end of a pass of its loop the door asks its raft worker for ONE barrier
(backend link BARRIER, concord.net.backend) for every read it holds; the raft worker
takes one ReadIndex for it through the driver's read batching (the same decision as for
any strong read: concord.node.driver_reads) and answers BARRIER_ANSWER with an index once
its applied index reached the read index AND shared memory is published at least that
far (concord.node.worker_barriers). The door then brings its view of shared memory to
that index or later and answers the held reads exactly like its inline eventual reads
(`InlineReads.answer_strong`: same checks, same replies, TTLs by cluster time). A barrier
error (no leader, not the leader anymore, timeout) gives each held read that error, as
the raft worker would have; a read the view cannot answer (not attached, behind the
index, a tenant with a read rate, a corrupt store) goes to the raft worker as before.

Linearizability: a barrier is sent after every read it covers reached the door, so its
read index is taken after each of them was invoked; the read index is at least the
commit index of every write acknowledged before that (Raft thesis §6.4: the leader
confirms with a quorum that it still leads, at a commit index covering its term);
shared memory only moves forward, and the door reads from a view at or past that index.
So every such read sees each write that completed before it was invoked, and never a
state older than one an earlier read saw: the same argument as the raft worker's own
strong reads, with the view standing in for its state machine.

At most `MAX_BARRIERS_IN_FLIGHT` barriers are in flight per door: reads arriving while
one is in flight wait for the next (one ReadIndex round serves them all, as in etcd's
linearizable read loop). Each read times out on its own deadline, like any request. A
barrier is forgotten once the deadline of its last read passed, or after
`BARRIER_RETRY_S` without an answer (its raft worker restarted, or the answer was
dropped): then its reads still pending wait for the next barrier (a read index taken
later still serves them), so a lost answer never stalls the strong reads behind it. A
forgotten barrier's answer, if it comes later, is dropped.

A plain strong get (`door_reads.plain_get`: exactly op, id, key and consistency) is held
without decoding its payload (`hold_plain_strong`: the Request decode_request would give
is built from its parts) and answered, after its barrier, with the stored value's bytes
spliced into the reply (`InlineReads.answer_strong_get`, the eventual plain get's path
from a view at the barrier's index or later); any other outcome takes the path above.
It is held exactly as the others: the linearizability argument is the same.

The functions below are methods of concord.net.frontdoor.FrontDoor (bound in its class
body, like concord.node.driver_reads in the driver); `StrongBarriers` is their state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq

from concord.errors import CorruptionError, ShuttingDownError
from concord.net._zmqutil import send_frames
from concord.net.backend import KIND_BARRIER, BarrierError, pack_header, unpack_barrier_answer
from concord.net.door_reads import Verdict
from concord.net.wire import Backend, Request, error_reply

if TYPE_CHECKING:
    from concord.net.frontdoor import FrontDoor

__all__ = ["BARRIER_RETRY_S", "MAX_BARRIERS_IN_FLIGHT", "Held", "StrongBarriers"]

log = logging.getLogger(__name__)

#: Barriers a door has in flight at once (module docstring).
MAX_BARRIERS_IN_FLIGHT = 1
#: A barrier not answered for this long is forgotten and its reads wait for the next one
#: (module docstring). The raft worker answers within its read timeout (1 s or more, an
#: error if the read index could not be confirmed) unless the answer was lost.
BARRIER_RETRY_S = 3.0


@dataclass(slots=True)
class Held:
    """A strong read the door holds: its door token, the request, its raw payload."""

    token: int
    request: Request
    payload: bytes  # sent to the raft worker if the door cannot answer it after all
    plain_key: str | None = None  # a plain get's key (module docstring): answer_strong_get first


@dataclass(slots=True)
class _Barrier:
    held: list[Held]
    deadline: float  # the latest of its reads' deadlines
    retry_at: float  # forgotten then, its reads held again


@dataclass(slots=True)
class StrongBarriers:
    """The door's held strong reads and its barriers in flight. Pure: no sockets."""

    max_in_flight: int = MAX_BARRIERS_IN_FLIGHT
    waiting: list[Held] = field(default_factory=list)  # no barrier asked for them yet
    _deadline: float = 0.0  # the latest deadline among `waiting`
    _in_flight: dict[int, _Barrier] = field(default_factory=dict)

    def hold(self, held: Held, deadline: float) -> None:
        """Hold `held` for the next barrier."""
        self.waiting.append(held)
        self._deadline = max(self._deadline, deadline)

    @property
    def can_start(self) -> bool:
        """Whether reads wait and a barrier may be started for them now."""
        return bool(self.waiting) and len(self._in_flight) < self.max_in_flight

    def take_waiting(self) -> list[Held]:
        """Every waiting read, no longer held (no barrier can be asked for them)."""
        held, self.waiting = self.waiting, []
        self._deadline = 0.0
        return held

    def start(self, token: int, now: float) -> list[Held]:
        """Every waiting read, now covered by the barrier `token`, sent at `now`."""
        held, self.waiting = self.waiting, []
        self._in_flight[token] = _Barrier(held, self._deadline, now + BARRIER_RETRY_S)
        self._deadline = 0.0
        return held

    def answered(self, token: int) -> list[Held] | None:
        """The reads of barrier `token`, which is over; None: unknown (late, or forgotten)."""
        barrier = self._in_flight.pop(token, None)
        return None if barrier is None else barrier.held

    def is_in_flight(self, token: int) -> bool:
        return token in self._in_flight

    def expire(self, now: float) -> None:
        """
        Forget the barriers whose every read is past its deadline, and those unanswered
        for BARRIER_RETRY_S, whose reads are held again for the next barrier.
        """
        for token, barrier in list(self._in_flight.items()):
            if barrier.deadline <= now:
                del self._in_flight[token]
            elif barrier.retry_at <= now:
                del self._in_flight[token]
                self.waiting[:0] = barrier.held
                self._deadline = max(self._deadline, barrier.deadline)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


# -- FrontDoor methods ---------------------------------------------------------------------


def hold_strong(door: FrontDoor, envelope: list[bytes], request: Request, payload: bytes,
                notes: tuple[object | None, ...] | None) -> None:
    """Hold a strong read for the next barrier (it is pending, with its deadline, meanwhile)."""
    # NB: no backend yet (b""): the request counts in no backend's inflight.
    token, pending = door._admit(envelope, request, b"", Backend.RAFT, notes)
    door._pending[token] = pending
    door._strong.hold(Held(token, request, payload), pending.deadline)


def hold_plain_strong(door: FrontDoor, envelope: list[bytes], parts: tuple[int, str, str],
                      payload: bytes) -> bool:
    """
    Hold a plain strong get (`door_reads.plain_get` gave `parts`) for the next barrier,
    as `hold_strong` would after decoding it; False if the door's view is not attached
    (then the full path routes it).
    """
    inline = door._inline
    if inline is None or not inline.ready:
        return False
    request_id, key, consistency = parts
    # NB: what decode_request gives for this payload (door_reads.plain_get's contract).
    request = Request("get", request_id, {"key": key, "consistency": consistency})
    token, pending = door._admit(envelope, request, b"", Backend.RAFT, None)
    door._pending[token] = pending
    door._strong.hold(Held(token, request, payload, key), pending.deadline)
    return True


def send_barrier(door: FrontDoor) -> None:
    """Ask the raft worker for one barrier covering every held read still pending."""
    strong = door._strong
    strong.waiting = [h for h in strong.waiting if h.token in door._pending]
    if not strong.can_start:
        return
    backend = door._pick(Backend.RAFT)
    if backend is None:
        held = strong.take_waiting()
        door.stats.unroutable += len(held)
        _fail(door, held, "no_leader", "no raft worker is connected to this node's front door; retry")
        return
    token = door._new_token()
    held = strong.start(token, door._clock())
    try:
        send_frames(door.backend, [backend, pack_header(KIND_BARRIER, token), b""])
    except zmq.Again:
        pass
    except zmq.ZMQError as exc:
        if exc.errno != zmq.EHOSTUNREACH:
            raise ShuttingDownError(f"front door backend socket failed: {exc}") from exc
        door._backends.pop(backend, None)
    else:
        door.stats.barriers += 1
        return
    strong.answered(token)
    door.stats.unroutable += len(held)
    _fail(door, held, "no_leader", "backend unavailable on this node; retry")


def on_barrier_answer(door: FrontDoor, token: int, payload: bytes) -> None:
    """The raft worker answered barrier `token`: answer its reads (module docstring)."""
    strong = door._strong
    if not strong.is_in_flight(token):
        door.stats.late_replies += 1
        return
    answer = unpack_barrier_answer(payload)
    if isinstance(answer, str):  # malformed: nothing changes, its reads time out
        door.stats.bad_backend_messages += 1
        log.warning("front door discarded a malformed BARRIER_ANSWER reason=%s", answer)
        return
    held = strong.answered(token)
    assert held is not None
    if isinstance(answer, BarrierError):
        _fail(door, held, answer.code, answer.message, answer.leader)
        return
    for h in held:
        pending = door._pending.pop(h.token, None)
        if pending is None:
            continue  # timed out meanwhile
        reply = _read(door, h, answer)
        if isinstance(reply, bytes):
            door._answer(pending.envelope, reply, pending.notes, Backend.RAFT, inline=True)
            continue
        # The view cannot answer it: the raft worker serves it, as without the barrier.
        door.stats.inline_declined += 1
        backend = door._pick(Backend.RAFT)
        if backend is None:
            door.stats.unroutable += 1
            door._answer(pending.envelope, error_reply(
                h.request.id, "no_leader", "no raft worker is connected to this node's front "
                "door; retry", None), pending.notes, Backend.RAFT)
            continue
        pending.backend = backend
        door._queue(backend, h.token, pending, h.payload)


def _read(door: FrontDoor, held: Held, index: int) -> bytes | Verdict:
    inline = door._inline
    if inline is None:
        return Verdict.DECLINE
    try:
        reply: bytes | Verdict | None = None
        if held.plain_key is not None:
            reply = inline.answer_strong_get(held.request.id, held.plain_key, index)
        if reply is None:
            reply = inline.answer_strong(held.request, index)
    except CorruptionError as exc:
        door._drop_inline(exc)
        return Verdict.DECLINE
    if isinstance(reply, bytes):
        door.stats.strong_inline += 1
    return reply


def _fail(door: FrontDoor, held: list[Held], code: str, message: str,
          leader: str | None = None) -> None:
    """Answer each of `held` still pending with the error `code`."""
    for h in held:
        pending = door._pending.pop(h.token, None)
        if pending is not None:
            door._answer(pending.envelope, error_reply(h.request.id, code, message, leader),
                         pending.notes, Backend.RAFT)
