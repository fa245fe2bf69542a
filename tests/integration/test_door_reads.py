"""
Reads the front door answers itself, on a real 3-node cluster with auth on: with every
node's read worker stopped (SIGSTOP), bounded reads are still answered, with every
refusal a read worker makes; reads of unbounded cost, and those of a rate-limited
tenant, wait for the read worker.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from concord.errors import RequestTimeoutError
from concord.net.door_reads import MAX_INLINE_KEYS
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory
from tests.integration.test_auth import admin_do, auth_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNANSWERED = ("timeout", "no_leader")  # the read worker is stopped (then forgotten by the door)


@contextmanager
def read_workers_stopped(c: Cluster) -> Iterator[None]:
    """SIGSTOP every node's reader0 (by its pid from the supervisor's log); SIGCONT after."""
    pids = []
    for node in c.nodes.values():
        found = re.findall(r"child started name=reader0 pid=(\d+)", node.stderr())
        assert found, f"{node}: no reader0 start logged"
        pids.append(int(found[-1]))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def ask(c: Cluster, node: str, token: str | None, **msg: object) -> dict[str, object]:
    full: dict[str, object] = {"id": 5, **msg}
    if token is not None:
        full["token"] = token
    try:
        return c.request(node, full, timeout_ms=400)
    except RequestTimeoutError:
        return {"error": "timeout"}


@pytest.mark.timeout(300)
def test_door_serves_bounded_reads_with_every_check_when_read_workers_are_stopped(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    c, admin = auth_cluster(cluster, tmp_path)
    admin_do(c, admin, "tenant_put", name="blue")
    admin_do(c, admin, "tenant_put", name="slow", read_rate=1000.0)
    admin_do(c, admin, "role_put", name="flags", rules=[["f:*", "write", "allow"]])
    viewer = str(admin_do(c, admin, "token_create", role="viewer")["token"])
    flags = str(admin_do(c, admin, "token_create", role="flags")["token"])
    blue = str(admin_do(c, admin, "token_create", role="editor", tenant="blue")["token"])
    slow = str(admin_do(c, admin, "token_create", role="viewer", tenant="slow")["token"])
    revoked = admin_do(c, admin, "token_create", role="viewer")
    admin_do(c, admin, "token_revoke", token_id=revoked["token_id"])
    admin_do(c, admin, "put", key="m:k", value="root")
    admin_do(c, admin, "put", key="m:gone", value=1, ttl=0.2)
    admin_do(c, blue, "put", key="m:k", value="blue")
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n != leader)
    c.wait_converged()
    # m:gone expires (cluster time) before the read workers stop: only the door can see it.
    wait_until(lambda: ask(c, leader, admin, op="get", key="m:gone", consistency="strong")
               .get("error") == "not_found", 10, "m:gone never expired")
    with read_workers_stopped(c):
        for node in (follower, leader):
            got = ask(c, node, viewer, op="get", key="m:k", consistency="eventual")
            assert "root" == got.get("value"), (node, got)
            assert "blue" == ask(c, node, blue, op="get", key="m:k", consistency="eventual").get("value")
            assert {"m:k": "root"} == ask(c, node, viewer, op="get_many", keys=["m:k", "m:gone"],
                                          consistency="eventual").get("values")
            refusals = {
                "no token": (None, {"op": "get", "key": "m:k"}),
                "revoked": (str(revoked["token"]), {"op": "get", "key": "m:k"}),
                "outside the role": (flags, {"op": "get", "key": "m:k"}),
                "another tenant": (blue, {"op": "get", "key": "m:k", "ns": "slow"}),
                "expired key": (viewer, {"op": "get", "key": "m:gone"}),
                "bad key": (viewer, {"op": "ttl", "key": "k" * 1025}),
            }
            codes = {what: ask(c, node, token, consistency="eventual", **msg).get("error")
                     for what, (token, msg) in refusals.items()}
            assert {"no token": "unauthorized", "revoked": "unauthorized",
                    "outside the role": "forbidden", "another tenant": "forbidden",
                    "expired key": "not_found", "bad key": "invalid_key"} == codes, node
            # Unbounded reads and a rate-limited tenant's reads are the read worker's.
            for token, msg in ((viewer, {"op": "keys", "prefix": "m:"}),
                               (viewer, {"op": "get_many", "keys": ["m:k"] * (MAX_INLINE_KEYS + 1)}),
                               (slow, {"op": "get", "key": "m:k"})):
                reply = ask(c, node, token, consistency="eventual", **msg)
                assert reply.get("error") in UNANSWERED, (node, msg, reply)
        # `leader` reads: the leader answers under its lease; a follower names the leader.
        assert "root" == ask(c, leader, viewer, op="get", key="m:k", consistency="leader").get("value")
        hint = ask(c, follower, viewer, op="get", key="m:k", consistency="leader")
        assert ("not_leader", c.nodes[leader].client) == (hint.get("error"), hint.get("leader"))
    wait_until(lambda: ask(c, follower, viewer, op="keys", prefix="m:", consistency="eventual")
               .get("keys") == ["m:k"], 20, "the read worker did not come back")
