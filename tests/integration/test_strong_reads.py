"""
Strong reads answered by the front door after its read barrier (concord.net.door_strong),
on a real 3-node cluster: a strong read through a follower returns the value a write
acknowledged by the leader just before set, every time, and the follower's door (not
its raft worker) answered it; with auth on, the door makes every check the raft worker
made on this path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.conftest import ClusterFactory
from tests.integration.test_auth import admin_do, auth_cluster
from tests.integration.test_metrics import scrape, value

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 60
SERVED = "concord_server_reads_served_total"


@pytest.mark.timeout(240)
def test_strong_read_through_a_follower_sees_the_write_just_acknowledged_when_the_door_answers(
        cluster: ClusterFactory) -> None:
    """Write through the leader, then at once a strong get through a follower: always the new value."""
    c = cluster(n=3, metrics={"enabled": True})
    leader = c.wait_leader()
    followers = [n for n in c.nodes if n != leader]
    assert {"ok": True} == {"ok": c.request(leader, {"op": "put", "id": 1, "key": "x", "value": -1})["ok"]}
    c.wait_converged()
    # The doors attach their view on a thread: wait until a strong read is the door's.
    urls = {n: c.nodes[n].endpoints["metrics"] for n in followers}

    def door_served(node: str) -> float:
        return value(scrape(urls[node]), SERVED, by="door")

    for node in followers:
        wait_until(lambda: c.request(node, {"op": "get", "id": 2, "key": "x", "consistency": "strong"})
                   .get("value") == -1 and door_served(node) > 0, 30,
                   f"{node}'s door never answered a strong read")
    before = {n: door_served(n) for n in followers}
    raft_before = {n: value(scrape(urls[n]), SERVED, by="raft_worker") for n in followers}
    for i in range(ROUNDS):
        written = c.request(leader, {"op": "put", "id": 10 + i, "key": "x", "value": i})
        assert written.get("ok"), written
        node = followers[i % 2]
        got = c.request(node, {"op": "get", "id": 1000 + i, "key": "x", "consistency": "strong"})
        assert (True, i) == (got.get("ok"), got.get("value")), (node, i, got)
    for node in followers:
        # NB: >=: the metric of the last warm-up read may land after `before` was taken.
        wait_until(lambda: door_served(node) - before[node] >= ROUNDS // 2, 10,
                   lambda: f"{node}: door answered {door_served(node) - before[node]} of {ROUNDS // 2}")
        assert raft_before[node] == value(scrape(urls[node]), SERVED, by="raft_worker")


@pytest.mark.timeout(300)
def test_door_strong_reads_make_every_auth_check_when_auth_is_on(
        cluster: ClusterFactory, tmp_path: Path) -> None:
    """Through a follower's door: the refusals of the raft worker's path, a tenant's own keyspace."""
    c, admin = auth_cluster(cluster, tmp_path, metrics={"enabled": True})
    admin_do(c, admin, "tenant_put", name="blue")
    admin_do(c, admin, "tenant_put", name="red")
    admin_do(c, admin, "role_put", name="flags", rules=[["f:*", "write", "allow"]])
    viewer = str(admin_do(c, admin, "token_create", role="viewer")["token"])
    flags = str(admin_do(c, admin, "token_create", role="flags")["token"])
    blue = str(admin_do(c, admin, "token_create", role="editor", tenant="blue")["token"])
    revoked = admin_do(c, admin, "token_create", role="viewer")
    admin_do(c, admin, "put", key="m:k", value="root")
    admin_do(c, blue, "put", key="m:k", value="blue")
    admin_do(c, admin, "token_revoke", token_id=revoked["token_id"])
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n != leader)
    url = c.nodes[follower].endpoints["metrics"]

    def ask(token: str | None, **msg: object) -> dict[str, object]:
        full: dict[str, object] = {"op": "get", "id": 5, "consistency": "strong", **msg}
        if "keys" not in msg:
            full["key"] = "m:k"
        if token is not None:
            full["token"] = token
        return c.request(follower, full)

    wait_until(lambda: ask(viewer).get("value") == "root"
               and value(scrape(url), SERVED, by="door") > 0, 30, "the door never answered")
    raft_before = value(scrape(url), SERVED, by="raft_worker")
    # Right after the revocation was acknowledged: refused, never served.
    assert "unauthorized" == ask(str(revoked["token"])).get("error")
    assert "unauthorized" == ask(None).get("error")
    assert "forbidden" == ask(flags).get("error")
    assert "forbidden" == ask(blue, ns="red").get("error")
    assert "blue" == ask(blue).get("value")
    assert {"m:k": "root"} == ask(viewer, op="get_many", keys=["m:k", "m:none"]).get("values")
    assert "root" == ask(viewer, op="get_with_ttl").get("value")
    assert raft_before == value(scrape(url), SERVED, by="raft_worker")
