"""
Who drives the sync transport's sockets (concord.client.transport): a call that finds
them free does its own I/O; calls made while another drives are handed to the driver; a
driver that is done hands what is left to the I/O thread. Against a scripted ROUTER in
the test process, so the test decides when each reply goes out.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import msgpack
import pytest
import zmq

from concord.client import transport as transport_module
from concord.client.transport import Transport
from concord.errors import ShuttingDownError

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


class Router:
    """
    A ROUTER served by its own thread: every request map goes to `requests` as
    (identity, map); with `echo`, each is answered at once with {id, ok, n}; `send`
    has the thread send a reply map (to the identity of a request seen).
    """

    def __init__(self, ctx: Context, echo: bool) -> None:
        self.requests: queue.Queue[tuple[bytes, dict[str, object]]] = queue.Queue()
        self.echo = echo
        self._sock: Socket = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        port = self._sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._ctl_in: Socket = ctx.socket(zmq.PAIR)
        self._ctl_in.bind(f"inproc://router-{port}")
        self._ctl: Socket = ctx.socket(zmq.PAIR)
        self._ctl.connect(f"inproc://router-{port}")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, identity: bytes, *replies: dict[str, object]) -> None:
        self._ctl.send_multipart([identity, *(msgpack.packb(r) for r in replies)])

    def next_request(self) -> tuple[bytes, dict[str, object]]:
        return self.requests.get(timeout=10.0)

    def close(self) -> None:
        self._ctl.send_multipart([b""])
        self._thread.join(10.0)
        self._ctl.close()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._ctl_in, zmq.POLLIN)
        while True:
            events = dict(poller.poll())
            if self._ctl_in in events:
                identity, *replies = self._ctl_in.recv_multipart()
                if not identity:
                    break
                for reply in replies:
                    self._sock.send_multipart([identity, b"", reply])
            if self._sock in events:
                identity, _, payload = self._sock.recv_multipart()
                msg = msgpack.unpackb(payload)
                self.requests.put((identity, msg))
                if self.echo:
                    self._sock.send_multipart([identity, b"", msgpack.packb(
                        {"id": msg["id"], "ok": True, "n": msg.get("n")})])
        self._sock.close()
        self._ctl_in.close()


@pytest.fixture
def ctx() -> Iterator[Context]:
    context: Context = zmq.Context()
    yield context
    context.term()


@pytest.fixture(autouse=True)
def no_idle_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle I/O thread never takes the baton by itself here: the paths are deterministic."""
    monkeypatch.setattr(transport_module, "IDLE_DRAIN_S", 600.0)


def _payload(request_id: int, n: object = None) -> bytes:
    data: bytes = msgpack.packb({"id": request_id, "n": n})
    return data


def test_calls_drive_their_own_socket_when_one_is_in_flight(ctx: Context) -> None:
    """Sequential calls on an idle transport each do their own I/O: nothing is queued."""
    router = Router(ctx, echo=True)
    t = Transport(ctx)
    try:
        for rid in range(1, 21):
            reply = t.exchange(router.endpoint, _payload(rid, rid * 10), rid, 5.0)
            assert {"id": rid, "ok": True, "n": rid * 10} == reply
        assert (20, 0) == (t.direct, t.queued)
    finally:
        t.close()
        router.close()


def test_stale_replies_dropped_when_the_caller_drives(ctx: Context) -> None:
    """
    Replies to requests nobody waits for (a timed-out attempt's late answer), whether they
    came while the transport was idle or during the call, are never taken for the call.
    """
    router = Router(ctx, echo=False)
    t = Transport(ctx)
    try:
        done: queue.Queue[object] = queue.Queue()
        threading.Thread(target=lambda: done.put(t.exchange(router.endpoint, _payload(1), 1, 5.0))).start()
        identity, msg = router.next_request()
        # The answer, then a late one for an attempt long given up: it waits in the socket.
        router.send(identity, {"id": 1, "ok": True, "n": "one"}, {"id": 7, "ok": True, "n": "stale"})
        assert {"id": 1, "ok": True, "n": "one"} == done.get(timeout=10.0)
        threading.Thread(target=lambda: done.put(t.exchange(router.endpoint, _payload(2), 2, 5.0))).start()
        identity, msg = router.next_request()
        assert 2 == msg["id"]
        router.send(identity, {"id": 1, "ok": True, "n": "late"}, {"id": 2, "ok": True, "n": "two"})
        assert {"id": 2, "ok": True, "n": "two"} == done.get(timeout=10.0)
        assert 2 == t.skipped_replies
        assert (2, 0) == (t.direct, t.queued)
    finally:
        t.close()
        router.close()


def test_caller_gets_its_reply_from_the_driver_when_another_call_drives(ctx: Context) -> None:
    """A call made while another drives is sent and answered by that driver, out of order."""
    router = Router(ctx, echo=False)
    t = Transport(ctx)
    try:
        first: queue.Queue[object] = queue.Queue()
        threading.Thread(target=lambda: first.put(t.exchange(router.endpoint, _payload(1), 1, 10.0))).start()
        identity, _ = router.next_request()  # the first call now drives, waiting for its reply
        second: queue.Queue[object] = queue.Queue()
        threading.Thread(target=lambda: second.put(t.exchange(router.endpoint, _payload(2), 2, 10.0))).start()
        identity2, msg = router.next_request()
        assert 2 == msg["id"]
        router.send(identity2, {"id": 2, "ok": True, "n": "two"})
        assert {"id": 2, "ok": True, "n": "two"} == second.get(timeout=10.0)
        assert first.empty()
        router.send(identity, {"id": 1, "ok": True, "n": "one"})
        assert {"id": 1, "ok": True, "n": "one"} == first.get(timeout=10.0)
        assert (1, 1) == (t.direct, t.queued)
    finally:
        t.close()
        router.close()


def test_io_thread_takes_over_when_the_driving_call_returns_first(ctx: Context) -> None:
    """The driver's own reply comes first: the call still waiting is driven by the I/O thread."""
    router = Router(ctx, echo=False)
    t = Transport(ctx)
    try:
        first: queue.Queue[object] = queue.Queue()
        threading.Thread(target=lambda: first.put(t.exchange(router.endpoint, _payload(1), 1, 10.0))).start()
        identity, _ = router.next_request()
        second: queue.Queue[object] = queue.Queue()
        threading.Thread(target=lambda: second.put(t.exchange(router.endpoint, _payload(2), 2, 10.0))).start()
        router.next_request()
        router.send(identity, {"id": 1, "ok": True, "n": "one"})
        assert {"id": 1, "ok": True, "n": "one"} == first.get(timeout=10.0)
        router.send(identity, {"id": 2, "ok": True, "n": "two"})
        assert {"id": 2, "ok": True, "n": "two"} == second.get(timeout=5.0)
    finally:
        t.close()
        router.close()


def test_driving_call_ends_with_shutting_down_when_closed_from_another_thread(ctx: Context) -> None:
    """close() from another thread ends a call that is driving its own socket at once."""
    router = Router(ctx, echo=False)
    t = Transport(ctx)
    outcome: queue.Queue[BaseException | object] = queue.Queue()

    def call() -> None:
        try:
            outcome.put(t.exchange(router.endpoint, _payload(1), 1, 60.0))
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.put(exc)

    try:
        threading.Thread(target=call).start()
        router.next_request()
        t.close()
        assert isinstance(outcome.get(timeout=10.0), ShuttingDownError)
        with pytest.raises(ShuttingDownError):
            t.exchange(router.endpoint, _payload(2), 2, 1.0)
    finally:
        t.close()
        router.close()


@pytest.mark.slow
def test_every_caller_gets_its_own_reply_when_threads_share_a_transport(ctx: Context) -> None:
    """8 threads x 100 calls on one transport, direct and queued mixed: each reply is its own."""
    router = Router(ctx, echo=True)
    t = Transport(ctx)
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait(10.0)
        for i in range(100):
            rid = n * 1000 + i
            reply = t.exchange(router.endpoint, _payload(rid, f"{n}/{i}"), rid, 10.0)
            if reply != {"id": rid, "ok": True, "n": f"{n}/{i}"}:
                errors.append(f"{rid}: {reply!r}")

    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60.0)
        assert [] == errors
        assert 800 == t.direct + t.queued
        assert 0 == t.skipped_replies
    finally:
        t.close()
        router.close()
