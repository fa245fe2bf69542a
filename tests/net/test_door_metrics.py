"""The front door's request metrics are a door observer (concord/net/door_metrics.py)."""

from __future__ import annotations


import pytest
import zmq

from concord.client.raw import request
from concord.metrics.node import DoorMetrics
from concord.net import frontdoor
from concord.net.door_metrics import DoorMetricsObserver
from concord.net.observer import DoorReply
from concord.net.wire import OPS, Backend, decode_request, error_reply, ok_reply, pack
from tests.helpers import wait_until
from tests.net.fakes import DoorThread, EchoThread

Context = zmq.Context[zmq.Socket[bytes]]
Done = tuple[str, str, str, str | None]


class FakeMetrics(DoorMetrics):
    """DoorMetrics switched on, recording what it is told instead of writing metric files."""

    def __init__(self) -> None:
        super().__init__()
        self.on = True
        self.done: list[Done] = []

    def on_done(self, op: str, consistency: str, result: str, duration_s: float,
                served_by: str | None) -> None:
        assert duration_s >= 0.0
        self.done.append((op, consistency, result, served_by))

    def sample(self, handoffs: int, invalid: int, client_gone: int) -> None:
        pass


def test_observer_labels_each_reply_when_requests_end() -> None:
    """op, consistency ("none" for non-reads), result from the reply bytes, who served a read."""
    metrics = FakeMetrics()
    now = [10.0]
    observer = DoorMetricsObserver(metrics, OPS, lambda: now[0])
    cases = [
        ({"op": "get", "id": 1, "key": "k", "consistency": "eventual"}, ok_reply(1, {"value": 1}),
         Backend.READ, ("get", "eventual", "ok", "read_worker")),
        ({"op": "put", "id": 2, "key": "k", "value": 1}, error_reply(2, "timeout", "late"),
         Backend.RAFT, ("put", "none", "timeout", None)),
        ({"op": "get", "id": 3, "key": "k", "consistency": "strong"}, error_reply(3, "no_leader", "x"),
         Backend.RAFT, ("get", "strong", "no_leader", "raft_worker")),
    ]
    for req, reply, backend, _ in cases:
        decoded = decode_request(pack(req), OPS)
        note, passed, payload = observer.begin(decoded, pack(req), lambda: None)
        assert (decoded, pack(req)) == (passed, payload)
        now[0] += 0.5
        observer.end(note, DoorReply(reply, backend))
    assert [expected for *_, expected in cases] == metrics.done
    note, _, _ = observer.begin(decode_request(pack(cases[0][0]), OPS), pack(cases[0][0]), lambda: None)
    observer.end(note, DoorReply(ok_reply(1, {"value": 1}), Backend.READ, inline=True))
    assert ("get", "eventual", "ok", "door") == metrics.done[-1]


def test_door_reports_every_answer_to_the_metrics_when_metrics_are_on(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replies, handed-off reads and refusals reach the metrics through the observer path."""
    monkeypatch.setattr(frontdoor, "DoorMetrics", FakeMetrics)
    door = DoorThread(ctx)
    metrics = door.door.metrics
    assert isinstance(metrics, FakeMetrics)
    raft = EchoThread(ctx, door.backend_endpoint, "raft", "raft")
    try:
        wait_until(lambda: request(door.endpoint, {"op": "put", "key": "k", "value": 1},
                                   timeout_ms=2000, ctx=ctx)["ok"], 10.0, "no raft backend")
        # No read worker yet: the door refuses an eventual read itself.
        assert "no_leader" == request(door.endpoint, {"op": "get", "key": "k", "consistency": "eventual"},
                                      timeout_ms=2000, ctx=ctx)["error"]
        read = EchoThread(ctx, door.backend_endpoint, "read", "reader0")
        try:
            wait_until(lambda: "reader0" in door.door.backends, 10.0, "no read backend")
            for key in ("k", "handoff"):
                assert request(door.endpoint, {"op": "get", "key": key, "consistency": "eventual"},
                               timeout_ms=2000, ctx=ctx)["ok"]
        finally:
            read.stop()
    finally:
        raft.stop()
        door.stop()
    assert ("put", "none", "ok", None) == metrics.done[-4]
    assert [("get", "eventual", "no_leader", "read_worker"), ("get", "eventual", "ok", "read_worker"),
            ("get", "eventual", "ok", "raft_worker")] == metrics.done[-3:]
