"""
The raft worker's direct client endpoint (concord/node/direct.py) on real clusters:
writes and strong reads answered there; bad input and eventual reads refused with a
clear error; a follower's forwards writes; auth holds there exactly as at the door; the
endpoint is not bound while the door's observers are on; concord.Client writes through
it (its writes still succeed while the leader's front door is stopped).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import msgpack
import pytest
import zmq

from concord.auth.tokens import new_token
from concord.client import Client
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Context = zmq.Context[zmq.Socket[bytes]]

_ids = itertools.count(1)


class Wire:
    """A raw DEALER to one endpoint: no hints followed, no retries."""

    def __init__(self, ctx: Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send_frames(self, frames: list[bytes], wait_ms: int = 10_000) -> dict[str, object]:
        self.sock.send_multipart(frames)
        assert self.sock.poll(wait_ms), f"no reply to {frames!r}"
        reply = msgpack.unpackb(self.sock.recv_multipart()[-1])
        assert isinstance(reply, dict)
        return reply

    def call(self, msg: Mapping[str, object]) -> dict[str, object]:
        body = {**msg, "id": next(_ids)}
        reply = self.send_frames([b"", msgpack.packb(body)])
        assert reply.get("id") == body["id"], reply
        return reply

    def close(self) -> None:
        self.sock.close(linger=0)


@contextmanager
def wire(ctx: Context, endpoint: str) -> Iterator[Wire]:
    w = Wire(ctx, endpoint)
    try:
        yield w
    finally:
        w.close()


def direct_of(c: Cluster, node_id: str) -> str:
    endpoint = c.nodes[node_id].endpoints.get("direct")
    assert endpoint, f"{node_id} has no direct endpoint on its ready line"
    return endpoint


@pytest.mark.timeout(120)
def test_writes_and_strong_reads_are_answered_on_the_leaders_direct_endpoint(
        cluster: ClusterFactory, ctx: Context) -> None:
    c = cluster(3)
    leader = c.wait_leader()
    status = c.status(leader)
    assert status is not None and status["direct"] == direct_of(c, leader)
    with wire(ctx, direct_of(c, leader)) as w:
        assert w.call({"op": "put", "key": "d:a", "value": b"1"})["ok"]
        assert w.call({"op": "put_many", "items": [["d:b", 2], ["d:c", 3]]})["ok"]
        assert w.call({"op": "put_if", "key": "d:a", "value": 4, "expected": b"1"})["ok"]
        failed = w.call({"op": "put_if", "key": "d:a", "value": 5, "expected": b"1"})
        assert "condition_failed" == failed["error"]
        assert w.call({"op": "delete", "key": "d:c"})["deleted"] is True
        assert 4 == w.call({"op": "get", "key": "d:a", "consistency": "strong"})["value"]
        assert {"d:a": 4, "d:b": 2} == w.call(
            {"op": "get_many", "keys": ["d:a", "d:b", "d:c"], "consistency": "strong"})["values"]
        assert 2 == w.call({"op": "get", "key": "d:b", "consistency": "leader"})["value"]
    # The same data through every node's client endpoint.
    for node in c.ids:
        wait_until(lambda: c.request(node, {"op": "get", "key": "d:a", "consistency": "strong"})
                   .get("value") == 4, 20, f"{node} sees d:a")


@pytest.mark.timeout(120)
def test_bad_input_and_eventual_reads_get_a_clear_error_and_change_nothing(
        cluster: ClusterFactory, ctx: Context) -> None:
    c = cluster(1)
    client_endpoint = c.nodes["n1"].client
    with wire(ctx, direct_of(c, "n1")) as w:
        eventual = w.call({"op": "get", "key": "d:x", "consistency": "eventual"})
        assert "invalid_request" == eventual["error"]
        assert client_endpoint in str(eventual["message"]), eventual
        assert "invalid_request" == w.send_frames([b"", b"\xc1 not msgpack"])["error"]
        extra = w.send_frames([b"", b"a", b"b"])
        assert "invalid_request" == extra["error"] and "frames" in str(extra["message"])
        assert "invalid_request" == w.call({"op": "nope"})["error"]
        bad = w.call({"op": "put", "key": "d:x"})  # no value
        assert "invalid_request" == bad["error"] and "value" in str(bad["message"])
        assert "invalid_key" == w.call({"op": "put", "key": "", "value": 1})["error"]
        big = w.send_frames([b"", msgpack.packb({"op": "put", "id": 1, "key": "d:x",
                                                 "value": b"x" * (2 << 20)})])
        assert "invalid_request" == big["error"] and "max_request_bytes" in str(big["message"])
        assert "not_found" == w.call({"op": "get", "key": "d:x", "consistency": "strong"})["error"]


@pytest.mark.timeout(120)
def test_a_followers_direct_endpoint_forwards_writes_and_serves_strong_reads(
        cluster: ClusterFactory, ctx: Context) -> None:
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with wire(ctx, direct_of(c, follower)) as w:
        reply = w.call({"op": "put", "key": "d:f", "value": 7})
        assert reply["ok"], reply
        assert c.nodes[leader].client == reply["leader_client"]
        assert 7 == w.call({"op": "get", "key": "d:f", "consistency": "strong"})["value"]
        led = w.call({"op": "get", "key": "d:f", "consistency": "leader"})
        assert "not_leader" == led["error"] and c.nodes[leader].client == led["leader"]


@pytest.mark.timeout(120)
def test_auth_is_enforced_on_the_direct_endpoint_as_at_the_door(
        cluster: ClusterFactory, ctx: Context, tmp_path: Path) -> None:
    admin, _ = new_token()
    path = tmp_path / "admin.token"
    path.write_text(admin + "\n")
    os.chmod(path, 0o600)
    c = cluster(1, start=False, auth={"enabled": True, "bootstrap_token_file": str(path)})
    c.token = admin
    c.start()
    wrong, _ = new_token()
    with wire(ctx, direct_of(c, "n1")) as w:
        wait_until(lambda: w.call({"op": "put", "key": "d:k", "value": 1, "token": admin}).get("ok"),
                   20, "the bootstrap token is applied")
        assert "unauthorized" == w.call({"op": "put", "key": "d:k", "value": 2})["error"]
        assert "unauthorized" == w.call({"op": "put", "key": "d:k", "value": 3, "token": wrong})["error"]
        assert "unauthorized" == w.call({"op": "get", "key": "d:k", "consistency": "strong",
                                         "token": wrong})["error"]
        assert w.call({"op": "role_put", "token": admin, "name": "app",
                       "rules": [["app:*", "write", "allow"]]})["ok"]
        app = w.call({"op": "token_create", "token": admin, "role": "app"})["token"]
        assert w.call({"op": "put", "key": "app:1", "value": 1, "token": app})["ok"]
        assert "forbidden" == w.call({"op": "put", "key": "d:k", "value": 4, "token": app})["error"]
        assert "forbidden" == w.call({"op": "token_create", "token": app, "role": "app"})["error"]
        assert 1 == w.call({"op": "get", "key": "d:k", "consistency": "strong", "token": admin})["value"]


@pytest.mark.timeout(120)
def test_endpoint_is_not_bound_while_the_doors_observers_are_on(cluster: ClusterFactory) -> None:
    c = cluster(1, metrics={"enabled": True})
    assert "direct" not in c.nodes["n1"].endpoints
    status = c.status("n1")
    assert status is not None and status["direct"] is None


@contextmanager
def door_stopped(c: Cluster, node_id: str) -> Iterator[None]:
    """SIGSTOP the node's front door (by its pid from the supervisor's log); SIGCONT after."""
    found = re.findall(r"child started name=door pid=(\d+)", c.nodes[node_id].stderr())
    assert found, f"{node_id}: no door start logged"
    pid = int(found[-1])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(120)
def test_client_writes_through_the_direct_endpoint_while_the_door_is_stopped(
        cluster: ClusterFactory) -> None:
    c = cluster(3)
    leader = c.wait_leader()
    endpoint = c.nodes[leader].client
    with Client(endpoint, shm=False, timeout_s=10) as client:
        client.put("d:before", 1)  # learns the leader's direct endpoint (one status)
        with door_stopped(c, leader):
            assert client.put("d:during", 2) > 0
            assert [True] == [client.delete("d:before").deleted]
    with Client(endpoint, shm=False, timeout_s=10) as client:
        assert 2 == client.get("d:during", consistency="strong")
    with Client(endpoint, shm=False, timeout_s=1, direct=False) as client:
        client.put("d:door", 1)
        with door_stopped(c, leader), pytest.raises(Exception):
            client.put("d:door", 2)  # no direct endpoint: nothing answers


def raft_pids(c: Cluster, node_id: str) -> list[int]:
    return [int(p) for p in re.findall(r"child started name=raft pid=(\d+)", c.nodes[node_id].stderr())]


@pytest.mark.timeout(120)
def test_a_restarted_raft_worker_serves_the_same_direct_endpoint(
        cluster: ClusterFactory, ctx: Context) -> None:
    """Port 0 is re-bound to the port the first incarnation got (previous_info)."""
    c = cluster(1)
    endpoint = direct_of(c, "n1")
    with wire(ctx, endpoint) as w:
        assert w.call({"op": "put", "key": "d:r", "value": 1})["ok"]
    [first] = raft_pids(c, "n1")
    os.kill(first, signal.SIGKILL)  # the supervisor restarts it (rest_for_one with the writer)
    wait_until(lambda: len(raft_pids(c, "n1")) == 2, 30, "the raft worker restarted")

    def served() -> bool:
        status = c.status("n1")
        return status is not None and status.get("role") == "leader"

    wait_until(served, 30, "n1 leads again")
    assert endpoint == (c.status("n1") or {}).get("direct")
    with wire(ctx, endpoint) as w:
        assert 1 == w.call({"op": "get", "key": "d:r", "consistency": "strong"})["value"]
