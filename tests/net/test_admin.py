"""The fault admin op end to end: client -> front door -> raft backend -> PeerTransport."""

from __future__ import annotations

import threading
import time

import zmq

from concord.ids import NodeId
from concord.net.admin import fault_reply
from concord.net.backend import BackendLink
from concord.client.raw import request
from concord.net.peer import PeerOptions, PeerTransport
from concord.net.wire import Backend, decode_request
from tests.helpers import wait_until
from tests.net.fakes import DoorThread

Context = zmq.Context[zmq.Socket[bytes]]


class RaftBackendThread:
    """A raft-role backend on a thread that serves only the fault op from its transport."""

    def __init__(self, ctx: Context, endpoint: str, transport: PeerTransport) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ctx, endpoint, transport), daemon=True)
        self._thread.start()

    def _run(self, ctx: Context, endpoint: str, transport: PeerTransport) -> None:
        with BackendLink(ctx, endpoint, Backend.RAFT, "raft", heartbeat_interval_s=0.05) as link:
            while not self._stop.is_set():
                link.socket.poll(20, zmq.POLLIN)
                link.service_timers(time.monotonic())
                while (req := link.recv()) is not None:
                    link.reply(req.token, fault_reply(transport, decode_request(req.payload)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        assert not self._thread.is_alive()


def serve(ctx: Context, faults_enabled: bool) -> tuple[DoorThread, RaftBackendThread, PeerTransport]:
    transport = PeerTransport(ctx, NodeId("n1"), "tcp://127.0.0.1:0", options=PeerOptions(faults_enabled=faults_enabled))
    door = DoorThread(ctx)
    backend = RaftBackendThread(ctx, door.backend_endpoint, transport)
    status = {"op": "fault", "command": {"cmd": "status"}}
    try:
        wait_until(lambda: request(door.endpoint, status, ctx=ctx).get("error") != "no_leader", 10.0)
    except BaseException:
        backend.stop()
        door.stop()
        transport.close()
        raise
    return door, backend, transport


def test_fault_op_partitions_node_when_sent_through_front_door(ctx: Context) -> None:
    """{"op": "fault"} through the client endpoint installs rules in the node's transport."""
    door, backend, transport = serve(ctx, faults_enabled=True)
    try:
        command = {"cmd": "partition", "a": ["n1"], "b": ["n2", "n3"]}
        reply = request(door.endpoint, {"op": "fault", "id": 5, "command": command}, ctx=ctx)
        assert (5, True, True, 4) == (reply["id"], reply["ok"], reply["enabled"], len(reply["rules"]))  # type: ignore[arg-type]
        bad = request(door.endpoint, {"op": "fault", "id": 6, "command": {"cmd": "drop"}}, ctx=ctx)
        assert (6, False, "invalid_request") == (bad["id"], bad["ok"], bad["error"])
        assert "src" in str(bad["message"])
    finally:
        backend.stop()
        door.stop()
        transport.close()


def test_fault_op_rejected_when_node_has_faults_disabled(ctx: Context) -> None:
    """With faults.enabled off the admin op answers invalid_request naming the switch."""
    door, backend, transport = serve(ctx, faults_enabled=False)
    try:
        reply = request(door.endpoint, {"op": "fault", "id": 7, "command": {"cmd": "heal"}}, ctx=ctx)
        assert (7, False, "invalid_request") == (reply["id"], reply["ok"], reply["error"])
        assert "faults.enabled = false" in str(reply["message"])
    finally:
        backend.stop()
        door.stop()
        transport.close()
