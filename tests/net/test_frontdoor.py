"""The client front door: envelopes, strict validation, routing, timeouts (backends on threads)."""

from __future__ import annotations

import os
import time
from typing import Iterator

import msgpack
import pytest
import zmq

from concord.errors import ConfigError, RequestTimeoutError
from concord.client.raw import request
from concord.net.backend import KIND_REPLIES, BackendLink, pack_batch, pack_header
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.net.wire import Backend, decode_request, ok_reply, pack
from tests.helpers import wait_until
from tests.net.fakes import DoorThread, EchoThread, ipc_endpoint
from tests.net.netutil import closed_port

Context = zmq.Context[zmq.Socket[bytes]]
MAX_REQUEST_BYTES = 4096  # DoorThread's default max_request_bytes


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    context: Context = zmq.Context()
    yield context
    context.term()


@pytest.fixture(scope="module")
def door(ctx: Context) -> Iterator[DoorThread]:
    d = DoorThread(ctx)
    backends = [
        EchoThread(ctx, d.backend_endpoint, "read", "read-0"),
        EchoThread(ctx, d.backend_endpoint, "read", "read-1"),
        EchoThread(ctx, d.backend_endpoint, "raft", "raft"),
    ]
    try:
        wait_ready(ctx, d.endpoint)
        yield d
    finally:
        for b in backends:
            b.stop()
        d.stop()
        assert not os.path.exists(d.backend_endpoint[len("ipc://"):])


def wait_ready(ctx: Context, endpoint: str) -> None:
    """Wait (on replies) until both read workers and the raft worker answer."""
    seen: set[str] = set()

    def probe() -> bool:
        for msg in ({"op": "get", "key": "k"}, {"op": "put", "key": "k", "value": 1}):
            reply = request(endpoint, msg, timeout_ms=500, ctx=ctx)
            if reply["ok"]:
                seen.add(str(reply["backend"]))
        return {"read-0", "read-1", "raft"} <= seen

    wait_until(probe, 20.0, describe=lambda: f"backends answering: {sorted(seen)}")


def dealer(ctx: Context, endpoint: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv_frames(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> list[bytes]:
    assert sock.poll(timeout_ms, zmq.POLLIN), "no reply"
    return sock.recv_multipart()


def unpack(data: bytes) -> dict[str, object]:
    obj = msgpack.unpackb(data, raw=False)
    assert isinstance(obj, dict)
    return obj


def test_req_client_gets_reply_when_request_valid(ctx: Context, door: DoorThread) -> None:
    """A REQ client (payload only) gets a reply with its id."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(door.endpoint)
    try:
        sock.send(pack({"op": "put", "id": 7, "key": "a", "value": b"v"}))
        reply = unpack(recv_frames(sock)[0])
        assert (7, True, "raft") == (reply["id"], reply["ok"], reply["role"])
    finally:
        sock.close()


def test_dealer_client_gets_delimited_reply_when_delimiter_sent(ctx: Context, door: DoorThread) -> None:
    """A DEALER sending [b"", payload] gets [b"", reply]."""
    sock = dealer(ctx, door.endpoint)
    try:
        sock.send_multipart([b"", pack({"op": "get", "id": 8, "key": "a"})])
        frames = recv_frames(sock)
        assert 2 == len(frames) and b"" == frames[0]
        assert (8, True, "read") == tuple(unpack(frames[1])[k] for k in ("id", "ok", "role"))
    finally:
        sock.close()


def test_dealer_client_gets_bare_reply_when_no_delimiter(ctx: Context, door: DoorThread) -> None:
    """A DEALER sending just [payload] is accepted and gets just [reply]."""
    sock = dealer(ctx, door.endpoint)
    try:
        sock.send(pack({"op": "get", "id": 9, "key": "a"}))
        frames = recv_frames(sock)
        assert 1 == len(frames)
        assert (9, True) == (unpack(frames[0])["id"], unpack(frames[0])["ok"])
    finally:
        sock.close()


def test_request_helper_returns_reply_when_server_answers(ctx: Context, door: DoorThread) -> None:
    """concord.client.raw.request round-trips a request map."""
    reply = request(door.endpoint, {"op": "status", "id": 11}, timeout_ms=2000, ctx=ctx)
    assert {"id": 11, "ok": True, "op": "status", "role": "raft"} == {
        k: reply[k] for k in ("id", "ok", "op", "role")
    }


_BAD_PAYLOADS: list[tuple[str, bytes, int | None, str]] = [
    ("not msgpack", b"\xc1\xc1", None, "not one msgpack value"),
    ("truncated", pack({"op": "get", "id": 1, "key": "k"})[:-2], None, "not one msgpack value"),
    ("two values", pack({"op": "get", "id": 1}) + pack({}), None, "not one msgpack value"),
    ("not a map", msgpack.packb([1, 2, 3]), None, "not a map"),
    ("empty payload", b"", None, "payload is empty"),
    ("bad utf-8", b"\x81\xa2\xff\xfe\x01", None, "not one msgpack value"),
    ("non-str key", msgpack.packb({"op": "get", "id": 2, 5: "x"}), 2, "not a string"),
    ("ext type", msgpack.packb({"op": "get", "id": 3, "key": msgpack.ExtType(5, b"x")}), None, "ext type"),
    ("missing id", pack({"op": "get", "key": "k"}), None, "missing field id"),
    ("id not int", pack({"op": "get", "id": "1", "key": "k"}), None, "id must be an integer"),
    ("id bool", pack({"op": "get", "id": True, "key": "k"}), None, "id must be an integer"),
    ("missing op", pack({"id": 4, "key": "k"}), 4, "missing field op"),
    ("op not str", pack({"op": 1, "id": 5}), 5, "op must be a string"),
    ("unknown op", pack({"op": "explode", "id": 6}), 6, "unknown op"),
    ("missing arg", pack({"op": "get", "id": 7}), 7, "requires argument key"),
    ("wrong arg type", pack({"op": "get", "id": 8, "key": 1}), 8, "key of op get must be a string"),
    ("unknown arg", pack({"op": "get", "id": 9, "key": "k", "kee": 1}), 9, "does not take argument"),
    ("bad consistency", pack({"op": "get", "id": 10, "key": "k", "consistency": "sorta"}), 10, "eventual"),
    ("ttl bool", pack({"op": "put", "id": 11, "key": "k", "value": 1, "ttl": True}), 11, "number"),
    ("two conditions", pack({"op": "put_if", "id": 12, "key": "k", "value": 1, "version": 1, "absent": True}),
     12, "exactly one of"),
    ("client_id alone", pack({"op": "put", "id": 13, "key": "k", "value": 1, "client_id": "c"}), 13,
     "client_id and seq"),
    ("bad items", pack({"op": "put_many", "id": 14, "items": [["k"]]}), 14, "items"),
    ("negative timeout", pack({"op": "get", "id": 15, "key": "k", "timeout_ms": -1}), 15, "positive"),
    ("oversized", pack({"op": "put", "id": 16, "key": "k", "value": b"x" * MAX_REQUEST_BYTES}), None,
     "exceeds max_request_bytes"),
]


@pytest.mark.parametrize(("payload", "request_id", "match"), [c[1:] for c in _BAD_PAYLOADS],
                         ids=[c[0] for c in _BAD_PAYLOADS])
def test_invalid_request_reply_when_input_malformed_and_door_keeps_serving(
    ctx: Context, door: DoorThread, payload: bytes, request_id: int | None, match: str
) -> None:
    """Each malformed-input class gets invalid_request (id when readable) while another client is served."""
    bad, good = dealer(ctx, door.endpoint), dealer(ctx, door.endpoint)
    try:
        good.send_multipart([b"", pack({"op": "get", "id": 100, "key": "k"})])
        bad.send_multipart([b"", payload])
        good.send_multipart([b"", pack({"op": "put", "id": 101, "key": "k", "value": 0})])
        reply = unpack(recv_frames(bad)[1])
        assert {"id": request_id, "ok": False, "error": "invalid_request", "leader": None} == {
            k: reply[k] for k in ("id", "ok", "error", "leader")
        }
        assert match in str(reply["message"])
        assert [100, 101] == sorted(int(unpack(recv_frames(good)[1])["id"]) for _ in range(2))  # type: ignore[call-overload]
        assert not bad.poll(0), "malformed input produced more than one reply"
    finally:
        bad.close()
        good.close()


@pytest.mark.parametrize(
    ("frames", "expected_prefix"),
    [
        ([b"", pack({"op": "get", "id": 1, "key": "k"}), b"extra"], [b""]),
        ([b"hop", b"", pack({"op": "get", "id": 1, "key": "k"})], []),
        ([b"a", b"b"], []),
        ([b""], [b""]),
    ],
    ids=["extra frame", "multi-hop envelope", "two payload frames", "delimiter only"],
)
def test_invalid_request_reply_when_frames_malformed(
    ctx: Context, door: DoorThread, frames: list[bytes], expected_prefix: list[bytes]
) -> None:
    """Wrong frame counts get invalid_request with id nil, mirroring the delimiter if one was sent."""
    sock = dealer(ctx, door.endpoint)
    try:
        sock.send_multipart(frames)
        got = recv_frames(sock)
        assert expected_prefix == got[:-1]
        reply = unpack(got[-1])
        assert (None, False, "invalid_request") == (reply["id"], reply["ok"], reply["error"])
    finally:
        sock.close()


def test_connection_dropped_when_frame_exceeds_hard_limit(ctx: Context, door: DoorThread) -> None:
    """A frame far over max_request_bytes is cut off by libzmq (no reply); others are still served."""
    huge = dealer(ctx, door.endpoint)
    try:
        huge.send_multipart([b"", b"x" * (8 * MAX_REQUEST_BYTES)])
        reply = request(door.endpoint, {"op": "get", "id": 5, "key": "k"}, timeout_ms=2000, ctx=ctx)
        assert (5, True) == (reply["id"], reply["ok"])
        assert not huge.poll(50)
    finally:
        huge.close()


def test_reads_go_to_read_workers_when_consistency_not_strong(ctx: Context, door: DoorThread) -> None:
    """eventual/leader reads reach read workers, spread over both; strong reads and writes reach raft."""
    read_names = set()
    for i, consistency in enumerate(["eventual", "leader"] * 4):
        reply = request(door.endpoint, {"op": "get", "id": i, "key": "k", "consistency": consistency}, ctx=ctx)
        assert "read" == reply["role"]
        read_names.add(reply["backend"])
    assert {"read-0", "read-1"} == read_names
    cases: list[tuple[str, dict[str, object]]] = [
        ("strong get", {"op": "get", "key": "k", "consistency": "strong"}),
        ("strong count", {"op": "count", "prefix": "a", "consistency": "strong"}),
        ("put", {"op": "put", "key": "k", "value": [1, {"a": None}]}),
        ("delete_where", {"op": "delete_where", "prefix": "a"}),
        ("members", {"op": "members"}),
        ("fault", {"op": "fault", "command": {"cmd": "heal"}}),
        ("query", {"op": "query", "range": ["a", "b"]}),
    ]
    routed = {op: request(door.endpoint, msg, ctx=ctx)["role"] for op, msg in cases}
    assert {"strong get": "raft", "strong count": "raft", "put": "raft", "delete_where": "raft",
            "members": "raft", "fault": "raft", "query": "read"} == routed


def test_timeout_reply_when_backend_silent(ctx: Context, door: DoorThread) -> None:
    """A request the backend never answers gets a timeout error after its timeout_ms."""
    reply = request(door.endpoint, {"op": "get", "id": 3, "key": "silent", "timeout_ms": 20}, ctx=ctx)
    assert {"id": 3, "ok": False, "error": "timeout", "leader": None} == {
        k: reply[k] for k in ("id", "ok", "error", "leader")
    }


@pytest.mark.parametrize("own_context", [False, True])
def test_request_helper_retries_when_first_attempt_unanswered(ctx: Context, door: DoorThread,
                                                              own_context: bool) -> None:
    """Lazy Pirate: the first attempt is ignored, the resend (same id) on a fresh socket is
    answered, not refused by the first socket's reset."""
    msg = {"op": "get", "id": 4, "key": "flaky", "consistency": "strong"}  # one backend: raft
    reply = request(door.endpoint, msg, timeout_ms=100, retries=1, ctx=None if own_context else ctx)
    assert (4, True) == (reply["id"], reply["ok"])


def test_request_helper_raises_timeout_when_nobody_listens(ctx: Context) -> None:
    """With nothing at the endpoint, request raises RequestTimeoutError after its retries."""
    port = closed_port()
    with pytest.raises(RequestTimeoutError, match="after 2 attempts") as info:
        request(f"tcp://127.0.0.1:{port}", {"op": "status", "id": 77}, timeout_ms=30, retries=1, ctx=ctx)
    assert 77 == info.value.request_id


def test_no_leader_reply_when_no_backend_connected(ctx: Context) -> None:
    """With no backend of the needed kind, the door answers no_leader at once."""
    d = DoorThread(ctx)
    try:
        reply = request(d.endpoint, {"op": "put", "id": 1, "key": "k", "value": 1}, ctx=ctx)
        assert (1, False, "no_leader") == (reply["id"], reply["ok"], reply["error"])
        assert "raft worker" in str(reply["message"])
    finally:
        d.stop()


def test_read_goes_to_raft_worker_when_read_worker_hands_it_off(
    ctx: Context, door: DoorThread
) -> None:
    """A HANDOFF from a read worker sends the same request to the raft worker."""
    before = door.door.stats.handoffs
    reply = request(door.endpoint, {"op": "get", "id": 5, "key": "handoff"}, ctx=ctx)
    assert (5, True, "raft", "get", "leader") == tuple(
        reply[k] for k in ("id", "ok", "role", "op", "consistency")
    )
    assert before + 1 == door.door.stats.handoffs


def test_no_leader_reply_when_handoff_finds_no_raft_worker(ctx: Context) -> None:
    """A read handed off with no raft worker connected gets no_leader, not a timeout."""
    d = DoorThread(ctx)
    reader = EchoThread(ctx, d.backend_endpoint, "read", "read-0")
    try:
        wait_until(
            lambda: "read-0" in d.door.backends, 20.0, describe=lambda: str(d.door.backends)
        )
        reply = request(d.endpoint, {"op": "get", "id": 6, "key": "handoff"}, ctx=ctx)
        assert (6, False, "no_leader") == (reply["id"], reply["ok"], reply["error"])
        assert "raft worker" in str(reply["message"])
    finally:
        reader.stop()
        d.stop()


def test_config_error_when_endpoint_unbindable(ctx: Context) -> None:
    """A bad endpoint is a ConfigError naming it, and no socket leaks."""
    with pytest.raises(ConfigError, match="cannot bind front door endpoint tcp://256"):
        FrontDoor(ctx, FrontDoorOptions("tcp://256.1.1.1:0", ipc_endpoint()))
    with pytest.raises(ConfigError, match="ipc path is 120 bytes"):
        FrontDoor(ctx, FrontDoorOptions("tcp://127.0.0.1:0", "ipc:///" + "x" * 119))
    with pytest.raises(ConfigError, match="default_timeout_ms"):
        FrontDoor(ctx, FrontDoorOptions("tcp://127.0.0.1:0", ipc_endpoint(), default_timeout_ms=0))


def test_reads_prefer_least_loaded_worker_when_one_is_busy(ctx: Context, door: DoorThread) -> None:
    """While one read worker holds an unanswered request, every new read goes to the other."""
    busy = dealer(ctx, door.endpoint)
    try:
        busy.send_multipart([b"", pack({"op": "get", "id": 1, "key": "silent", "timeout_ms": 3000})])
        names = [
            request(door.endpoint, {"op": "get", "key": "k"}, ctx=ctx)["backend"] for _ in range(6)
        ]
        assert 1 == len(set(names)), names
        # The other worker holds the silent request; the door answers it with timeout later.
    finally:
        busy.close()


def test_backends_rejoin_when_front_door_restarts(ctx: Context) -> None:
    """A restarted front door on the same ipc path relearns its backends from their HELLOs."""
    first = DoorThread(ctx)
    path = first.backend_endpoint
    backends = [EchoThread(ctx, path, "raft", "raft"), EchoThread(ctx, path, "read", "read-0")]
    try:
        wait_until(lambda: request(first.endpoint, {"op": "status"}, ctx=ctx)["ok"], 10.0)
        first.stop()
        second = DoorThread(ctx, backend_endpoint=path)
        try:
            roles: set[object] = set()

            def both_roles_answer() -> bool:
                for msg in ({"op": "status"}, {"op": "get", "key": "k"}):
                    reply = request(second.endpoint, msg, ctx=ctx)
                    if reply["ok"]:
                        roles.add(reply["role"])
                return {"raft", "read"} == roles

            wait_until(both_roles_answer, 10.0, describe=lambda: str(roles))
        finally:
            second.stop()
    finally:
        for b in backends:
            b.stop()


def test_pipelined_requests_all_answered_when_sent_without_waiting(ctx: Context, door: DoorThread) -> None:
    """200 requests in flight on one DEALER, mixed reads and writes, each get exactly one reply."""
    sock = dealer(ctx, door.endpoint)
    try:
        for i in range(200):
            msg = {"op": "get", "id": i, "key": "k"} if i % 2 else {"op": "put", "id": i, "key": "k", "value": i}
            sock.send_multipart([b"", pack(msg)])
        ids = sorted(int(unpack(recv_frames(sock)[1])["id"]) for _ in range(200))  # type: ignore[call-overload]
        assert list(range(200)) == ids
    finally:
        sock.close()


def test_each_client_answered_when_raft_worker_batches_replies(ctx: Context) -> None:
    """Replies sent as one REPLIES message reach each client under its own token; a
    malformed REPLIES is counted and changes nothing."""
    d = DoorThread(ctx)
    link = BackendLink(ctx, d.backend_endpoint, Backend.RAFT, "raft", heartbeat_interval_s=0.05)
    clients = [dealer(ctx, d.endpoint) for _ in range(3)]
    try:
        def registered() -> bool:
            link.service_timers(time.monotonic())
            return "raft" in d.door.backends

        wait_until(registered, 20.0, describe=lambda: str(d.door.backends))
        for i, sock in enumerate(clients):
            sock.send_multipart([b"", pack({"op": "put", "id": 10 + i, "key": f"k{i}", "value": i})])
        got: list[tuple[int, bytes]] = []

        def drain() -> bool:
            while (req := link.recv()) is not None:
                got.append((req.token, ok_reply(decode_request(req.payload).id, {"n": len(got)})))
            return len(got) == 3

        assert link.socket.poll(5000, zmq.POLLIN)
        wait_until(drain, 5.0, describe=lambda: f"{len(got)} requests")
        bad = d.door.stats.bad_backend_messages
        link.socket.send_multipart([pack_header(KIND_REPLIES, 0), pack_batch(got)[:-1]])
        assert 0 == link.reply_many(got)
        for i, sock in enumerate(clients):
            assert 10 + i == unpack(recv_frames(sock)[1])["id"]
        assert bad + 1 == d.door.stats.bad_backend_messages
    finally:
        for sock in clients:
            sock.close()
        link.close()
        d.stop()
