"""The front door feeds its observers: the audit line before the reply with fsync "always"."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import zmq

from concord.audit.door import DoorAudit
from concord.audit.log import AuditLog, AuditOptions, list_files
from concord.audit.record import AuditKeys
from concord.client.raw import request
from concord.net.wire import Request
from tests.helpers import wait_until
from tests.net.fakes import DoorThread, EchoThread

Context = zmq.Context[zmq.Socket[bytes]]


def wait_backend(ctx: Context, door: DoorThread) -> None:
    """Until the raft backend is connected (`status`: not an audited op)."""
    wait_until(lambda: request(door.endpoint, {"op": "status"}, timeout_ms=2000, ctx=ctx)["ok"],
               10.0, "the echo raft backend never answered")


class Recorder:
    """An observer that notes, at each flush, how many replies the door had sent."""

    def __init__(self, hold: bool) -> None:
        self.hold_replies = hold
        self.door: DoorThread | None = None
        self.ended_at: list[int] = []
        self.flushed_at: list[int] = []

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        return (request.op if request.op == "put" else None), request, payload

    def end(self, note: object, reply: Mapping[object, object]) -> None:
        assert self.door is not None
        self.ended_at.append(self.door.door.stats.replies)

    def flush(self) -> None:
        assert self.door is not None
        if len(self.flushed_at) < len(self.ended_at):
            self.flushed_at.append(self.door.door.stats.replies)


@pytest.mark.parametrize("hold", [True, False])
def test_reply_waits_for_the_flush_when_the_observer_holds_replies(ctx: Context, hold: bool) -> None:
    """hold_replies: the reply of a noted request leaves only after the round's flush."""
    recorder = Recorder(hold)
    door = DoorThread(ctx, observers=[recorder])
    recorder.door = door
    backend = EchoThread(ctx, door.backend_endpoint, "raft", "raft")
    try:
        wait_backend(ctx, door)
        reply = request(door.endpoint, {"op": "put", "key": "k", "value": 1}, timeout_ms=5000,
                        retries=2, ctx=ctx)
        assert reply["ok"]
    finally:
        backend.stop()
        door.stop()
    sent_before_flush = recorder.flushed_at[0] - recorder.ended_at[0]
    assert (0 if hold else 1) == sent_before_flush


def test_line_is_on_disk_when_the_client_gets_its_reply_with_fsync_always(
        ctx: Context, tmp_path: Path) -> None:
    """fsync "always": the client that got a reply finds its request's line in the file."""
    keys = AuditKeys(b"door-test-secret")
    audit = DoorAudit(AuditLog(AuditOptions(folder=tmp_path, node="n1", fsync="always"), keys), keys)
    door = DoorThread(ctx, observers=[audit])
    backend = EchoThread(ctx, door.backend_endpoint, "raft", "raft")
    try:
        wait_backend(ctx, door)
        for i in range(5):
            reply = request(door.endpoint, {"op": "put", "key": f"k{i}", "value": i},
                            timeout_ms=5000, retries=2, ctx=ctx)
            assert reply["ok"]
            lines = [json.loads(x) for _, p in list_files(tmp_path) for x in p.read_text().splitlines()]
            assert keys.hmac(f"k{i}") == lines[-1]["key_hmac"]
            assert ("127.0.0.1", "ok") == (lines[-1]["client"], lines[-1]["result"])
    finally:
        backend.stop()
        door.stop()
        audit.close()
