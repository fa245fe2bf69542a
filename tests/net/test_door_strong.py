"""
The front door's strong reads after a read barrier (concord.net.door_strong): one barrier
per batch, answers only after it, errors and fallbacks; and the barrier's link messages.
"""

from __future__ import annotations

import os
import time
from typing import Iterator

import msgpack
import pytest
import zmq

from concord.net.backend import (
    KIND_BARRIER,
    BackendLink,
    BackendRequest,
    BarrierError,
    pack_barrier_answer,
    pack_barrier_error,
    pack_header,
    unpack_barrier_answer,
)
from concord.net.door_reads import MAX_INLINE_KEYS, Verdict, is_inline, is_strong_inline
from concord.net.door_strong import BARRIER_RETRY_S, Held, StrongBarriers
from concord.net.wire import OPS, Backend, Request, decode_request, ok_reply, pack
from tests.helpers import wait_until
from tests.net.fakes import DoorThread, ipc_endpoint

Context = zmq.Context[zmq.Socket[bytes]]


class FakeStrongInline:
    """Answers strong reads with the barrier's index; declines key "behind" (a view behind)."""

    ready = True

    def __init__(self) -> None:
        self.strong: list[tuple[str, int]] = []
        self.gets: list[tuple[str, str]] = []
        self.strong_gets: list[tuple[str, int]] = []
        self.closed = False

    def answer(self, request: Request) -> bytes | Verdict:
        return ok_reply(request.id, {"by": "door", "index": -1})

    def answer_get(self, request_id: int, key: str, consistency: str) -> bytes | None:
        self.gets.append((key, consistency))
        return None  # every plain get takes the full path (answer)

    def answer_strong_get(self, request_id: int, key: str, index: int) -> bytes | None:
        """Answers plain strong gets of keys "plain*"; None (answer_strong) for the rest."""
        self.strong_gets.append((key, index))
        return ok_reply(request_id, {"by": "plain", "index": index}) if key.startswith("plain") else None

    def answer_strong(self, request: Request, index: int) -> bytes | Verdict:
        key = str(request.args.get("key"))
        self.strong.append((key, index))
        if key == "behind":
            return Verdict.DECLINE
        return ok_reply(request.id, {"by": "door", "index": index})

    def keep_up(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Rig:
    """A door on a thread, with fake inline reads and a raft backend the test drives."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.inline = FakeStrongInline()
        self.door = DoorThread(ctx, inline=self.inline, default_timeout_ms=3000)
        self.raft = BackendLink(ctx, self.door.backend_endpoint, Backend.RAFT, "raft",
                                heartbeat_interval_s=0.05)
        self.clients: list[zmq.Socket[bytes]] = []

        def connected() -> bool:
            self.raft.service_timers(time.monotonic())
            return "raft" in self.door.door.backends

        wait_until(connected, 10.0, "the raft backend never connected")

    def send(self, msg: dict[str, object]) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.door.endpoint)
        sock.send_multipart([b"", pack(msg)])
        self.clients.append(sock)
        return sock

    def raft_takes(self, timeout_ms: int = 5000) -> list[BackendRequest]:
        assert self.raft.socket.poll(timeout_ms, zmq.POLLIN), "nothing reached the raft backend"
        return self.raft.recv_batch()

    def close(self) -> None:
        for sock in self.clients:
            sock.close()
        self.raft.close()
        self.door.stop()


@pytest.fixture
def rig(ctx: Context) -> Iterator[Rig]:
    r = Rig(ctx)
    try:
        yield r
    finally:
        r.close()


def reply_of(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> dict[str, object]:
    assert sock.poll(timeout_ms, zmq.POLLIN), "no reply"
    frames = sock.recv_multipart()
    reply = msgpack.unpackb(frames[-1], raw=False)
    assert isinstance(reply, dict)
    return reply


def strong(key: str, rid: int, **args: object) -> dict[str, object]:
    return {"op": "get", "id": rid, "key": key, "consistency": "strong", **args}


def test_strong_inline_takes_the_ops_and_limits_of_inline_reads_when_strong() -> None:
    """The same ops and key limits as the door's other inline reads, at strong only."""
    def req(op: str, **args: object) -> Request:
        return decode_request(pack({"op": op, "id": 1, **args}), OPS)

    assert is_strong_inline(req("get", key="k", consistency="strong"), OPS)
    assert is_strong_inline(req("get_many", keys=["k"] * MAX_INLINE_KEYS, consistency="strong"), OPS)
    assert not is_strong_inline(req("get_many", keys=["k"] * (MAX_INLINE_KEYS + 1),
                                    consistency="strong"), OPS)
    assert not is_strong_inline(req("keys", prefix="k", consistency="strong"), OPS)
    assert not is_strong_inline(req("get", key="k"), OPS)
    assert not is_inline(req("get", key="k", consistency="strong"), OPS)


def test_barriers_hold_reads_until_a_slot_frees_when_one_is_in_flight() -> None:
    """One barrier in flight: later reads wait for the next; expiry frees the slot."""
    barriers = StrongBarriers()
    r1, r2 = (Held(t, Request("get", t, {"key": "k"}), b"") for t in (1, 2))
    assert not barriers.can_start
    barriers.hold(r1, deadline=10.0)
    assert barriers.can_start
    assert [r1] == barriers.start(100, now=0.0)
    barriers.hold(r2, deadline=2.0)
    assert not barriers.can_start  # one in flight
    assert [r1] == barriers.answered(100)
    assert barriers.answered(100) is None  # answered once
    assert [r2] == barriers.start(101, now=0.0)
    barriers.expire(1.9)
    assert barriers.is_in_flight(101)
    barriers.expire(2.0)
    assert not barriers.is_in_flight(101) and barriers.answered(101) is None
    assert [] == barriers.waiting


def test_barriers_hold_the_reads_again_when_an_answer_never_comes() -> None:
    """A barrier unanswered for BARRIER_RETRY_S is forgotten; its reads wait for the next."""
    barriers = StrongBarriers()
    r1 = Held(1, Request("get", 1, {"key": "k"}), b"")
    barriers.hold(r1, deadline=100.0)
    barriers.start(7, now=0.0)
    barriers.expire(BARRIER_RETRY_S - 0.01)
    assert barriers.is_in_flight(7) and not barriers.can_start
    barriers.expire(BARRIER_RETRY_S)
    assert not barriers.is_in_flight(7) and barriers.can_start
    assert [r1] == barriers.start(8, now=BARRIER_RETRY_S)
    barriers.expire(100.0)  # the read's deadline: forgotten for good
    assert not barriers.is_in_flight(8) and not barriers.can_start


def test_door_asks_one_barrier_and_answers_after_it_when_reads_are_strong(rig: Rig) -> None:
    """Strong gets from many clients: one barrier, no request to the raft worker, no reply before it."""
    socks = [rig.send(strong(f"k{i}", 10 + i)) for i in range(5)]
    taken = rig.raft_takes()
    assert 1 == len(taken) and taken[0].barrier and b"" == taken[0].payload
    first = taken[0].token
    # The reads that did not make it into the first barrier wait for the next: answer
    # barriers until every read is answered, and nothing before its barrier.
    assert all(not s.poll(50, zmq.POLLIN) for s in socks)
    assert rig.raft.answer_barrier(first, pack_barrier_answer(7))
    replies: dict[object, dict[str, object]] = {}
    while len(replies) < len(socks):
        for sock in socks:
            if sock.poll(100, zmq.POLLIN):
                reply = reply_of(sock)
                replies[reply["id"]] = reply
        if len(replies) < len(socks):
            more = rig.raft_takes()
            assert all(r.barrier for r in more)
            for r in more:
                rig.raft.answer_barrier(r.token, pack_barrier_answer(8))
    assert {10 + i for i in range(5)} == set(replies)
    assert all(r["ok"] and r["by"] == "door" and r["index"] in (7, 8) for r in replies.values())
    assert 5 == rig.door.door.stats.strong_inline
    assert {k for k, _ in rig.inline.strong} == {f"k{i}" for i in range(5)}


def test_door_answers_a_plain_strong_get_only_after_its_barrier_when_plain(rig: Rig) -> None:
    """A plain strong get (no decoding) is held for a barrier like any strong read, never
    answered as a plain eventual get, then answered from the barrier's index; a strong get
    with more fields is held and answered by answer_strong as before."""
    sock = rig.send(strong("plain", 50))
    taken = rig.raft_takes()  # NB: before the second send, so the first barrier is this read's
    assert 1 == len(taken) and taken[0].barrier
    other = rig.send(strong("plain2", 51, timeout_ms=4000))
    assert not sock.poll(100, zmq.POLLIN)
    assert [] == rig.inline.gets  # never asked as an (unbarriered) plain get
    rig.raft.answer_barrier(taken[0].token, pack_barrier_answer(12))
    assert {"id": 50, "ok": True, "by": "plain", "index": 12} == reply_of(sock)
    if not other.poll(200, zmq.POLLIN):  # it may have missed the first barrier
        [more] = rig.raft_takes()
        rig.raft.answer_barrier(more.token, pack_barrier_answer(12))
    assert {"id": 51, "ok": True, "by": "door", "index": 12} == reply_of(other)
    assert [("plain", 12)] == rig.inline.strong_gets
    assert [("plain2", 12)] == rig.inline.strong
    assert [] == rig.inline.gets


def test_door_gives_each_read_the_barrier_error_when_the_barrier_fails(rig: Rig) -> None:
    """A barrier error (here not_leader with a hint) reaches every read it covers, with its own id."""
    sock = rig.send(strong("k", 41))
    token = rig.raft_takes()[0].token
    rig.raft.answer_barrier(token, pack_barrier_error("not_leader", "lost it", "tcp://h:1"))
    assert {"id": 41, "ok": False, "error": "not_leader", "message": "lost it",
            "leader": "tcp://h:1"} == reply_of(sock)
    assert [] == rig.inline.strong


def test_door_sends_the_read_to_the_raft_worker_when_its_view_cannot_answer(rig: Rig) -> None:
    """A view behind the barrier's index is never read: the raft worker gets the request as before."""
    sock = rig.send(strong("behind", 42))
    token = rig.raft_takes()[0].token
    rig.raft.answer_barrier(token, pack_barrier_answer(9))
    [req] = rig.raft_takes()
    assert not req.barrier
    assert {"op": "get", "id": 42, "key": "behind", "consistency": "strong"} == msgpack.unpackb(req.payload)
    assert not sock.poll(50, zmq.POLLIN)
    rig.raft.reply(req.token, ok_reply(42, {"by": "raft"}))
    assert {"id": 42, "ok": True, "by": "raft"} == reply_of(sock)
    assert [("behind", 9)] == rig.inline.strong


def test_door_changes_nothing_when_a_barrier_answer_is_malformed(rig: Rig) -> None:
    """A malformed answer is counted and dropped; the barrier's reads still wait for a good one."""
    sock = rig.send(strong("k", 43))
    token = rig.raft_takes()[0].token
    for bad in (b"\xc1", pack({"index": -1}), pack({"index": 1, "x": 2}), msgpack.packb([1])):
        rig.raft.answer_barrier(token, bad)
    wait_until(lambda: rig.door.door.stats.bad_backend_messages >= 4, 5.0, "answers not counted")
    assert not sock.poll(50, zmq.POLLIN)
    rig.raft.answer_barrier(token, pack_barrier_answer(3))
    assert {"id": 43, "ok": True, "by": "door", "index": 3} == reply_of(sock)


def test_door_answers_no_leader_when_no_raft_worker_is_connected(ctx: Context) -> None:
    """No raft backend: the held read gets no_leader at once, as without barriers."""
    inline = FakeStrongInline()
    door = DoorThread(ctx, inline=inline)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(door.endpoint)
        sock.send_multipart([b"", pack(strong("k", 44))])
        reply = reply_of(sock)
        assert (44, "no_leader") == (reply["id"], reply["error"])
    finally:
        sock.close()
        door.stop()


# -- the link's barrier messages ----------------------------------------------------------


def test_barrier_answer_round_trips_when_well_formed() -> None:
    assert 12 == unpack_barrier_answer(pack_barrier_answer(12))
    assert BarrierError("timeout", "slow", None) == unpack_barrier_answer(
        pack_barrier_error("timeout", "slow", None))


@pytest.mark.parametrize("payload, fault", [
    (b"", "not one msgpack value"),
    (b"\x81\xa5index\x01\x02", "not one msgpack value"),  # extra bytes
    (msgpack.packb(3), "not a map"),
    (msgpack.packb({"index": "1"}), "index must be an int"),
    (msgpack.packb({"index": True}), "index must be an int"),
    (msgpack.packb({"error": 1, "message": "m", "leader": None}), "error and message"),
    (msgpack.packb({"error": "e", "message": "m", "leader": 5}), "leader must be"),
    (msgpack.packb({"error": "e"}), "neither"),
])
def test_barrier_answer_names_the_fault_when_malformed(payload: bytes, fault: str) -> None:
    answer = unpack_barrier_answer(payload)
    assert isinstance(answer, str) and fault in answer, answer


def test_link_discards_a_barrier_when_malformed_or_not_for_a_raft_backend(ctx: Context) -> None:
    """A BARRIER with a payload, or to a read worker, is dropped and counted; a good one is taken."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = ipc_endpoint()
    router.bind(endpoint)
    raft = BackendLink(ctx, endpoint, Backend.RAFT, "raft")
    read = BackendLink(ctx, endpoint, Backend.READ, "read")
    try:
        idents: set[bytes] = set()

        def hello() -> bool:
            for link in (raft, read):
                link.service_timers(time.monotonic())
            while router.poll(0, zmq.POLLIN):
                idents.add(router.recv_multipart()[0])
            return 2 == len(idents)

        wait_until(hello, 10.0, "the links never said HELLO")
        router.send_multipart([b"raft", pack_header(KIND_BARRIER, 5), b"x"])
        router.send_multipart([b"read", pack_header(KIND_BARRIER, 6), b""])
        router.send_multipart([b"raft", pack_header(KIND_BARRIER, 7), b""])
        assert raft.socket.poll(5000, zmq.POLLIN)
        wait_until(lambda: raft.recv_batch() == [BackendRequest(7, b"", barrier=True)], 5.0,
                   "the good barrier was not taken")
        assert 1 == raft.bad_messages
        wait_until(lambda: read.recv_batch() == [] and read.bad_messages == 1, 5.0,
                   lambda: f"read link bad_messages={read.bad_messages}")
    finally:
        raft.close()
        read.close()
        router.close()
        os.unlink(endpoint[len("ipc://"):])
