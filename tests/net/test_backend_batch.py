"""Requests from the front door to a backend per pass of its loop (backend link v4 REQUESTS)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Iterator

import msgpack
import pytest
import zmq

from concord.net.backend import (
    KIND_HELLO,
    KIND_REQUEST,
    KIND_REQUESTS,
    MAX_BATCH_BYTES,
    BackendLink,
    batches,
    pack_batch,
    pack_header,
    unpack_header,
)
from concord.net._zmqutil import send_frames
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.net.wire import Backend, pack
from tests.helpers import wait_until

Context = zmq.Context[zmq.Socket[bytes]]


def test_batches_cut_at_the_byte_cap_when_payloads_exceed_it() -> None:
    """Payloads go in order into runs of at most the cap; a payload over it runs alone."""
    items = [(1, b"a" * 40), (2, b"b" * 50), (3, b"c" * 20), (4, b"d" * 200), (5, b"e")]
    assert [[1], [2, 3], [4], [5]] == [[t for t, _ in run] for run in batches(items, 80)]
    assert [items] == list(batches(items, 10_000))
    assert [] == list(batches([], 80))


def test_requests_header_is_read_when_version_4() -> None:
    """REQUESTS is kind 6 of backend link v4; v3 headers are no longer read."""
    assert (KIND_REQUESTS, 0) == unpack_header(pack_header(KIND_REQUESTS, 0))
    assert unpack_header(b"\x03\x06" + bytes(8)) is None


@pytest.fixture
def door_socket(ctx: Context) -> Iterator[tuple[zmq.Socket[bytes], BackendLink]]:
    """A bare ROUTER playing the front door, and a raft BackendLink connected to it."""
    endpoint = f"inproc://door-{uuid.uuid4().hex}"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    link = BackendLink(ctx, endpoint, Backend.RAFT, "raft", heartbeat_interval_s=0.05)
    try:
        link.service_timers(time.monotonic())  # HELLO: the router learns the link
        assert router.poll(5000, zmq.POLLIN)
        ident, header, _ = router.recv_multipart()
        assert (KIND_HELLO, 0) == unpack_header(header)
        assert b"raft" == ident
        yield router, link
    finally:
        link.close()
        router.close(linger=0)


def _recv_batch(link: BackendLink) -> list[tuple[int, bytes]]:
    assert link.socket.poll(5000, zmq.POLLIN)
    return [(r.token, r.payload) for r in link.recv_batch()]


def test_link_takes_every_request_of_a_batch_in_order_when_sent_requests(
    door_socket: tuple[zmq.Socket[bytes], BackendLink],
) -> None:
    """recv_batch gives a REQUESTS message's requests in order, a REQUEST alone; recv
    hands the same requests out one at a time."""
    router, link = door_socket
    items = [(7, b"\x81\xa1a\x01"), (2**63 + 3, b""), (9, bytes(300))]
    router.send_multipart([b"raft", pack_header(KIND_REQUESTS, 0), pack_batch(items)])
    assert items == _recv_batch(link)
    router.send_multipart([b"raft", pack_header(KIND_REQUEST, 11), b"x"])
    assert [(11, b"x")] == _recv_batch(link)
    router.send_multipart([b"raft", pack_header(KIND_REQUESTS, 0), pack_batch(items)])
    assert link.socket.poll(5000, zmq.POLLIN)
    one_by_one = [link.recv(), link.recv(), link.recv()]
    assert items == [(r.token, r.payload) for r in one_by_one if r is not None]
    assert link.recv() is None


def test_link_takes_none_of_a_batch_when_requests_message_is_malformed(
    door_socket: tuple[zmq.Socket[bytes], BackendLink], caplog: pytest.LogCaptureFixture,
) -> None:
    """A REQUESTS payload whose index does not match its bytes is discarded whole, with a
    warning naming it, and counted; the next message is taken as usual."""
    router, link = door_socket
    packed = pack_batch([(1, b"one"), (2, b"two")])
    with caplog.at_level(logging.WARNING, logger="concord.net.backend"):
        router.send_multipart([b"raft", pack_header(KIND_REQUESTS, 0), packed[:-1]])
        router.send_multipart([b"raft", pack_header(KIND_REQUESTS, 0), b"\x00\x00\x00\x00"])
        router.send_multipart([b"raft", pack_header(KIND_REQUEST, 3), b"three"])
        assert [(3, b"three")] == _recv_batch(link)
    assert 2 == link.bad_messages
    assert 2 == sum("malformed REQUESTS message, taking none of it" in r.getMessage()
                    for r in caplog.records)


class _Door:
    """A FrontDoor over inproc endpoints, polled by the test itself (no thread): what
    the clients sent before a poll is all taken in that one pass."""

    def __init__(self, ctx: Context, max_request_bytes: int = 4096) -> None:
        tag = uuid.uuid4().hex
        self.door = FrontDoor(ctx, FrontDoorOptions(
            client_endpoint=f"inproc://client-{tag}", backend_endpoint=f"inproc://backend-{tag}",
            max_request_bytes=max_request_bytes))
        self.links: list[BackendLink] = []
        self.clients: list[zmq.Socket[bytes]] = []
        self._ctx = ctx

    def backend(self, name: str) -> BackendLink:
        link = BackendLink(self._ctx, self.door.backend_endpoint, Backend.RAFT, name,
                           heartbeat_interval_s=0.05)
        self.links.append(link)
        link.service_timers(time.monotonic())
        wait_until(lambda: (self.door.poll_once(0), name in self.door.backends)[1], 10.0,
                   describe=lambda: str(self.door.backends))
        return link

    def client(self) -> zmq.Socket[bytes]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.door.client_endpoint)
        self.clients.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.clients:
            sock.close(linger=0)
        for link in self.links:
            link.close()
        self.door.close()


@pytest.fixture
def sync_door(ctx: Context) -> Iterator[_Door]:
    d = _Door(ctx, max_request_bytes=MAX_BATCH_BYTES)
    try:
        yield d
    finally:
        d.close()


def _put(request_id: int, value: object = 1) -> bytes:
    return pack({"op": "put", "id": request_id, "key": f"k{request_id}", "value": value})


def test_door_sends_one_requests_message_when_one_pass_takes_several(sync_door: _Door) -> None:
    """Five clients' puts taken in one pass reach the raft worker as one REQUESTS message,
    in the order the door took them, each payload unchanged."""
    link = sync_door.backend("raft")
    payloads = [_put(i) for i in range(5)]
    for payload in payloads:
        sync_door.client().send_multipart([b"", payload])
    messages = sync_door.door.stats.backend_messages
    sync_door.door.poll_once(0)
    assert 5 == sync_door.door.stats.requests
    assert messages + 1 == sync_door.door.stats.backend_messages
    got = _recv_batch(link)
    assert payloads == [p for _, p in got]
    assert 5 == len({t for t, _ in got})


def test_door_cuts_requests_at_the_byte_cap_when_a_pass_takes_more(sync_door: _Door) -> None:
    """Three puts of 0.4 MiB in one pass: one REQUESTS of two (0.8 MiB), then the third
    alone (REQUEST), because two and a third would pass MAX_BATCH_BYTES."""
    link = sync_door.backend("raft")
    payloads = [_put(i, bytes(400 * 1024)) for i in range(3)]
    client = sync_door.client()
    for payload in payloads:
        client.send_multipart([b"", payload])
    sync_door.door.poll_once(0)
    assert 2 == sync_door.door.stats.backend_messages
    first, second = _recv_batch(link), _recv_batch(link)
    assert (payloads[:2], payloads[2:]) == ([p for _, p in first], [p for _, p in second])


def test_replies_keep_request_order_when_a_batch_is_answered_in_order(sync_door: _Door) -> None:
    """A DEALER pipelining three requests gets the replies of the batch in its order: the
    batch keeps the order the door took them in, and the replies keep the batch's."""
    link = sync_door.backend("raft")
    client = sync_door.client()
    for i in range(3):
        client.send_multipart([b"", _put(i)])
    sync_door.door.poll_once(0)
    got = _recv_batch(link)
    assert 3 == len(got)
    # Each reply carries its own request's id, answered in the order the batch gave them.
    link.reply_many([(token, pack({"id": msgpack.unpackb(payload)["id"], "ok": True}))
                     for token, payload in got])
    wait_until(lambda: (sync_door.door.poll_once(0), client.poll(0, zmq.POLLIN))[1], 10.0,
               describe=lambda: str(sync_door.door.stats))
    ids = [msgpack.unpackb(client.recv_multipart()[1])["id"] for _ in range(3)]
    assert [0, 1, 2] == ids


def test_door_answers_no_leader_when_its_raft_worker_vanished(sync_door: _Door) -> None:
    """A request whose raft worker is gone (the send fails: EHOSTUNREACH) and that no other
    can take gets no_leader, and the door forgets it and that worker."""
    sync_door.backend("raft").close()
    sync_door.links.clear()
    client = sync_door.client()
    replies: list[dict[str, object]] = []

    def refused() -> bool:
        client.send_multipart([b"", _put(len(replies))])
        sync_door.door.poll_once(0)
        while client.poll(0, zmq.POLLIN):
            replies.append(msgpack.unpackb(client.recv_multipart()[1]))
        return sync_door.door.stats.unroutable > 0

    wait_until(refused, 10.0, describe=lambda: str(sync_door.door.stats))
    assert "backend unavailable on this node; retry" == replies[-1]["message"]
    assert "no_leader" == replies[-1]["error"]
    assert "raft" not in sync_door.door.backends


def test_send_frames_delivers_what_send_multipart_does_when_the_peer_is_known(ctx: Context) -> None:
    """The int-flag send gives the same frames in one message; to an unknown identity a
    ROUTER_MANDATORY socket refuses on the first frame (EHOSTUNREACH), as before."""
    endpoint = f"inproc://frames-{uuid.uuid4().hex}"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind(endpoint)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        dealer.send_multipart([b"", b"hello"])
        assert router.poll(5000, zmq.POLLIN)
        ident = router.recv_multipart()[0]
        send_frames(router, [ident, b"", b"reply"])
        assert dealer.poll(5000, zmq.POLLIN)
        assert [b"", b"reply"] == dealer.recv_multipart()
        with pytest.raises(zmq.ZMQError) as refused:
            send_frames(router, [b"nobody", b"", b"reply"])
        assert zmq.EHOSTUNREACH == refused.value.errno
        send_frames(router, [ident, b"", b"after"])  # no partial message was left behind
        assert dealer.poll(5000, zmq.POLLIN)
        assert [b"", b"after"] == dealer.recv_multipart()
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
