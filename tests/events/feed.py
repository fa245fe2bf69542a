"""
A standalone change-stream node for tests and bench: a KvStateMachine applying queued
commands, an EventStream publishing its changes, and a ROUTER answering `status` and
`events` like a node's client endpoint. Runs its loop in a thread that owns every
socket; the test thread only queues commands and reads counters.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

import zmq

from concord.kv import KvStateMachine, encode_command
from concord.kv.record import Change, Space
from concord.net.events import EventStream
from concord.net.wire import decode_request, error_reply, ok_reply


@dataclass(frozen=True, slots=True)
class Published:
    """What a subscriber must see of one user change."""

    revision: int
    index: int
    type: str
    key: str


class LossyProxy:
    """
    An XSUB -> XPUB forwarder between the feed's stream and a subscriber that loses the
    messages `lose(topic, payload map)` picks (subscriptions are forwarded upstream
    untouched), so tests decide exactly which messages a subscriber never gets.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], upstream: str,
                 lose: Callable[[bytes, dict[str, object]], bool]) -> None:
        self.lose = lose
        self.lost = 0
        self.xsub = ctx.socket(zmq.XSUB)
        self.xsub.setsockopt(zmq.LINGER, 0)
        self.xsub.connect(upstream)
        self.xpub = ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.LINGER, 0)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.xpub.bind("tcp://127.0.0.1:0")
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)

    def register(self, poller: zmq.Poller) -> None:
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)

    def forward(self) -> None:
        while True:
            try:
                self.xsub.send(self.xpub.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        while True:
            try:
                frames = self.xsub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if self.lose(frames[0], msgpack.unpackb(frames[1], raw=False)):
                self.lost += 1
                continue
            self.xpub.send_multipart(frames)

    def close(self) -> None:
        self.xsub.close(0)
        self.xpub.close(0)


class Feed:
    """
    One fake node. `submit(op, args)` queues a write; the loop applies up to `batch`
    commands per round (an empty command every `noop_every` writes, so revisions are
    not contiguous) and publishes their changes.
    """

    def __init__(
        self,
        name: str = "f1",
        *,
        history_entries: int = 100_000,
        history_bytes: int = 256 * 1024 * 1024,
        sndhwm: int = 10_000,
        heartbeat_s: float = 0.1,
        batch: int = 64,
        noop_every: int = 7,
        lose: Callable[[bytes, dict[str, object]], bool] | None = None,
        max_prefixes: int = 4096,
    ) -> None:
        self.name = name
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.kv = KvStateMachine()
        self.stream = EventStream(
            self.ctx, "tcp://127.0.0.1:0", history_entries=history_entries,
            history_bytes=history_bytes, sndhwm=sndhwm, heartbeat_s=heartbeat_s,
            max_prefixes=max_prefixes,
        )
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind("tcp://127.0.0.1:0")
        self.client_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.proxy = None if lose is None else LossyProxy(self.ctx, self.stream.endpoint, lose)
        self.batch = batch
        self.noop_every = noop_every
        self.published: list[Published] = []
        self.applied = 0
        self._queue: deque[bytes | None] = deque()
        self._submitted = 0
        self._done = 0
        self._index = 0
        self._ts = 1_000
        self._stop = threading.Event()
        self._reset_to: int | None = None
        self.peers: list[Feed] = []
        self._thread = threading.Thread(target=self._run, name=f"feed-{name}", daemon=True)
        self._thread.start()

    # -- test thread ---------------------------------------------------------------

    def submit(self, op: str, args: dict[str, object]) -> None:
        self._submitted += 1
        self._queue.append(encode_command(op, args))

    def submit_noop(self) -> None:
        self._submitted += 1
        self._queue.append(None)

    def idle(self) -> bool:
        """Every queued command is applied and its changes published."""
        return self._done == self._submitted

    def backlog(self) -> str:
        return f"feed {self.name} applied {self._done} of {self._submitted} commands"

    def reset_stream(self) -> None:
        """Like a raft-worker restart: the history restarts at the current revision."""
        self._reset_to = -1

    def stop_loop(self) -> None:
        """Stop the loop thread (the test thread may then use the stream directly)."""
        self._stop.set()
        self._thread.join(10.0)

    def stop(self) -> None:
        self.stop_loop()
        self.router.close(0)
        if self.proxy is not None:
            self.proxy.close()
        self.stream.close()
        self.ctx.term()

    # -- the loop (owns the sockets) --------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.stream.socket, zmq.POLLIN)
        if self.proxy is not None:
            self.proxy.register(poller)
        while not self._stop.is_set():
            events = dict(poller.poll(0 if self._queue else 5))
            self.stream.service()
            if self.proxy is not None:
                self.proxy.forward()
            if self.router in events:
                self._serve()
            if self._reset_to is not None:
                self._reset_to = None
                self.stream.reset(self.kv.revision)
            changes: list[Change] = []
            taken = 0
            for _ in range(self.batch):
                if not self._queue:
                    break
                data = self._queue.popleft()
                taken += 1
                self._index += 1
                self._ts += 1
                if data is None or (self.noop_every and self._index % self.noop_every == 0):
                    self.kv.apply_noop(self._index, self._ts)
                    if data is None:
                        continue
                    self._index += 1
                applied = self.kv.apply(self._index, self._ts, data)
                changes.extend(applied.changes)
                self.applied += 1
            if changes:
                self.stream.publish(changes)
                counts: dict[int, int] = {}
                for ch in changes:
                    if ch.space is Space.USER:
                        i = counts.get(ch.revision, 0)
                        counts[ch.revision] = i + 1
                        self.published.append(Published(ch.revision, i, ch.type.name.lower(), ch.key))
            self._done += taken

    def _serve(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident, payload = frames[0], frames[-1]
            request = decode_request(payload)
            if request.op == "events":
                reply = self.stream.handle(request)
            elif request.op == "status":
                members: list[dict[str, str | None]] = [{"id": self.name, "client": self.client_endpoint,
                            "events": self.stream.endpoint}]
                members += [{"id": p.name, "client": p.client_endpoint, "events": None}
                            for p in self.peers]
                reply = ok_reply(request.id, {"node": self.name, "members": members,
                                              "revision": self.kv.revision})
            else:
                reply = error_reply(request.id, "invalid_request", f"feed serves no {request.op}")
            self.router.send_multipart([ident, b"", reply])
