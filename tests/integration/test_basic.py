"""A 3-node cluster: election, every op through every node at every consistency level."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_maps
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEVELS = ("eventual", "leader", "strong")


def write_via(c: Cluster, node_id: str, msg: dict[str, object]) -> dict[str, object]:
    """Send a write to `node_id`, following one not_leader hint like a client would."""
    reply = c.request(node_id, msg)
    if reply.get("error") == "not_leader":
        hint = reply["leader"]
        assert isinstance(hint, str)
        leader = next(n for n, p in c.nodes.items() if p.client == hint)
        reply = c.request(leader, msg)
    return reply


def read(c: Cluster, node_id: str, msg: dict[str, object], level: str) -> dict[str, object]:
    """A read at `level` through `node_id`, following a not_leader hint for `leader`."""
    reply = c.request(node_id, {**msg, "consistency": level})
    if level == "leader" and reply.get("error") == "not_leader":
        hint = reply["leader"]
        leader = next(n for n, p in c.nodes.items() if p.client == hint)
        reply = c.request(leader, {**msg, "consistency": level})
    return reply


RETRYABLE = ("no_leader", "not_leader", "timeout")


def read_answered(c: Cluster, node_id: str, msg: dict[str, object], level: str) -> dict[str, object]:
    """`read`, retried while the answer is only "ask again" (e.g. a lease being renewed)."""
    last: list[dict[str, object]] = []

    def answered() -> bool:
        last[:] = [read(c, node_id, msg, level)]
        return last[0].get("error") not in RETRYABLE

    wait_until(answered, 10, lambda: f"{node_id} {level} {msg} -> {last}")
    return last[0]


def read_settled(c: Cluster, node_id: str, msg: dict[str, object], level: str,
                 field: str, expected: object) -> None:
    """Eventual reads may lag: wait for them; leader and strong reads must match at once."""
    if level == "eventual":
        wait_until(lambda: read(c, node_id, msg, level).get(field) == expected, 10,
                   lambda: f"{node_id} {msg} -> {read(c, node_id, msg, level)}")
    else:  # never stale: the first real answer must already be the new value
        assert expected == read_answered(c, node_id, msg, level).get(field), (node_id, level, msg)


@pytest.mark.timeout(120)
def test_every_op_works_through_every_node_when_three_nodes_run(cluster: ClusterFactory) -> None:
    """put/get/delete, bulk ops, CAS and TTLs through every node at every level."""
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    # A follower forwards writes to the leader (tests/integration/test_forward.py; with
    # raft.forward_to_leader = false it answers not_leader with the leader's endpoint).
    forwarded: list[dict[str, object]] = []

    def answered() -> bool:  # a leader change under load answers "ask again": resend
        forwarded[:] = [c.request(follower, {"op": "put", "key": "x", "value": 0,
                                             "client_id": "basic", "seq": 1})]
        return forwarded[0].get("error") not in RETRYABLE

    wait_until(answered, 20, lambda: f"put through {follower}: {forwarded}")
    assert True is forwarded[0]["ok"], forwarded
    for i, via in enumerate(c.ids):
        key = f"k{i}"
        assert True is write_via(c, via, {"op": "put", "key": key, "value": {"n": i}})["ok"]
        for node in c.ids:
            for level in LEVELS:
                read_settled(c, node, {"op": "get", "key": key}, level, "value", {"n": i})
        # CAS: a wrong expectation fails, the right one wins.
        failed = write_via(c, via, {"op": "put_if", "key": key, "value": 9, "expected": "no"})
        assert "condition_failed" == failed["error"]
        assert True is write_via(c, via, {"op": "put_if", "key": key, "value": 9,
                                          "expected": {"n": i}})["ok"]
        assert True is write_via(c, via, {"op": "delete_if", "key": key, "version": 2})["ok"]
        for level in LEVELS:
            wait_until(lambda: read(c, via, {"op": "get", "key": key}, level).get("error")
                       == "not_found", 10, f"{key} still visible at {level}")
        # Bulk ops are all-or-nothing, one revision.
        items = [[f"b{i}-{j}", j] for j in range(5)]
        put_many = write_via(c, via, {"op": "put_many", "items": items})
        assert True is put_many["ok"]
        keys = [k for k, _ in items]
        for node in c.ids:
            for level in LEVELS:
                read_settled(c, node, {"op": "get_many", "keys": keys}, level, "values",
                             {k: v for k, v in items})
        deleted = write_via(c, via, {"op": "delete_many", "keys": keys[:2]})
        assert 2 == deleted["deleted"]
        assert True is write_via(c, via, {"op": "delete", "key": keys[2]})["deleted"]
    # TTL: the leader expires the key; every node stops returning it.
    assert True is write_via(c, c.ids[0], {"op": "put", "key": "ttl", "value": 1, "ttl": 0.5})["ok"]
    ttl = read(c, c.ids[1], {"op": "ttl", "key": "ttl"}, "strong")
    assert 0 < float(ttl["ttl"]) <= 0.5  # type: ignore[arg-type]
    for node in c.ids:
        for level in LEVELS:
            wait_until(lambda: read(c, node, {"op": "get", "key": "ttl"}, level).get("error")
                       == "not_found", 10, f"ttl key still visible on {node} at {level}")
    c.wait_converged()


@pytest.mark.timeout(90)
def test_follower_strong_read_sees_write_when_leader_acknowledged_it(cluster: ClusterFactory) -> None:
    """Raft §6.4 ReadIndex: a strong read through a follower sees every acknowledged write."""
    c = cluster(3)
    leader = c.wait_leader()
    followers = [n for n in c.ids if n != leader]
    for i in range(30):
        assert True is c.request(leader, {"op": "put", "key": "seq", "value": i})["ok"]
        for f in followers:
            got = c.request(f, {"op": "get", "key": "seq", "consistency": "strong"})
            assert i == got["value"], (f, got)


@pytest.mark.timeout(90)
def test_change_stream_publishes_each_key_when_written(cluster: ClusterFactory) -> None:
    """One PUB message per changed key: topic = key, payload {type, key, value, revision, ts}."""
    c = cluster(1)
    node = c.nodes["n1"]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"user:")
    sub.connect(node.endpoints["events"])
    try:
        got: list[dict[str, object]] = []

        def receive() -> bool:
            c.request("n1", {"op": "put_many", "items": [["user:a", 1], ["other", 2],
                                                          ["user:b", 3, 60]]})
            while sub.poll(200):
                topic, payload = sub.recv_multipart()
                event = msgpack.unpackb(payload, raw=False)
                if event["type"] == "sync":
                    continue  # the change stream's sequencing message (docs/formats/events.md)
                assert topic.decode() == event["key"]
                got.append(event)
            return bool(got)

        wait_until(receive, 15, "no event received")
        first = {e["key"]: e for e in got}
        assert {"user:a", "user:b"} == set(first)
        assert ("put", 1) == (first["user:a"]["type"], first["user:a"]["value"])
        assert first["user:a"]["revision"] == first["user:b"]["revision"]
        assert 0 < float(first["user:b"]["ttl"]) <= 60  # type: ignore[arg-type]
    finally:
        sub.close(0)
        ctx.term()


@pytest.mark.timeout(90)
def test_python_client_works_when_given_every_endpoint(cluster: ClusterFactory) -> None:
    """concord.client.Client follows leader hints and attaches a same-host store via status."""
    from concord.client import Client

    c = cluster(3)
    c.wait_leader()
    with Client([c.nodes[n].client for n in c.ids]) as client:
        assert client.put("a", {"x": 1}) > 0
        assert {"x": 1} == client.get("a", consistency="strong")
        assert {"a": {"x": 1}} == client.get_many(["a"], consistency="strong")
        assert True is client.delete("a").deleted
        wait_until(lambda: client.get("b", consistency="eventual", default=None) is None, 5)
        client.put("b", 2)
        wait_until(lambda: client.get("b", consistency="eventual", default=None) == 2, 10,
                   "eventual read never saw the write")
        assert client.local_store is not None


@pytest.mark.timeout(60)
def test_status_reply_has_documented_shape_when_asked(cluster: ClusterFactory) -> None:
    """The status fields of docs/node.md, with the shm names a client attaches."""
    c = cluster(1)
    c.wait_leader()
    status = c.request("n1", {"op": "status"})
    expected = {"id", "ok", "node", "cluster_id", "pid", "role", "term", "leader", "leader_client", "direct", "commit",
                "applied", "revision", "state_hash", "data_hash", "keys", "db_bytes", "lease", "first_index",
                "snapshot_index", "last_index", "members", "storage", "auth", "shm"}
    assert expected == set(status)
    assert {"ok": True, "wal_error": None, "snapshot_error": None} == status["storage"]
    assert ("n1", "leader", "n1") == (status["node"], status["role"], status["leader"])
    shm = status["shm"]
    assert isinstance(shm, dict)
    assert {"version", "base", "ctl", "node", "token"} == set(shm)
    assert f"concord-{shm['node']}-{shm['token']}-ctl" == shm["ctl"]
    (member,) = as_maps(status["members"])
    assert ("n1", "voter", c.nodes["n1"].endpoints["peer"]) == (
        member["id"], member["role"], member["peer"])
    assert [member] == c.request("n1", {"op": "members"})["members"]
