"""The front door's inline reads: which reads it answers itself, and where the rest go."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
import zmq

from concord.client.raw import request
from concord.errors import CorruptionError
from concord.net.door_reads import MAX_INLINE_KEYS, Verdict, is_inline
from concord.net.observer import DoorReply
from concord.net.wire import INLINE_OPS, OPS, Backend, OpKind, Request, decode_request, ok_reply, pack
from tests.helpers import wait_until
from tests.net.fakes import DoorThread, EchoThread

Context = zmq.Context[zmq.Socket[bytes]]


class FakeInline:
    """
    Answers key "k" itself, hands off key "handoff", declines "decline", fails on "corrupt";
    strong reads (after the door's barrier) like the others. Of the plain gets, answers
    key "plain" straight away (backend "door-get"), fails on "corrupt-get" and leaves
    every other to `answer`.
    """

    ready = True

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.asked_get: list[tuple[int, str, str]] = []
        self.closed = False
        self.keep_ups = 0
        self.corrupt_on_keep_up = False

    def answer(self, request: Request) -> bytes | Verdict:
        key = request.args.get("key", request.args.get("keys"))
        self.asked.append(f"{request.op} {key}")
        if key == "handoff":
            return Verdict.HAND_OFF
        if key == "decline":
            return Verdict.DECLINE
        if key == "corrupt":
            raise CorruptionError("record checksum mismatch")
        return ok_reply(request.id, {"backend": "door"})

    def answer_get(self, request_id: int, key: str, consistency: str) -> bytes | None:
        self.asked_get.append((request_id, key, consistency))
        if key == "corrupt-get":
            raise CorruptionError("record checksum mismatch")
        return ok_reply(request_id, {"backend": "door-get"}) if key == "plain" else None

    def answer_strong(self, request: Request, index: int) -> bytes | Verdict:
        return self.answer(request)

    def answer_strong_get(self, request_id: int, key: str, index: int) -> bytes | None:
        return None  # every strong read takes answer_strong

    def keep_up(self) -> None:
        self.keep_ups += 1
        if self.corrupt_on_keep_up:
            raise CorruptionError("record checksum mismatch")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def inline_door(ctx: Context) -> Iterator[tuple[DoorThread, FakeInline]]:
    fake = FakeInline()
    door = DoorThread(ctx, inline=fake)
    backends = [EchoThread(ctx, door.backend_endpoint, "read", "reader0"),
                EchoThread(ctx, door.backend_endpoint, "raft", "raft")]
    try:
        wait_until(lambda: {"reader0", "raft"} <= set(door.door.backends), 10.0, "backends not connected")
        yield door, fake
    finally:
        for b in backends:
            b.stop()
        door.stop()


def served_by(ctx: Context, door: DoorThread, msg: dict[str, object]) -> object:
    reply = request(door.endpoint, msg, timeout_ms=2000, ctx=ctx)
    assert reply["ok"], reply
    return reply["backend"]


def test_inline_ops_derive_from_the_op_table_when_the_door_decides() -> None:
    """Inline ops are local reads of the table; the door takes them unless strong or too many keys."""
    assert {"get", "get_many", "ttl", "get_with_ttl"} == INLINE_OPS
    assert all(OPS[op].local and OPS[op].kind is OpKind.READ and OPS[op].backend is Backend.READ
               for op in INLINE_OPS)

    def req(op: str, **args: object) -> Request:
        return decode_request(pack({"op": op, "id": 1, **args}), OPS)

    assert is_inline(req("get", key="k"), OPS)
    assert is_inline(req("get", key="k", consistency="eventual"), OPS)
    assert not is_inline(req("get", key="k", consistency="strong"), OPS)
    assert is_inline(req("get_many", keys=["k"] * MAX_INLINE_KEYS), OPS)
    assert not is_inline(req("get_many", keys=["k"] * (MAX_INLINE_KEYS + 1)), OPS)
    for op in ("keys", "query", "count", "get_all", "index_lookup", "put", "status"):
        assert not is_inline(Request(op, 1, {"consistency": "eventual"}), OPS), op


def test_door_answers_inline_reads_itself_when_given_inline_reads(
        ctx: Context, inline_door: tuple[DoorThread, FakeInline]) -> None:
    """Bounded reads come from the door; hand-offs reach the raft worker; the rest a read worker."""
    door, fake = inline_door
    assert "door" == served_by(ctx, door, {"op": "get", "key": "k", "consistency": "eventual"})
    assert "door" == served_by(ctx, door, {"op": "get", "key": "k"})  # leader, the default
    assert "door" == served_by(ctx, door, {"op": "get_many", "keys": ["a", "b"]})
    assert "door" == served_by(ctx, door, {"op": "ttl", "key": "k"})
    assert 4 == door.door.stats.inline
    assert "raft" == served_by(ctx, door, {"op": "get", "key": "handoff"})
    assert 1 == door.door.stats.handoffs
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "decline"})
    assert 1 == door.door.stats.inline_declined
    asked = len(fake.asked)
    assert "reader0" == served_by(ctx, door, {"op": "keys", "prefix": "k"})
    assert "reader0" == served_by(ctx, door, {"op": "get_many", "keys": ["k"] * (MAX_INLINE_KEYS + 1)})
    assert "raft" == served_by(ctx, door, {"op": "keys", "prefix": "k", "consistency": "strong"})
    assert "raft" == served_by(ctx, door, {"op": "put", "key": "k", "value": 1})
    assert asked == len(fake.asked)  # none of those was offered to the inline reads
    assert 4 == door.door.stats.inline
    # A strong get: the door itself, after a read barrier (concord.net.door_strong).
    assert "door" == served_by(ctx, door, {"op": "get", "key": "k", "consistency": "strong"})
    assert (1, 1) == (door.door.stats.barriers, door.door.stats.strong_inline)


def test_door_leaves_reads_to_read_workers_when_its_shared_memory_fails(
        ctx: Context, inline_door: tuple[DoorThread, FakeInline]) -> None:
    """A corrupt store stops the door's own reads (it keeps serving); read workers take over."""
    door, fake = inline_door
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "corrupt"})
    assert fake.closed
    asked = len(fake.asked)
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "k"})
    assert asked == len(fake.asked)
    assert "raft" == served_by(ctx, door, {"op": "put", "key": "k", "value": 1})


def test_door_closes_its_inline_reads_when_closed(ctx: Context) -> None:
    fake = FakeInline()
    DoorThread(ctx, inline=fake).stop()
    assert fake.closed


def test_door_keeps_its_view_up_when_its_loop_passes_without_reads(
        ctx: Context, inline_door: tuple[DoorThread, FakeInline]) -> None:
    """
    Every pass of the door's loop lets the inline reads keep their view near the writer
    (a view unread through a long write load would rebuild from a scan on the next read);
    a store found corrupt meanwhile stops the door's own reads, as a failed read does.
    """
    door, fake = inline_door
    wait_until(lambda: fake.keep_ups > 2, 10.0, "the door's loop never called keep_up")
    assert "door" == served_by(ctx, door, {"op": "get", "key": "k"})
    fake.corrupt_on_keep_up = True
    wait_until(lambda: fake.closed, 10.0, "a corrupt store did not stop the door's reads")
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "k"})


class NoteEverything:
    """A door observer that notes every request (as tracing or the audit log would)."""

    hold_replies = False

    def __init__(self) -> None:
        self.ended = 0

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        return request.op, request, payload

    def end(self, note: object, reply: DoorReply) -> None:
        self.ended += 1

    def flush(self) -> None:
        pass


def test_door_answers_plain_gets_from_their_payload_when_the_inline_reads_can(
        ctx: Context, inline_door: tuple[DoorThread, FakeInline]) -> None:
    """
    A plain get is offered to answer_get first; what it leaves goes the full way (answer);
    any other read never reaches answer_get.
    """
    door, fake = inline_door
    assert "door-get" == served_by(ctx, door, {"op": "get", "key": "plain", "consistency": "eventual"})
    assert "door-get" == served_by(ctx, door, {"op": "get", "key": "plain"})
    assert [] == fake.asked
    assert 2 == door.door.stats.inline
    assert "door" == served_by(ctx, door, {"op": "get", "key": "k", "consistency": "eventual"})
    assert ["get k"] == fake.asked
    assert "raft" == served_by(ctx, door, {"op": "get", "key": "handoff"})
    assert ["plain", "plain", "k", "handoff"] == [k for _, k, _ in fake.asked_get]
    assert ["eventual", "leader", "eventual", "leader"] == [c for _, _, c in fake.asked_get]
    others: list[dict[str, object]] = [{"op": "get", "key": "plain", "meta": True},
                                       {"op": "get", "key": "plain", "consistency": "strong"},
                                       {"op": "get", "key": "plain", "timeout_ms": 1000},
                                       {"op": "get_many", "keys": ["plain"]}]
    for msg in others:
        assert served_by(ctx, door, msg) in ("door", "raft"), msg
    assert 4 == len(fake.asked_get)
    assert (3 + 3, 1) == (door.door.stats.inline, door.door.stats.strong_inline)


def test_door_stops_its_own_reads_when_a_plain_get_finds_the_store_corrupt(
        ctx: Context, inline_door: tuple[DoorThread, FakeInline]) -> None:
    door, fake = inline_door
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "corrupt-get"})
    assert fake.closed
    asked = len(fake.asked_get)
    assert "reader0" == served_by(ctx, door, {"op": "get", "key": "plain"})
    assert asked == len(fake.asked_get)


def test_door_decodes_every_request_for_its_observers_when_it_has_some(ctx: Context) -> None:
    """Observers see every request decoded: no plain get skips them."""
    fake = FakeInline()
    observer = NoteEverything()
    door = DoorThread(ctx, inline=fake, observers=[observer])
    try:
        assert "door" == served_by(ctx, door, {"op": "get", "key": "plain", "consistency": "eventual"})
        assert ([], ["get plain"], 1) == (fake.asked_get, fake.asked, observer.ended)
    finally:
        door.stop()
