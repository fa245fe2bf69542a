"""Peer links and the front door across real processes (spawned, each with its own context)."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest
import zmq

from concord.ids import NodeId
from concord.client.raw import request
from concord.net.peer import PeerOptions, PeerTransport
from tests.helpers import wait_until
from tests.net.fakes import ChildProcess, DoorThread, echo_backend_main, peer_echo_main
from tests.net.netutil import drain, recv_one

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(60)]

Context = zmq.Context[zmq.Socket[bytes]]
N1, N2 = NodeId("n1"), NodeId("n2")


@pytest.fixture
def n1(ctx: Context) -> Iterator[PeerTransport]:
    options = PeerOptions(heartbeat_interval_s=0.05, dead_after_s=0.3, reconnect_ivl_ms=10, reconnect_ivl_max_ms=100)
    with PeerTransport(ctx, N1, "tcp://127.0.0.1:0", options=options) as transport:
        yield transport


def start_peer(n1: PeerTransport, faults: bool, bind: str = "tcp://127.0.0.1:0") -> ChildProcess:
    child = ChildProcess(peer_echo_main, "n2", bind, {"n1": n1.endpoint}, faults)
    ready = child.recv()
    assert isinstance(ready, tuple) and "ready" == ready[0]
    n1.add_peer(N2, str(ready[1]))
    return child


def echoed(n1: PeerTransport, payload: bytes) -> bool:
    """One attempt: send to n2 and wait briefly for its echo (keeps n1's pings flowing)."""
    n1.service_timers(time.monotonic())
    n1.send(N2, payload)
    reply = recv_one(n1, 0.05)
    return reply == (N2, b"echo:" + payload)


def test_peer_links_deliver_when_peers_in_separate_processes(n1: PeerTransport) -> None:
    """A transport in another process receives our message and its reply reaches us."""
    child = start_peer(n1, faults=False)
    try:
        wait_until(lambda: echoed(n1, b"ping-1"), 20.0, describe=lambda: str(n1.stats))
    finally:
        child.stop()


def test_peer_reconnects_when_process_killed_and_restarted(n1: PeerTransport) -> None:
    """After SIGKILL and a restart on the same endpoint, links come back by themselves."""
    child = start_peer(n1, faults=False)
    endpoint = n1.peers[N2]
    try:
        wait_until(lambda: echoed(n1, b"before"), 20.0)
    finally:
        child.kill()
        child.conn.close()
    child = ChildProcess(peer_echo_main, "n2", endpoint, {"n1": n1.endpoint}, False)
    try:
        assert ("ready", endpoint) == child.recv()
        wait_until(lambda: echoed(n1, b"after"), 20.0, describe=lambda: str(n1.stats))
    finally:
        child.stop()


def test_fault_partition_cuts_real_process_when_commanded(n1: PeerTransport) -> None:
    """A partition command sent to the child process makes it unreachable; heal restores it."""
    child = start_peer(n1, faults=True)
    try:
        wait_until(lambda: echoed(n1, b"up"), 20.0)
        child.conn.send({"cmd": "partition", "a": ["n2"], "b": ["n1"]})
        reply = child.recv()
        assert isinstance(reply, tuple) and "ok" == reply[0] and 2 == len(reply[1]["rules"])

        def n2_unreachable() -> bool:
            n1.service_timers(time.monotonic())
            n1.send(N2, b"lost")
            assert [] == drain(n1)
            return [N2] == n1.unreachable()

        wait_until(n2_unreachable, 10.0, describe=lambda: str(n1.stats))
        child.conn.send({"cmd": "heal"})
        assert ("ok", {"enabled": True, "rules": []}) == child.recv()
        wait_until(lambda: echoed(n1, b"healed"), 10.0)
        assert [] == n1.unreachable()
    finally:
        child.stop()


def test_fault_command_rejected_when_process_has_faults_disabled(n1: PeerTransport) -> None:
    """A node started without faults.enabled refuses fault commands with a clear error."""
    child = start_peer(n1, faults=False)
    try:
        child.conn.send({"cmd": "partition", "a": ["n2"], "b": ["n1"]})
        assert ("error", "fault injection is disabled on this node (faults.enabled = false)") == child.recv()
    finally:
        child.stop()


def test_front_door_routes_to_backend_processes_when_workers_die(ctx: Context) -> None:
    """Reads reach read-worker processes, writes the raft process; a dead read worker is skipped."""
    door = DoorThread(ctx, backend_dead_after_s=1.0)
    children: dict[str, ChildProcess] = {}
    try:
        for name, role in [("read-0", "read"), ("read-1", "read"), ("raft", "raft")]:
            children[name] = ChildProcess(echo_backend_main, door.backend_endpoint, role, name)
        for child in children.values():
            assert "ready" == child.recv()
        pids = {name: child.process.pid for name, child in children.items()}
        seen: dict[str, object] = {}

        def all_answer() -> bool:
            for msg in ({"op": "get", "key": "k"}, {"op": "put", "key": "k", "value": 1}):
                reply = request(door.endpoint, {**msg, "timeout_ms": 200}, timeout_ms=1000, ctx=ctx)
                if reply["ok"]:
                    seen[str(reply["backend"])] = reply["pid"]
            return len(seen) == 3

        wait_until(all_answer, 30.0, describe=lambda: str(seen))
        assert pids == seen
        assert os.getpid() not in seen.values()

        children["read-0"].kill()

        def only_read_1() -> bool:
            replies = [
                request(door.endpoint, {"op": "get", "key": "k", "timeout_ms": 200}, timeout_ms=1000, ctx=ctx)
                for _ in range(4)
            ]
            return all(r["ok"] and r["backend"] == "read-1" for r in replies)

        wait_until(only_read_1, 10.0)
        reply = request(door.endpoint, {"op": "delete", "key": "k"}, ctx=ctx)
        assert ("raft", pids["raft"]) == (reply["backend"], reply["pid"])
    finally:
        for child in children.values():
            child.stop()
        door.stop()
