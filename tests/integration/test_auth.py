"""
Auth on a real 3-node cluster: every op x every kind of requester, through a follower and
the leader, at every consistency level; refused requests change nothing; quotas hold
cluster-wide under concurrent writers through every node.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import msgpack
import pytest
import zmq

from concord.aio import Client as AioClient
from concord.auth.tenants import key_prefix
from concord.client import Client
from concord.errors import ForbiddenError, UnauthorizedError
from concord.auth.tokens import new_token
from concord.net.events import AUTH_TOPIC
from concord.net.wire import OPS, Access, Backend, OpSpec
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEVELS = ("eventual", "leader", "strong")
RETRYABLE = ("no_leader", "not_leader", "timeout")
REFUSED = ("unauthorized", "forbidden")


def auth_cluster(cluster: ClusterFactory, tmp_path: Path,
                 **sections: dict[str, object]) -> tuple[Cluster, str]:
    """A 3-node cluster with [auth] enabled and its first admin token from a file."""
    token, _ = new_token()
    path = tmp_path / "admin.token"
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    c = cluster(3, start=False, auth={"enabled": True, "bootstrap_token_file": str(path)},
                **sections)
    c.token = token  # status (and so the start-up leader wait) needs a token
    c.start()
    return c, token


def send(c: Cluster, node_id: str, msg: Mapping[str, object]) -> dict[str, object]:
    """One request, following not_leader hints and retrying "ask again" answers."""
    last: list[dict[str, object]] = []

    def answered() -> bool:
        target = node_id
        for _ in range(3):
            reply = c.request(target, msg)
            if reply.get("error") != "not_leader" or not isinstance(reply.get("leader"), str):
                break
            target = next(n for n, p in c.nodes.items() if p.client == reply["leader"])
        last[:] = [reply]
        return reply.get("error") not in RETRYABLE

    wait_until(answered, 15, lambda: f"{node_id} {msg} -> {last}")
    return last[0]


def admin_do(c: Cluster, token: str, op: str, **args: object) -> dict[str, object]:
    reply = send(c, c.wait_leader(), {"op": op, "id": 1, "token": token, **args})
    assert reply["ok"], reply
    return reply


def data_hashes(c: Cluster) -> set[object]:
    c.wait_converged()
    return {s["data_hash"] for s in c.statuses().values() if s is not None}


def op_args(spec: OpSpec, p: str) -> dict[str, object]:
    """
    Arguments for `spec` on keys starting with `p` (admin ops: harmless, refused later).
    TTLs outlast the test: an expiry during a later requester's phase would change the
    data hashes that phase compares.
    """
    by_op: dict[str, dict[str, object]] = {
        "put": {"key": p + "k", "value": 1}, "get": {"key": p + "k"}, "delete": {"key": p + "d"},
        "put_many": {"items": [[p + "a", 1], [p + "b", 2]]}, "get_many": {"keys": [p + "a", p + "b"]},
        "delete_many": {"keys": [p + "x"]}, "touch": {"key": p + "k", "ttl": None},
        "touch_many": {"items": [[p + "a", 3600]]}, "ttl": {"key": p + "k"},
        "get_with_ttl": {"key": p + "k"}, "put_if": {"key": p + "c", "value": 1, "version": 0},
        "delete_if": {"key": p + "c", "version": 99}, "keys": {"prefix": p},
        "query": {"prefix": p}, "count": {"prefix": p}, "delete_where": {"prefix": p + "zz"},
        "create_index": {"name": "ix", "field": "f"}, "drop_index": {"name": "ix"},
        "index_lookup": {"name": "ix", "value": 1}, "events": {"since_revision": 0, "prefix": p},
        "backup": {"index": 1, "offset": 0},
        "add_member": {"member_id": "n9", "host": "127.0.0.1", "client_port": 1, "peer_port": 0,
                       "events_port": 1},
        "remove_member": {"member_id": "n9"}, "promote_member": {"member_id": "n9"},
        "transfer_leader": {"member_id": "n9"}, "fault": {"command": {}},
        "token_create": {"role": "viewer", "ttl": 60}, "token_revoke": {"token_id": "0" * 16},
        "role_put": {"name": "tmp", "rules": []}, "role_delete": {"name": "tmp"},
        "tenant_put": {"name": "tmp"}, "tenant_delete": {"name": "tmp"},
        "incr": {"key": p + "n"}, "decr": {"key": p + "n"}, "lease_grant": {"ttl": 3600},
        "lease_keepalive": {"lease": 999_999}, "lease_revoke": {"lease": 999_999},
    }
    return dict(by_op.get(spec.name, {}))


#: Requester -> the key prefix its requests use.
PREFIX = {"none": "m:", "revoked": "m:", "expired": "m:", "viewer": "m:", "editor": "m:",
          "custom_allowed": "f:", "custom_denied": "x:", "admin": "m:", "other_tenant": "m:"}


def expected(who: str, spec: OpSpec) -> str:
    """'unauthorized', 'forbidden' or 'admitted' (any answer but those two)."""
    if spec.name == "bootstrap":
        return "forbidden"  # public, but tokens exist: refused at apply
    if who in ("none", "revoked", "expired"):
        return "unauthorized"
    if who == "other_tenant":
        return "forbidden"  # a token cannot name another tenant
    access = spec.access
    if access is Access.TOKEN:
        return "admitted"
    if access is Access.ADMIN:
        return "admitted" if who == "admin" else "forbidden"
    if who in ("admin", "editor"):
        return "admitted"
    if who == "viewer":
        return "admitted" if access in (Access.READ_KEYS, Access.READ_RANGE) else "forbidden"
    if who == "custom_allowed":  # role flags: f:* write allow
        if access in (Access.READ_KEYS, Access.WRITE_KEYS):
            return "admitted"
        return "admitted" if "prefix" in spec.arg_index else "forbidden"
    return "forbidden"  # custom_denied: its keys lie outside f:*


def requests(who: str) -> Iterator[tuple[OpSpec, dict[str, object]]]:
    for spec in OPS.values():
        args = op_args(spec, PREFIX[who])
        if spec.backend is Backend.READ:
            for level in LEVELS:
                yield spec, {**args, "consistency": level}
        else:
            yield spec, args


def make_requesters(c: Cluster, admin: str) -> dict[str, str | None]:
    admin_do(c, admin, "tenant_put", name="blue")
    admin_do(c, admin, "tenant_put", name="red")
    admin_do(c, admin, "role_put", name="flags", rules=[["f:*", "write", "allow"]])
    made = {role: str(admin_do(c, admin, "token_create", role=role)["token"])
            for role in ("viewer", "editor", "flags")}
    revoked = admin_do(c, admin, "token_create", role="editor")
    admin_do(c, admin, "token_revoke", token_id=revoked["token_id"])
    expired = str(admin_do(c, admin, "token_create", role="editor", ttl=0.2)["token"])
    red = str(admin_do(c, admin, "token_create", role="editor", tenant="red")["token"])
    wait_until(lambda: send(c, c.wait_leader(), {"op": "whoami", "id": 1, "token": expired})
               .get("error") == "unauthorized", 10, "expired token still accepted")
    return {"none": None, "revoked": str(revoked["token"]), "expired": expired,
            "viewer": made["viewer"], "editor": made["editor"], "custom_allowed": made["flags"],
            "custom_denied": made["flags"], "admin": admin, "other_tenant": red}


@pytest.mark.timeout(600)
def test_every_op_gets_expected_answer_when_sent_by_each_requester(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Every op x requester x {follower, leader} x consistency level; refusals change nothing."""
    c, admin = auth_cluster(cluster, tmp_path)
    tokens = make_requesters(c, admin)
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n != leader)
    wrong: list[str] = []
    for who, token in tokens.items():
        before = data_hashes(c)
        for node in (follower, leader):
            for spec, args in requests(who):
                msg: dict[str, object] = {"op": spec.name, "id": 7, **args}
                if token is not None:
                    msg["token"] = token
                if who == "other_tenant":
                    msg["ns"] = "blue"
                reply = send(c, node, msg)
                code = reply.get("error") if reply.get("error") in REFUSED else "admitted"
                if code != expected(who, spec):
                    wrong.append(f"{who} {node} {spec.name} {args} -> {reply}")
        if all(expected(who, s) != "admitted" or s.access in (Access.READ_KEYS, Access.READ_RANGE,
                                                              Access.TOKEN) for s in OPS.values()):
            # Nothing this requester may do changes data: its refusals changed nothing.
            assert before == data_hashes(c), who
    assert [] == wrong


@pytest.mark.timeout(300)
def test_tenants_see_only_their_keyspace_when_reading_and_writing(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Two tenants' keys of the same name stay apart; root non-admins see neither."""
    c, admin = auth_cluster(cluster, tmp_path)
    admin_do(c, admin, "tenant_put", name="blue")
    admin_do(c, admin, "tenant_put", name="red")
    blue = str(admin_do(c, admin, "token_create", role="editor", tenant="blue")["token"])
    red = str(admin_do(c, admin, "token_create", role="editor", tenant="red")["token"])
    viewer = str(admin_do(c, admin, "token_create", role="viewer")["token"])
    leader = c.wait_leader()
    for token, value in ((blue, "b"), (red, "r")):
        assert send(c, leader, {"op": "put", "id": 1, "key": "k", "value": value, "token": token})["ok"]
    for node in c.nodes:
        for token, value in ((blue, "b"), (red, "r")):
            got = send(c, node, {"op": "get", "id": 1, "key": "k", "consistency": "strong", "token": token})
            assert value == got["value"]
            keys = send(c, node, {"op": "keys", "id": 1, "consistency": "strong", "token": token})
            assert ["k"] == keys["keys"]
        assert [] == send(c, node, {"op": "keys", "id": 1, "consistency": "strong",
                                    "token": viewer})["keys"]


@pytest.mark.timeout(300)
def test_quota_holds_cluster_wide_when_writers_race_through_every_node(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Concurrent writers through all three nodes never take a tenant over its key quota."""
    c, admin = auth_cluster(cluster, tmp_path)
    admin_do(c, admin, "tenant_put", name="q", max_keys=25)
    token = str(admin_do(c, admin, "token_create", role="editor", tenant="q")["token"])
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(node: str, n: int) -> None:
        for i in range(20):
            reply = send(c, node, {"op": "put", "id": i, "key": f"{node}-{n}-{i}", "value": i,
                                   "token": token})
            with lock:
                outcomes.append("ok" if reply.get("ok") else str(reply.get("error")))

    threads = [threading.Thread(target=writer, args=(node, n)) for node in c.nodes for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert 25 == outcomes.count("ok")
    assert len(outcomes) - 25 == outcomes.count("quota_exceeded")
    c.wait_converged()
    for node in c.nodes:
        usage = send(c, node, {"op": "tenant_usage", "id": 1, "token": token})
        assert 25 == usage["keys"]


def subscriber(ctx: zmq.Context[zmq.Socket[bytes]], c: Cluster, node: str,
               token: str | None, prefix: bytes, ns: str | None = None) -> zmq.Socket[bytes]:
    """
    A SUB socket on `node`'s change stream, authenticated with `token` when given; a
    tenant's messages carry stored keys, so its SUB filters on the stored prefix.
    """
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{c.member_ports(node).events_port}")
    if token is not None:
        sock.subscribe(AUTH_TOPIC + token.encode() + b"\x1f" + prefix)
    sock.subscribe(prefix if ns is None else key_prefix(ns).encode() + prefix)
    return sock


def drain(sock: zmq.Socket[bytes]) -> list[dict[str, object]]:
    """Every message waiting on `sock` (non-blocking)."""
    out: list[dict[str, object]] = []
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return out
        out.append(msgpack.unpackb(frames[1], raw=False))


def changed_keys(messages: list[dict[str, object]]) -> set[object]:
    return {m["key"] for m in messages if m.get("type") != "sync"}


@pytest.mark.timeout(300)
def test_live_stream_carries_only_what_each_subscriber_may_read(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """
    Unauthenticated and forbidden subscriptions get nothing; a tenant gets its own keys;
    a revocation cuts the stream of the revoked token.
    """
    c, admin = auth_cluster(cluster, tmp_path)
    admin_do(c, admin, "tenant_put", name="blue")
    admin_do(c, admin, "role_put", name="flags", rules=[["f:*", "read", "allow"]])
    viewer = str(admin_do(c, admin, "token_create", role="viewer")["token"])
    flags = str(admin_do(c, admin, "token_create", role="flags")["token"])
    blue = str(admin_do(c, admin, "token_create", role="editor", tenant="blue")["token"])
    follower = next(n for n in c.nodes if n != c.wait_leader())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        subs = {
            "anonymous": subscriber(ctx, c, follower, None, b"m:"),
            "forbidden": subscriber(ctx, c, follower, flags, b"m:"),
            "bad_token": subscriber(ctx, c, follower, "sk_concord_" + "0" * 16 + "_" + "0" * 64, b"m:"),
            "viewer": subscriber(ctx, c, follower, viewer, b"m:"),
            "admin": subscriber(ctx, c, follower, admin, b""),
            "blue": subscriber(ctx, c, follower, blue, b"", ns="blue"),
        }
        got: dict[str, list[dict[str, object]]] = {name: [] for name in subs}

        def seen(name: str, key: str) -> bool:
            got[name] += drain(subs[name])
            return key in changed_keys(got[name])

        def put_until_seen(key: str, token: str, watcher: str, stored: str | None = None) -> None:
            # NB: a subscription is live only once its sync arrives; re-put until seen.
            def landed() -> bool:
                assert send(c, c.wait_leader(), {"op": "put", "id": 1, "key": key, "value": 1,
                                                  "token": token})["ok"]
                return wait_for(lambda: seen(watcher, stored or key))
            wait_until(landed, 30, f"{watcher} never saw {key}")

        def wait_for(pred: Callable[[], bool]) -> bool:
            try:
                wait_until(pred, 0.5)
            except AssertionError:
                return False
            return True

        put_until_seen("m:1", admin, "viewer")
        put_until_seen("k", blue, "blue", stored="\x1fblue\x1fk")
        assert seen("admin", "m:1")
        for name in ("anonymous", "forbidden", "bad_token"):
            got[name] += drain(subs[name])
            assert [] == got[name], name
        assert {"\x1fblue\x1fk"} == changed_keys(got["blue"])  # its own keys only
        assert "m:1" not in changed_keys(got["blue"])
        # Revocation: the stream rebinds; the viewer's reconnect is refused.
        admin_do(c, admin, "token_revoke", token_id=viewer.split("_")[2])
        got["viewer"] += drain(subs["viewer"])
        before = len(got["viewer"])
        put_until_seen("m:2", admin, "admin")
        got["viewer"] += drain(subs["viewer"])
        assert "m:2" not in changed_keys(got["viewer"][before:])
    finally:
        for sock in locals().get("subs", {}).values():
            sock.close(0)
        ctx.term()


@pytest.mark.timeout(300)
def test_clients_manage_tokens_and_tenants_when_given_an_admin_token(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """The sync and asyncio clients' auth methods, end to end; a revoked token is refused."""
    c, admin_token = auth_cluster(cluster, tmp_path)
    endpoints = [p.client for p in c.nodes.values()]
    with Client(endpoints, token=admin_token, timeout_s=10.0) as admin:
        assert admin.whoami()["role"] == "admin"
        assert True is admin.tenant_put("team", max_keys=10)
        assert True is admin.role_put("ro-flags", [["flags:*", "read", "allow"]])
        created = admin.token_create("editor", tenant="team", description="svc")
        assert str(created["token"]).startswith("sk_concord_")
        assert {"admin", "editor", "viewer", "ro-flags"} <= {r["name"] for r in admin.role_list()}
        listed = {t["token_id"]: t for t in admin.token_list()}
        assert "active" == listed[created["token_id"]]["state"]
        assert "token" not in listed[created["token_id"]]
    with Client(endpoints, token=str(created["token"]), ns="team", timeout_s=10.0) as team:
        team.put("k", 1)
        assert 1 == team.get("k", consistency="strong")
        assert {"keys": 1} == {"keys": team.tenant_usage()["keys"]}
        with pytest.raises(ForbiddenError):
            team.token_list()

    async def aio_side() -> None:
        async with AioClient(endpoints, token=admin_token, timeout_s=10.0) as admin:
            assert 10 == (await admin.tenant_usage("team"))["max_keys"]
            assert True is await admin.token_revoke(str(created["token_id"]))

    asyncio.run(aio_side())
    with Client(endpoints, token=str(created["token"]), timeout_s=10.0) as revoked:
        with pytest.raises(UnauthorizedError):
            revoked.get("k", consistency="strong")


@pytest.mark.timeout(300)
def test_strong_read_on_follower_is_refused_when_its_token_was_revoked_before_the_read(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """The leader's messages reach a follower 300 ms late (fault filter), so it admits a
    strong read with a token already revoked through the leader (its auth tables are
    older); the read waits for an index past the revocation and is then refused, since
    the token is admitted again when the read is served."""
    c, admin = auth_cluster(cluster, tmp_path, faults={"enabled": True})
    token = admin_do(c, admin, "token_create", role="editor")
    assert send(c, c.wait_leader(), {"op": "put", "id": 2, "key": "k", "value": 1,
                                     "token": token["token"]})["ok"]
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    read = {"op": "get", "id": 3, "key": "k", "consistency": "strong", "token": token["token"]}
    assert 1 == send(c, follower, read)["value"]
    delay = {"cmd": "delay", "src": leader, "dst": follower, "ms": 300}
    assert c.request(leader, {"op": "fault", "command": delay, "token": admin})["ok"]
    admin_do(c, admin, "token_revoke", token_id=token["token_id"])
    reply = c.request(follower, read)
    assert "unauthorized" == reply.get("error"), reply


@pytest.mark.timeout(300)
def test_write_rate_holds_cluster_wide_when_writers_use_every_node(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """A tenant's write rate is enforced by the leader: within 10% over all nodes together."""
    c, admin = auth_cluster(cluster, tmp_path)
    rate = 40.0
    admin_do(c, admin, "tenant_put", name="r", write_rate=rate)
    token = str(admin_do(c, admin, "token_create", role="editor", tenant="r")["token"])
    leader = c.wait_leader()
    accepted: list[float] = []
    refused = 0
    lock = threading.Lock()
    stop = threading.Event()

    def writer(node: str) -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            i += 1
            reply = send(c, node, {"op": "put", "id": i, "key": f"{node}-{i}", "value": i,
                                   "token": token})
            with lock:
                if reply.get("ok"):
                    accepted.append(time.monotonic())
                elif reply.get("error") == "quota_exceeded":
                    refused += 1
                else:
                    raise AssertionError(reply)

    threads = [threading.Thread(target=writer, args=(node,)) for node in c.nodes for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    wait_until(lambda: time.monotonic() - started >= 5.0, 10)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert leader == c.wait_leader()  # one leader, one bucket (a new leader refills it)
    allowed = rate * elapsed + rate  # steady rate plus one second of burst
    assert refused > 0  # the writers asked for more than the rate
    assert abs(len(accepted) - allowed) <= 0.10 * allowed, (len(accepted), allowed, refused)


@pytest.mark.timeout(300)
def test_client_subscribe_authenticates_when_given_a_token(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Client.subscribe sends the authenticated subscription; a tenant sees its own keys, bare."""
    c, admin_token = auth_cluster(cluster, tmp_path)
    endpoints = [p.client for p in c.nodes.values()]
    with Client(endpoints, token=admin_token, timeout_s=10.0) as admin:
        admin.tenant_put("team")
        team_token = str(admin.token_create("editor", tenant="team")["token"])
        viewer_token = str(admin.token_create("viewer")["token"])
    with Client(endpoints, token=team_token, timeout_s=10.0) as team, \
            Client(endpoints, token=viewer_token, timeout_s=10.0) as viewer, \
            Client(endpoints, token=admin_token, timeout_s=10.0) as admin:
        with team.subscribe("") as team_sub, viewer.subscribe("app:") as viewer_sub:
            team.put("k1", 1)
            admin.put("app:x", 2)
            got = team_sub.next(10.0)
            assert got is not None and ("k1", 1) == (got.key, got.value)
            seen = viewer_sub.next(10.0)
            assert seen is not None and "app:x" == seen.key


@pytest.mark.timeout(300)
def test_read_rate_is_enforced_per_node_when_a_tenant_reads_fast(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """A tenant's read rate is per node: a burst beyond it is refused with quota_exceeded."""
    c, admin = auth_cluster(cluster, tmp_path)
    admin_do(c, admin, "tenant_put", name="r", read_rate=5.0)
    token = str(admin_do(c, admin, "token_create", role="viewer", tenant="r")["token"])
    for node in c.nodes:
        answers = [c.request(node, {"op": "get", "id": i, "key": "k", "consistency": "eventual",
                                    "token": token}).get("error") for i in range(20)]
        # One read worker per node: a burst of one second's worth (5), then refusals.
        assert 5 <= answers.count("not_found") <= 8, answers
        assert answers.count("quota_exceeded") >= 12, answers
