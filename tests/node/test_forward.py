"""The follower side of forwarding (concord/node/forward.py) over a fake worker, and its
message layout; the leader side runs in tests/integration/test_forward.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import pytest

from concord.ids import NodeId
from concord.net.wire import OPS, OpKind, decode_request, with_leader_client
from concord.net.backend import pack_batch, unpack_batch
from concord.node.forward import (
    KIND_REPLIES,
    KIND_REPLY,
    KIND_REQUEST,
    KIND_REQUESTS,
    LEADER_ONLY,
    Forwarder,
    pack_forward,
    unpack_forward,
)
from concord.raft.state import Role


@dataclass
class FakeDriver:
    role: Role = Role.FOLLOWER
    leader_id: NodeId | None = NodeId("n1")


@dataclass
class FakeTransport:
    up: bool = True
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def send(self, to: NodeId, payload: bytes) -> bool:
        if self.up:
            self.sent.append((to, payload))
        return self.up


@dataclass
class FakeLink:
    replies: list[tuple[int, dict[str, object]]] = field(default_factory=list)
    messages: int = 0  # reply_many calls

    def reply(self, token: int, payload: bytes) -> bool:
        self.replies.append((token, msgpack.unpackb(payload)))
        return True

    def reply_many(self, replies: list[tuple[int, bytes]]) -> int:
        self.messages += 1
        for token, payload in replies:
            self.reply(token, payload)
        return 0


class FakeBook:
    def client_endpoint(self, node: NodeId | None) -> str | None:
        return None if node is None else f"tcp://{node}:1"


class FakeLog:
    def info(self, msg: str, *args: object) -> None:
        pass


@dataclass
class FakeWorker:
    log: FakeLog = field(default_factory=FakeLog)
    node_id: NodeId = NodeId("n2")
    driver: FakeDriver = field(default_factory=FakeDriver)
    transport: FakeTransport = field(default_factory=FakeTransport)
    link: FakeLink = field(default_factory=FakeLink)
    book: FakeBook = field(default_factory=FakeBook)

    def reply_clients(self, replies: list[tuple[int, bytes]]) -> None:
        self.link.reply_many(replies)  # no direct endpoint (RaftWorker.reply_clients)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def make(enabled: bool = True) -> tuple[Forwarder, FakeWorker, Clock]:
    worker, clock = FakeWorker(), Clock()
    return Forwarder(worker, enabled, 1 << 20, clock), worker, clock  # type: ignore[arg-type]


def put(request_id: int = 7, **extra: object) -> tuple[bytes, object]:
    payload = msgpack.packb({"op": "put", "id": request_id, "key": "k", "value": 1, **extra})
    return payload, decode_request(payload)


def test_leader_only_ops_are_the_writes_and_admin_ops_when_derived_from_the_op_table() -> None:
    """Every write and every admin op but the per-node `fault` is forwarded; no read is."""
    derived = {n for n, s in OPS.items() if s.kind in (OpKind.WRITE, OpKind.ADMIN)} - {"fault"}
    assert derived == set(LEADER_ONLY)


def test_message_round_trips_and_malformed_is_refused_when_unpacked() -> None:
    """pack/unpack agree; v1 is read for REQUEST and REPLY only; a wrong mark, version or
    kind, or no body, is None."""
    message = pack_forward(KIND_REPLY, 2**64 - 1, b"\x80")
    assert (KIND_REPLY, 2**64 - 1, b"\x80") == unpack_forward(message)
    assert (KIND_REPLY, 2**64 - 1, b"\x80") == unpack_forward(message[:1] + b"\x01" + message[2:])
    assert 0xC1 == message[0]
    for bad in (b"\x92" + message[1:], message[:1] + b"\x03" + message[2:],
                message[:1] + b"\x01\x03" + message[3:], message[:2] + b"\x05" + message[3:],
                message[:11], b""):
        assert None is unpack_forward(bad)


def test_follower_relays_request_unchanged_and_reply_back_when_a_leader_is_known() -> None:
    """The payload goes to the leader byte for byte; its reply goes to the door's token."""
    fwd, worker, _ = make()
    payload, request = put(client_id="c", seq=3, token="t", timeout_ms=50)
    assert fwd.take(41, payload, request)  # type: ignore[arg-type]
    [(to, message)] = worker.transport.sent
    kind, forward_id, body = unpack_forward(message)  # type: ignore[misc]
    assert ("n1", KIND_REQUEST, payload) == (to, kind, body)
    fwd.on_peer(NodeId("n3"), pack_forward(KIND_REPLY, forward_id, b"\x81\xa2id\x07"))
    assert [] == worker.link.replies  # only the node asked may answer
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, forward_id, b"\x81\xa2id\x07"))
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, forward_id, b"\x81\xa2id\x07"))
    assert [(41, {"id": 7})] == worker.link.replies
    assert (1, 1, 1) == (fwd.stats.forwarded, fwd.stats.bad, fwd.stats.late)


def test_follower_serves_it_itself_when_it_must_not_or_cannot_forward() -> None:
    """Off, a read, a leader, no leader, or a link that refuses: not taken (not_leader path)."""
    payload, request = put()
    get = msgpack.packb({"op": "get", "id": 1, "key": "k"})
    fwd, worker, _ = make(enabled=False)
    assert not fwd.take(1, payload, request)  # type: ignore[arg-type]
    fwd, worker, _ = make()
    assert not fwd.take(1, get, decode_request(get))
    worker.driver.role = Role.LEADER
    assert not fwd.take(1, payload, request)  # type: ignore[arg-type]
    worker.driver.role, worker.driver.leader_id = Role.FOLLOWER, None
    assert not fwd.take(1, payload, request)  # type: ignore[arg-type]
    worker.driver.leader_id, worker.transport.up = NodeId("n1"), False
    assert not fwd.take(1, payload, request)  # type: ignore[arg-type]
    assert ([], 1) == (worker.transport.sent, fwd.stats.unsent)


def test_client_gets_unknown_outcome_when_the_leader_changes_before_it_answers() -> None:
    """A new leader (or none): `timeout` with the new hint; a late reply is dropped."""
    fwd, worker, clock = make()
    payload, request = put(request_id=9)
    assert fwd.take(5, payload, request)  # type: ignore[arg-type]
    fwd.on_tick(clock.now)
    assert [] == worker.link.replies
    worker.driver.leader_id = NodeId("n3")
    fwd.on_tick(clock.now)
    [(token, reply)] = worker.link.replies
    assert (5, 9, "timeout", "tcp://n3:1") == (token, reply["id"], reply["error"], reply["leader"])
    _, message = worker.transport.sent[0]
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, unpack_forward(message)[1], b"\x80"))  # type: ignore[index]
    assert (1, 1, 1) == (len(worker.link.replies), fwd.stats.abandoned, fwd.stats.late)


def test_forward_is_forgotten_silently_when_past_its_deadline() -> None:
    """The front door answers `timeout` itself; the table does not grow."""
    fwd, worker, clock = make()
    payload, request = put(timeout_ms=200)
    assert fwd.take(5, payload, request)  # type: ignore[arg-type]
    clock.now += 1.1  # its timeout_ms plus the grace: not yet
    fwd.on_tick(clock.now)
    assert (1, 0) == fwd.in_flight
    clock.now += 0.2
    fwd.on_tick(clock.now)
    assert ((0, 0), [], 1) == (fwd.in_flight, worker.link.replies, fwd.stats.expired)


def test_malformed_forward_message_is_dropped_and_counted_when_received() -> None:
    """Nothing is sent or answered for it."""
    fwd, worker, _ = make()
    fwd.on_peer(NodeId("n1"), b"\xc1\x09")
    assert (1, [], []) == (fwd.stats.bad, worker.transport.sent, worker.link.replies)


def test_late_reply_meant_for_a_predecessor_is_dropped_when_the_worker_restarted() -> None:
    """Forward ids carry a per-process epoch: the restarted worker's first request is not
    answered with the reply its predecessor's first request gets."""
    before, worker, _ = make()
    payload, request = put(request_id=1)
    assert before.take(5, payload, request)  # type: ignore[arg-type]
    old_id = unpack_forward(worker.transport.sent[0][1])[1]  # type: ignore[index]
    after, worker, _ = make()
    payload, request = put(request_id=2)
    assert after.take(6, payload, request)  # type: ignore[arg-type]
    after.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, old_id, b"\x81\xa2id\x01"))
    assert ([], 1) == (worker.link.replies, after.stats.late)


LEADER = "tcp://10.0.0.1:7000"
_TAIL = b"\xadleader_client" + msgpack.packb(LEADER)


def _reply(fields: int) -> dict[str, object]:
    """An ok reply map of `fields` entries (id and ok included)."""
    return {"id": 1, "ok": True, **{f"f{i}": i for i in range(fields - 2)}}


@pytest.mark.parametrize(("fields", "header_in", "header_out"), [
    (2, b"\x82", b"\x83"),  # fixmap -> fixmap
    (15, b"\x8f", b"\xde\x00\x10"),  # fixmap full -> map16
    (16, b"\xde\x00\x10", b"\xde\x00\x11"),  # map16 -> map16
    (65535, b"\xde\xff\xff", b"\xdf\x00\x01\x00\x00"),  # map16 full -> map32
    (65536, b"\xdf\x00\x01\x00\x00", b"\xdf\x00\x01\x00\x01"),  # map32 -> map32
])
def test_success_reply_gets_the_leader_endpoint_when_relayed_whatever_its_map_header(
        fields: int, header_in: bytes, header_out: bytes) -> None:
    """Every map header form: the count grows by one, the body is kept byte for byte, and
    the field is appended."""
    reply = msgpack.packb(_reply(fields))
    assert reply.startswith(header_in)
    out = with_leader_client(reply, LEADER)
    assert header_out + reply[len(header_in):] + _TAIL == out
    assert {**_reply(fields), "leader_client": LEADER} == msgpack.unpackb(out)


def test_non_minimal_header_from_another_encoder_gets_the_smallest_form_when_relayed() -> None:
    """A 2-entry map sent as map16 or map32 (legal msgpack) comes out as a fixmap of 3;
    a float32 value keeps its 4-byte encoding (no decode and re-encode)."""
    body = b"\xa2id\x01\xa2ok\xc3"
    for header in (b"\xde\x00\x02", b"\xdf\x00\x00\x00\x02"):
        assert b"\x83" + body + _TAIL == with_leader_client(header + body, LEADER)
    f32 = b"\x83\xa2id\x01\xa2ok\xc3\xa1v\xca\x3f\xc0\x00\x00"
    assert b"\x84" + f32[1:] + _TAIL == with_leader_client(f32, LEADER)


def test_reply_is_unchanged_when_it_is_no_success_or_names_a_leader_already() -> None:
    """Errors (not_leader with another hint included), a reply with the field, no known
    endpoint, and payloads that are no map or do not decode pass through as they are."""
    error = msgpack.packb({"id": 1, "ok": False, "error": "not_leader", "message": "m",
                           "leader": "tcp://10.0.0.2:7000"})
    named = msgpack.packb({"id": 1, "ok": True, "leader_client": "tcp://10.0.0.2:7000"})
    no_ok = msgpack.packb({"id": 1})
    for reply in (error, named, no_ok, b"\x93\x01\x02\x03", b"\x82\xa2id", b"\xc1", b"",
                  msgpack.packb({"id": 1, "ok": True}) + b"\x00"):
        assert reply == with_leader_client(reply, LEADER)
    assert msgpack.packb(_reply(2)) == with_leader_client(msgpack.packb(_reply(2)), None)


def test_follower_adds_its_leaders_endpoint_when_it_relays_a_success() -> None:
    """A success relayed from n1 names n1's client endpoint; an error is relayed as it came."""
    fwd, worker, _ = make()
    for request_id in (7, 8):
        payload, request = put(request_id)
        assert fwd.take(request_id, payload, request)  # type: ignore[arg-type]
    ids = [unpack_forward(m)[1] for _, m in worker.transport.sent]  # type: ignore[index]
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, ids[0], msgpack.packb(
        {"id": 7, "ok": True, "revision": 3})))
    failed = {"id": 8, "ok": False, "error": "condition_failed", "message": "m", "leader": None}
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLY, ids[1], msgpack.packb(failed)))
    assert [(7, {"id": 7, "ok": True, "revision": 3, "leader_client": "tcp://n1:1"}),
            (8, failed)] == worker.link.replies


def test_follower_forwards_a_batch_in_one_message_when_its_door_sent_several() -> None:
    """The leader-only requests of one door message go to the leader as one REQUESTS
    message, bodies unchanged and in order; the rest come back to be served here; the
    leader's REPLIES reach each request's token in one message to the door."""
    fwd, worker, _ = make()
    puts = [put(request_id) for request_id in (1, 2, 3)]
    get = msgpack.packb({"op": "get", "id": 4, "key": "k", "consistency": "strong"})
    items = [(10 + i, payload, request) for i, (payload, request) in enumerate(puts)]
    rest = fwd.take_many([items[0], (13, get, decode_request(get)), *items[1:]])  # type: ignore[list-item]
    assert [13] == [token for token, _, _ in rest]
    [(to, message)] = worker.transport.sent
    kind, _, body = unpack_forward(message)  # type: ignore[misc]
    batch = unpack_batch(body)
    assert batch is not None
    assert ("n1", KIND_REQUESTS, [p for p, _ in puts]) == (to, kind, [b for _, b in batch])
    replies = [(forward_id, msgpack.packb({"id": n, "ok": False, "error": "x", "message": "m"}))
               for n, (forward_id, _) in enumerate(batch, 1)]
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLIES, 0, pack_batch(replies[::-1])))
    assert [(12, 3), (11, 2), (10, 1)] == [(t, r["id"]) for t, r in worker.link.replies]
    assert (1, 3, (0, 0)) == (worker.link.messages, fwd.stats.forwarded, fwd.in_flight)


def test_follower_serves_the_whole_batch_itself_when_the_link_refuses_it() -> None:
    """A REQUESTS message the peer link refuses: every request comes back, counted unsent."""
    fwd, worker, _ = make()
    worker.transport.up = False
    items = [(10 + i, *put(i)) for i in range(3)]
    assert items == fwd.take_many(items)  # type: ignore[arg-type]
    assert (3, 0, (0, 0)) == (fwd.stats.unsent, fwd.stats.forwarded, fwd.in_flight)


def test_malformed_batch_is_dropped_whole_when_its_index_does_not_match() -> None:
    """A REPLIES whose index does not match its bytes answers nobody and is counted."""
    fwd, worker, _ = make()
    items = [(10 + i, *put(i)) for i in range(2)]
    assert [] == fwd.take_many(items)  # type: ignore[arg-type]
    batch = unpack_batch(unpack_forward(worker.transport.sent[0][1])[2])  # type: ignore[index]
    assert batch is not None
    good = pack_batch([(fid, msgpack.packb({"id": 0})) for fid, _ in batch])
    fwd.on_peer(NodeId("n1"), pack_forward(KIND_REPLIES, 0, good[:-1]))
    assert ([], 1, (2, 0)) == (worker.link.replies, fwd.stats.bad, fwd.in_flight)


def test_leader_answers_a_batch_in_one_message_when_it_can_answer_at_once() -> None:
    """REQUESTS of ops that are not forwarded (and one that does not decode): one REPLIES
    message back to the sender, one error per request, under each forward id."""
    fwd, worker, _ = make()
    get = msgpack.packb({"op": "get", "id": 5, "key": "k"})
    fwd.on_peer(NodeId("n3"), pack_forward(KIND_REQUESTS, 0, pack_batch([(77, get), (78, b"\xc1")])))
    [(to, message)] = worker.transport.sent
    kind, _, body = unpack_forward(message)  # type: ignore[misc]
    replies = {forward_id: msgpack.unpackb(reply) for forward_id, reply in unpack_batch(body) or []}
    assert ("n3", KIND_REPLIES, [77, 78]) == (to, kind, list(replies))
    assert ("invalid_request", 5) == (replies[77]["error"], replies[77]["id"])
    assert "invalid_request" == replies[78]["error"]
    assert 2 == fwd.stats.served
