"""Node ids of every shape the config accepts ('-', '.', other scripts, 64 characters)."""

from __future__ import annotations

import pytest

from concord.client import Client
from concord.client.local import shm_names
from concord.ids import NODE_ID_MAX_CHARS, is_node_id
from concord.shm.view import ShmView
from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_maps
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: '-' and '.' (the shm names replace '-'), another script (not in the shm names at all),
#: and 64 characters of 2 bytes each (the longest: 127 bytes, past the 32 characters the
#: shm names keep and the 56 bytes the shm status held before format 4).
IDS = ("db-east.1", "nœud-2", "ü" * 63 + "3")


def test_ids_are_valid_and_as_long_as_allowed() -> None:
    """The ids below are what the config accepts, the longest among them."""
    assert all(is_node_id(i) for i in IDS)
    assert NODE_ID_MAX_CHARS == len(IDS[2]) and 127 == len(IDS[2].encode())


def lead(c: Cluster, node_id: str) -> None:
    """Make `node_id` the leader (transfer_leader from the current one)."""
    leader = c.wait_leader()
    if leader != node_id:
        reply = c.request(leader, {"op": "transfer_leader", "member_id": node_id})
        assert reply["ok"], reply
    wait_until(lambda: c.leader() == node_id, 20, lambda: f"statuses={c.statuses()}")


@pytest.mark.timeout(180)
def test_every_consistency_level_is_served_when_node_ids_have_any_allowed_shape(
    cluster: ClusterFactory,
) -> None:
    """With each id leading: writes, eventual/leader/strong reads, and shm leader reads."""
    c = cluster(ids=IDS)
    for i, node_id in enumerate(IDS):
        lead(c, node_id)
        status = c.status(node_id)
        assert status is not None and node_id == status["node"] == status["leader"]
        key = f"k{i}"
        assert c.request(node_id, {"op": "put", "key": key, "value": i})["ok"]
        for level in ("eventual", "leader", "strong"):
            reply = c.request(node_id, {"op": "get", "key": key, "consistency": level})
            assert (True, i) == (reply["ok"], reply.get("value")), (node_id, level, reply)
        # The leader's read workers and same-host clients serve `leader` reads from
        # shared memory under its lease: the store says so for this node's id.
        names = shm_names(status)
        assert names is not None
        with ShmView.attach(names) as view:
            wait_until(view.holds_leader_lease, 10,
                       lambda: f"{node_id}: lease not held, status={c.status(node_id)}")
            assert node_id == view.current_status().leader_id
        with Client(c.nodes[node_id].client) as client:

            def served_from_shm() -> bool:
                assert i == client.get(key)
                store = client.local_store
                return store is not None and store.served > 0

            wait_until(served_from_shm, 10, lambda: f"{node_id}: {client.local_store}")
        for follower in (n for n in IDS if n != node_id):
            refused = c.request(follower, {"op": "get", "key": key, "consistency": "leader"})
            assert ("not_leader", c.nodes[node_id].client) == (
                refused.get("error"), refused.get("leader")
            ), (follower, refused)
    leader = c.wait_leader()
    bad = c.request(leader, {"op": "add_member", "member_id": "no spaces", "host": "127.0.0.1",
                             "client_port": 1, "peer_port": 2, "events_port": 3})
    assert "invalid_request" == bad.get("error") and "member_id must be" in str(bad["message"])
    members = as_maps(c.request(leader, {"op": "members"})["members"])
    assert sorted(IDS) == sorted(str(m["id"]) for m in members)
