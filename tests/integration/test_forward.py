"""
Follower requests forwarded to the leader (concord/node/forward.py): a raw wire client
that never follows a hint writes through any node; sessions keep resends exactly-once
across the forward; the leader alone admits the token; a leader killed mid-stream costs
retryable errors only, and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import msgpack
import pytest
import zmq

from concord.aio import Client as AioClient
from concord.auth.tokens import new_token
from concord.client import Client
from concord.errors import RequestTimeoutError
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RETRYABLE = ("no_leader", "not_leader", "timeout")

_ids = itertools.count(1)


class Wire:
    """A raw client: one DEALER to one node, no hint following, no retries of its own."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def call(self, msg: Mapping[str, object], wait_ms: int = 5000) -> dict[str, object] | None:
        """The reply to `msg` (given a fresh id), or None after `wait_ms` of silence."""
        body = {**msg, "id": next(_ids)}
        self.sock.send_multipart([b"", msgpack.packb(body)])
        while self.sock.poll(wait_ms):
            _, raw = self.sock.recv_multipart()
            reply = msgpack.unpackb(raw)
            assert isinstance(reply, dict)
            if reply.get("id") == body["id"]:
                return reply
        return None

    def close(self) -> None:
        self.sock.close(linger=0)


def strong_get(c: Cluster, node_id: str, key: str) -> dict[str, object]:
    """A strong read with meta at `node_id`, retried while the cluster has no leader."""
    last: list[dict[str, object]] = []

    def answered() -> bool:
        try:
            last[:] = [c.request(node_id, {"op": "get", "key": key, "consistency": "strong",
                                           "meta": True})]
        except RequestTimeoutError:
            return False
        return last[0].get("error") not in RETRYABLE

    wait_until(answered, 20, lambda: f"{node_id} get {key}: {last}")
    return last[0]


@pytest.mark.timeout(120)
def test_write_through_follower_is_applied_when_the_client_follows_no_hint(
        cluster: ClusterFactory, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """put, put_many, delete and incr through each follower's endpoint answer ok; the
    values are on every node; the follower counted them as forwarded."""
    c = cluster(3)
    leader = c.wait_leader()
    for n, follower in enumerate(f for f in c.ids if f != leader):
        wire = Wire(ctx, c.nodes[follower].client)
        try:
            put = wire.call({"op": "put", "key": f"k{n}", "value": {"via": follower}})
            assert put is not None and put.get("ok") is True, put
            many = wire.call({"op": "put_many", "items": [[f"m{n}", 1], [f"gone{n}", 2]]})
            assert many is not None and many.get("ok") is True, many
            gone = wire.call({"op": "delete", "key": f"gone{n}"})
            assert gone is not None and (True, True) == (gone.get("ok"), gone.get("deleted")), gone
            incr = wire.call({"op": "incr", "key": f"c{n}", "delta": 5})
            assert incr is not None and 5 == incr.get("value"), incr
        finally:
            wire.close()
        for node in c.ids:
            assert {"via": follower} == strong_get(c, node, f"k{n}").get("value")
            assert 1 == strong_get(c, node, f"m{n}").get("value")
            assert "not_found" == strong_get(c, node, f"gone{n}").get("error")
            assert 5 == strong_get(c, node, f"c{n}").get("value")


@pytest.mark.timeout(120)
def test_follower_answers_not_leader_with_hint_when_forwarding_is_off(
        cluster: ClusterFactory) -> None:
    """raft.forward_to_leader = false: a follower refuses a write with the leader's endpoint."""
    c = cluster(3, raft={"forward_to_leader": False})
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    refused = c.request(follower, {"op": "put", "key": "x", "value": 0})
    assert ("not_leader", c.nodes[leader].client) == (refused["error"], refused["leader"])
    assert "not_found" == strong_get(c, leader, "x").get("error")


@pytest.mark.timeout(120)
def test_client_writes_to_the_leader_directly_when_a_forwarded_write_named_it(
        cluster: ClusterFactory) -> None:
    """A Python client (sync, then asyncio) given only a follower's endpoint: its first put
    is forwarded, the reply names the leader (`leader_client`), and the client moves
    there. Proof that later puts no longer go through the follower: with the follower
    killed, they still succeed (the client knows no other endpoint than the follower's)."""
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    at_leader = c.nodes[leader].client
    wait_until(lambda: (c.status(follower) or {}).get("leader_client") == at_leader, 20,
               lambda: f"{follower} does not know {leader}: {c.status(follower)}")

    async def aio_put() -> str | None:
        async with AioClient(c.nodes[follower].client, timeout_s=10.0) as aclient:
            await aclient.put("aio", 1)
            return aclient.leader

    assert at_leader == asyncio.run(aio_put())
    with Client(c.nodes[follower].client, timeout_s=10.0, shm=False) as client:
        client.put("first", 1)
        assert at_leader == client.leader
        c.nodes[follower].kill_tree()
        for i in range(3):
            client.put(f"direct{i}", i)
        assert at_leader == client.leader
    for key, value in (("aio", 1), ("first", 1), ("direct2", 2)):
        assert value == strong_get(c, leader, key).get("value")


def fault(c: Cluster, node_id: str, command: Mapping[str, object]) -> None:
    reply = c.request(node_id, {"op": "fault", "command": dict(command)})
    assert reply.get("ok") is True, reply


@pytest.mark.timeout(120)
def test_forwarded_session_write_applies_once_when_its_reply_is_lost_and_it_is_resent(
        cluster: ClusterFactory, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """The leader's reply to a forwarded incr is dropped on the link (fault filter): the
    client gets `timeout` (outcome unknown), resends the same client_id + seq through the
    same follower, and gets the first result; the counter moved once."""
    c = cluster(3, faults={"enabled": True})
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    wire = Wire(ctx, c.nodes[follower].client)
    try:
        first = wire.call({"op": "incr", "key": "ctr", "client_id": "fwd-c1", "seq": 1})
        assert first is not None and 1 == first.get("value"), first
        fault(c, leader, {"cmd": "block", "src": leader, "dst": follower})
        write = {"op": "incr", "key": "ctr", "client_id": "fwd-c1", "seq": 2, "timeout_ms": 400}
        lost = wire.call(write)
        assert lost is not None and "timeout" == lost.get("error"), lost
        wait_until(lambda: c.request(leader, {"op": "get", "key": "ctr"}).get("value") == 2, 10,
                   lambda: f"leader ctr: {c.request(leader, {'op': 'get', 'key': 'ctr'})}")
        fault(c, leader, {"cmd": "heal"})
        wait_until(lambda: (c.status(follower) or {}).get("leader") == leader, 20,
                   lambda: f"statuses={c.statuses()}")
        resent: list[dict[str, object] | None] = []

        def answered() -> bool:
            resent[:] = [wire.call(write)]
            return resent[0] is not None and resent[0].get("error") not in RETRYABLE

        wait_until(answered, 20, lambda: f"resend: {resent}")
        assert (True, 2) == (resent[0]["ok"], resent[0]["value"]), resent  # type: ignore[index]
        for node in c.ids:
            got = strong_get(c, node, "ctr")
            assert (2, 2) == (got.get("value"), got.get("version")), (node, got)
        after = wire.call({"op": "incr", "key": "ctr", "client_id": "fwd-c1", "seq": 3})
        assert after is not None and 3 == after.get("value"), after
    finally:
        wire.close()


def auth_cluster(cluster: ClusterFactory, tmp_path: Path, **sections: dict[str, object]
                 ) -> tuple[Cluster, str]:
    token, _ = new_token()
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    c = cluster(3, start=False, auth={"enabled": True, "bootstrap_token_file": str(path)},
                **sections)
    c.token = token
    c.start()
    return c, token


def via_leader(c: Cluster, msg: Mapping[str, object]) -> dict[str, object]:
    last: list[dict[str, object]] = []

    def answered() -> bool:
        last[:] = [c.request(c.wait_leader(), msg)]
        return last[0].get("error") not in RETRYABLE

    wait_until(answered, 15, lambda: f"{msg} -> {last}")
    return last[0]


def through_follower(ctx: zmq.Context[zmq.Socket[bytes]], c: Cluster,
                     msg: Mapping[str, object]) -> dict[str, object]:
    """`msg` sent to a node that is a follower at the time, resent on a retryable answer
    or silence (the load of a shared test host may move the leadership)."""
    last: list[dict[str, object] | None] = []

    def answered() -> bool:
        leader = c.wait_leader()
        wire = Wire(ctx, c.nodes[next(n for n in c.ids if n != leader)].client)
        try:
            last[:] = [wire.call(msg, wait_ms=3000)]
        finally:
            wire.close()
        return last[0] is not None and last[0].get("error") not in RETRYABLE

    wait_until(answered, 30, lambda: f"{msg} -> {last}")
    assert last[0] is not None
    return last[0]


@pytest.mark.timeout(120)
def test_follower_answers_not_leader_before_checking_the_token_when_forwarding_is_off(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Forwarding off, auth on: a write at a follower gets `not_leader` whatever its token
    (the leader checks it: a follower may not have applied a token created moments ago),
    and the write is not applied."""
    c, admin = auth_cluster(cluster, tmp_path, raft={"forward_to_leader": False})
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    unknown, _ = new_token()  # well formed, never created: this node cannot admit it
    refused = c.request(follower, {"op": "put", "key": "x", "value": 0, "token": unknown})
    assert ("not_leader", c.nodes[leader].client) == (refused["error"], refused["leader"]), refused
    assert "not_found" == via_leader(c, {"op": "get", "key": "x", "consistency": "strong",
                                         "token": admin}).get("error")


@pytest.mark.timeout(180)
def test_leader_admits_the_token_when_a_write_comes_through_a_follower(
        cluster: ClusterFactory, tmp_path: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Auth on: through a follower, a viewer's write is forbidden, a write without a token
    unauthorized, an editor's applied; a forward forged as a member (a follower that
    checks nothing) is refused the same way by the leader."""
    c, admin = auth_cluster(cluster, tmp_path)
    viewer = str(via_leader(c, {"op": "token_create", "token": admin, "role": "viewer"})["token"])
    editor = str(via_leader(c, {"op": "token_create", "token": admin, "role": "editor"})["token"])
    answers = {who: through_follower(ctx, c, {"op": "put", "key": f"by-{who}", "value": 1,
                                              **({"token": token} if token else {})})
               for who, token in (("viewer", viewer), ("none", None), ("editor", editor))}
    assert {"viewer": "forbidden", "none": "unauthorized", "editor": None} == {
        who: a.get("error") for who, a in answers.items()}, answers
    for who, present in (("viewer", False), ("none", False), ("editor", True)):
        got = strong_get_token(c, c.wait_leader(), f"by-{who}", admin)
        assert present == got.get("ok"), (who, got)

    # A follower is trusted with nothing: forwards forged in its name over the peer port
    # (no CURVE here, so the sender id is not authenticated) meet the leader's admission.
    # One connection delivers in order: when the editor's forward, sent last, is applied
    # by a leader whose term did not change meanwhile, that leader saw the other two.
    attempts = itertools.count()

    def forged_round() -> bool:
        n = next(attempts)
        leader = c.wait_leader()
        term = (c.status(leader) or {}).get("term")
        member = next(m for m in c.ids if m != leader)
        forge = ForgedMember(ctx, c, member, leader)
        try:
            forge.forward({"op": "put", "id": 1, "key": "forged-none", "value": 1})
            forge.forward({"op": "put", "id": 2, "key": "forged-viewer", "value": 1,
                           "token": viewer})
            forge.forward({"op": "put", "id": 3, "key": f"forged-editor-{n}", "value": 1,
                           "token": editor})
            try:
                wait_until(lambda: strong_get_token(c, leader, f"forged-editor-{n}", admin)
                           .get("ok"), 5)
            except AssertionError:
                return False
        finally:
            forge.close()
        after = c.status(leader) or {}
        return (leader, term) == (after.get("leader"), after.get("term"))

    wait_until(forged_round, 60, "no forged round reached a steady leader")
    for key in ("forged-none", "forged-viewer"):
        assert "not_found" == strong_get_token(c, c.wait_leader(), key, admin).get("error"), key


def strong_get_token(c: Cluster, node_id: str, key: str, token: str) -> dict[str, object]:
    last: list[dict[str, object]] = []

    def answered() -> bool:
        try:
            last[:] = [c.request(node_id, {"op": "get", "key": key, "consistency": "strong",
                                           "token": token})]
        except RequestTimeoutError:
            return False
        return last[0].get("error") not in RETRYABLE

    wait_until(answered, 15, lambda: f"{node_id} get {key}: {last}")
    return last[0]


class ForgedMember:
    """Sends forward REQUEST messages to `leader`'s peer port, claiming to be `member`
    (peer envelope v3 with no cluster id, then forward v1: docs/formats/net.md)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], c: Cluster, member: str,
                 leader: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{c.member_ports(leader).peer_port}")
        self.header = bytes((3, 1, 0)) + member.encode()
        self.ids = itertools.count(1 << 40)

    def forward(self, request: Mapping[str, object]) -> None:
        body = struct.pack(">BBBQ", 0xC1, 1, 1, next(self.ids)) + msgpack.packb(dict(request))
        self.sock.send_multipart([self.header, body])

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.mark.timeout(180)
def test_nothing_acknowledged_is_lost_when_the_leader_is_killed_mid_stream(
        cluster: ClusterFactory, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """A raw client streams session puts through one follower, resending each on any
    retryable answer or silence; the leader is SIGKILLed mid-stream. It sees only
    retryable errors, and every acknowledged put is on the survivors, applied once."""
    c = cluster(3)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    wire = Wire(ctx, c.nodes[follower].client)
    acked: dict[str, int] = {}
    errors: list[object] = []
    try:
        for i in range(60):
            if i == 20:
                c.nodes[leader].kill_tree()
            msg = {"op": "put", "key": f"w{i}", "value": i, "client_id": "stream", "seq": i,
                   "timeout_ms": 1000}
            replies: list[dict[str, object] | None] = []

            def acknowledged() -> bool:
                replies[:] = [wire.call(msg, wait_ms=1500)]
                reply = replies[0]
                if reply is not None and not reply.get("ok"):
                    errors.append(reply.get("error"))
                return reply is not None and reply.get("ok") is True

            wait_until(acknowledged, 30, lambda: f"w{i}: {replies} errors={errors}")
            acked[f"w{i}"] = i
    finally:
        wire.close()
    assert set(errors) <= set(RETRYABLE), errors
    survivors = [n for n in c.ids if n != leader]
    for node in survivors:
        for key, value in acked.items():
            got = strong_get(c, node, key)
            assert (value, 1) == (got.get("value"), got.get("version")), (node, key, got)
