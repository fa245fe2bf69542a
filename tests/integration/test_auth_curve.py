"""
Auth and CURVE together, on a real 3-node cluster: `[auth] enabled` with CURVE on the peer,
client and events links. Tokens decide who may do what; CURVE decides who can talk at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgpack
import pytest
import zmq

from concord.auth.tokens import new_token
from concord.client import Client
from concord.errors import ForbiddenError, LocalProtocolError, UnauthorizedError
from concord.net.curve import CurveClient, read_key_file, write_key_pair
from concord.net.events import AUTH_TOPIC
from tests.gateway.httpkit import HTTP_SETTINGS, Http, key_path
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def secure_cluster(cluster: ClusterFactory, tmp_path: Path) -> tuple[Cluster, str, str]:
    """
    A 3-node cluster with auth on (first admin token from a file) and CURVE on every link:
    each node's peer pair and the allow-list, one client/events pair for all nodes.
    Returns (cluster, admin token, the client endpoints' public key).
    """
    keys = tmp_path / "keys"
    peers = keys / "peers"
    peers.mkdir(parents=True)
    for node_id in ("n1", "n2", "n3"):
        pub, _ = write_key_pair(keys / "secret", node_id)
        shutil.copy(pub, peers / pub.name)
    client_pub, client_secret = write_key_pair(keys, "clients")
    admin, _ = new_token()
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin + "\n")
    os.chmod(token_file, 0o600)
    c = cluster(3, start=False, auth={"enabled": True, "bootstrap_token_file": str(token_file)},
                curve={"peer_keys_dir": str(peers), "client_secret_key_file": str(client_secret)},
                http=HTTP_SETTINGS)
    for node_id in c.ids:
        c.node_settings[node_id] = {
            "curve": {"secret_key_file": str(keys / "secret" / f"{node_id}.key")}}
    server_key = read_key_file(client_pub, "public")
    c.token, c.curve = admin, CurveClient.of(server_key)  # the helper's status needs both
    c.start()
    return c, admin, server_key


def sub_socket(ctx: zmq.Context[zmq.Socket[bytes]], c: Cluster, node: str, server_key: str | None,
               token: str | None, prefix: bytes) -> zmq.Socket[bytes]:
    """A raw SUB on `node`'s change stream (CURVE with `server_key`; authenticated with `token`)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        CurveClient.of(server_key).apply(sock)  # type: ignore[union-attr]
    if token is not None:
        sock.subscribe(AUTH_TOPIC + token.encode() + b"\x1f" + prefix)
    sock.subscribe(prefix)
    sock.connect(f"tcp://127.0.0.1:{c.member_ports(node).events_port}")
    return sock


def drain(sock: zmq.Socket[bytes]) -> set[str]:
    """The keys of every change waiting on `sock` (non-blocking; sync messages left out)."""
    keys: set[str] = set()
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return keys
        message = msgpack.unpackb(frames[1], raw=False)
        if message.get("type") != "sync":
            keys.add(message["key"])


@pytest.mark.timeout(300)
def test_tokens_and_curve_hold_together_when_both_are_on(cluster: ClusterFactory,
                                                         tmp_path: Path) -> None:
    """
    With the server key: a valid token reads and writes through every node, no token is
    unauthorized, a viewer's write is forbidden, the live stream gives each token only
    what it may read; without the server key a client and a subscriber get nothing.
    """
    c, admin_token, server_key = secure_cluster(cluster, tmp_path)
    endpoints = [n.client for n in c.nodes.values()]
    with Client(endpoints, token=admin_token, server_key=server_key, timeout_s=20.0) as admin:
        admin.role_put("flags", [["f:*", "read", "allow"]])
        editor_token = str(admin.token_create("editor")["token"])
        viewer_token = str(admin.token_create("viewer")["token"])
        flags_token = str(admin.token_create("flags")["token"])

    with Client(endpoints, token=editor_token, server_key=server_key, timeout_s=20.0) as editor:
        editor.put("app:k", "v1")
        for endpoint in endpoints:  # every node answers the token, over CURVE
            # strong first: it settles the node (a follower learns the put's commit with
            # the next append or heartbeat, docs/architecture.md "Follower lag")
            for level in ("strong", "eventual"):
                got = wait_until(lambda: editor.call_at(endpoint, "get", {
                    "key": "app:k", "consistency": level}).get("value"), 20,
                    f"{endpoint} {level} read of app:k")
                assert "v1" == got
        assert "v1" == editor.get("app:k", consistency="leader")

    with Client(endpoints, server_key=server_key, shm=False, timeout_s=20.0) as anonymous:
        with pytest.raises(UnauthorizedError):
            anonymous.get("app:k")
        with pytest.raises(UnauthorizedError):
            anonymous.put("app:k", "anonymous")

    with Client(endpoints, token=viewer_token, server_key=server_key, timeout_s=20.0) as viewer:
        assert "v1" == viewer.get("app:k", consistency="strong")
        with pytest.raises(ForbiddenError):
            viewer.put("app:k", "viewer")

    with Client(endpoints, token=editor_token, shm=False, timeout_s=20.0) as no_key:
        with pytest.raises(LocalProtocolError, match="requires CURVE on this endpoint"):
            no_key.get("app:k")

    # The HTTP gateway is a client of its node's CURVE endpoint; the bearer token decides.
    for node in c.nodes.values():
        h = Http(node.endpoints["http"])
        try:
            bearer = {"Authorization": f"Bearer {editor_token}"}
            assert (200, "v1") == (lambda r: (r.status, r.body.get("value")))(
                h.request("GET", key_path('app:k', '?consistency=eventual'), headers=bearer))
            assert 200 == h.request("GET", "/health", headers=bearer).status
            assert 401 == h.request("GET", "/health").status
            viewer_put = h.request("PUT", key_path('app:k'), {"value": "viewer"},
                                   headers={"Authorization": f"Bearer {viewer_token}"})
            assert (403, "forbidden") == (viewer_put.status, viewer_put.body.get("error"))
        finally:
            h.close()

    # Live stream: CURVE + token. Only the subscriptions a token may read are set.
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    follower = next(n for n in c.nodes if n != c.wait_leader())
    subs: dict[str, zmq.Socket[bytes]] = {}
    try:
        subs = {
            "admin": sub_socket(ctx, c, follower, server_key, admin_token, b""),
            "flags_f": sub_socket(ctx, c, follower, server_key, flags_token, b"f:"),
            "flags_all": sub_socket(ctx, c, follower, server_key, flags_token, b""),
            "anonymous": sub_socket(ctx, c, follower, server_key, None, b""),
            "no_key": sub_socket(ctx, c, follower, None, admin_token, b""),
        }
        seen_keys: dict[str, set[str]] = {name: set() for name in subs}
        with Client(endpoints, token=admin_token, server_key=server_key, timeout_s=20.0) as admin, \
                Client(endpoints, token=viewer_token, server_key=server_key,
                       timeout_s=20.0) as viewer, viewer.subscribe("app:") as viewer_sub:

            def seen(name: str, key: str) -> bool:
                seen_keys[name] |= drain(subs[name])
                return key in seen_keys[name]

            def put_until_seen(key: str) -> None:
                # NB: a subscription is set once the publisher has read it; re-put until then.
                def landed() -> bool:
                    admin.put(key, 1)
                    admin.put("f:" + key, 1)
                    try:
                        wait_until(lambda: seen("admin", key) and seen("flags_f", "f:" + key), 1.0)
                    except AssertionError:
                        return False
                    return True

                wait_until(landed, 60, f"the admin and flags subscribers never saw {key}")

            admin.put("app:x", 2)
            event = viewer_sub.next(20.0)  # Client.subscribe with CURVE and a token
            assert event is not None and ("app:x", 2) == (event.key, event.value)
            for i in range(3):
                put_until_seen(f"m:{i}")
            for name in subs:
                seen_keys[name] |= drain(subs[name])
        assert {"f:m:0", "f:m:1", "f:m:2"} <= seen_keys["flags_f"]
        assert set() == {k for k in seen_keys["flags_f"] if not k.startswith("f:")}
        assert {"m:0", "m:1", "m:2"} <= seen_keys["admin"]
        assert set() == seen_keys["flags_all"], "a token may not subscribe what it may not read"
        assert set() == seen_keys["anonymous"], "no token, no subscription"
        assert set() == seen_keys["no_key"], "no CURVE, no stream"
    finally:
        for sock in subs.values():
            sock.close(0)
        ctx.term()
