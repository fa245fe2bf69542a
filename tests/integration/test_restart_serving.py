"""Serving right after a whole-cluster restart, while the nodes build their shm image in steps."""

from __future__ import annotations

import pytest

from concord.shm.layout import SegmentNames
from concord.shm.view import MISSING, ShmView
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

KEYS = 20_000
BATCH = 500


def _load(c: Cluster) -> None:
    leader = c.wait_leader()
    for lo in range(0, KEYS, BATCH):
        items = [[f"key{i:05d}", i] for i in range(lo, lo + BATCH)]
        reply = c.request(leader, {"op": "put_many", "items": items}, timeout_ms=10_000)
        assert reply.get("ok"), reply


def _first_leader(c: Cluster) -> str:
    """The first node that says it leads (polled as soon as every node is ready)."""
    def leading() -> str | None:
        for nid in c.ids:
            status = c.status(nid)
            if status is not None and status.get("role") == "leader":
                return nid
        return None
    found = wait_until(leading, 30, lambda: f"statuses={c.statuses()}")
    assert found is not None
    return found


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_reads_and_acknowledged_writes_are_served_when_the_cluster_just_restarted(
    cluster: ClusterFactory,
) -> None:
    """
    From the first leader after a whole-cluster restart on (its shm image may still be
    built in steps, readers seeing the empty store before it): strong and leader reads
    answer the loaded values on every level of the read path (the front door hands
    what its view cannot answer to the raft worker, which serves from its state), and
    a write the leader acknowledged is in its shared memory at once (its reply waited
    for the image's publish), with the whole loaded state.
    """
    c = cluster(3, storage={"snapshot_entries": 100_000, "snapshot_bytes": 400_000})
    _load(c)
    c.wait_converged()
    c.stop()
    for node in c.nodes.values():
        node.launch()
    for node in c.nodes.values():
        node.wait_ready()
    leader = _first_leader(c)
    status = c.status(leader)
    assert status is not None and isinstance(status["shm"], dict)
    view = ShmView.attach(SegmentNames(str(status["shm"]["node"]), str(status["shm"]["token"])))
    try:
        for i in range(10):
            key = f"key{(i * 1_999) % KEYS:05d}"
            for consistency in ("strong", "leader"):
                reply = c.request(leader, {"op": "get", "key": key, "consistency": consistency},
                                  timeout_ms=10_000, retries=3)
                assert (True, int(key[3:])) == (reply.get("ok"), reply.get("value")), reply
            for nid in c.ids:  # followers too: strong reads on any node
                reply = c.request(nid, {"op": "get", "key": key, "consistency": "strong"},
                                  timeout_ms=10_000, retries=3)
                assert int(key[3:]) == reply.get("value"), (nid, reply)
            reply = c.request(leader, {"op": "put", "key": f"new{i}", "value": i},
                              timeout_ms=10_000)
            assert reply.get("ok"), reply
            # Acknowledged: in this node's shared memory already, with the loaded keys.
            assert [i, 0, KEYS - 1] == view.get_many_values([f"new{i}", "key00000",
                                                            f"key{KEYS - 1:05d}"])
        assert MISSING is view.get_value("absent")
        wait_until(lambda: c.statuses() and all(s is not None for s in c.statuses().values()),
                   20, lambda: f"statuses={c.statuses()}")
    finally:
        view.close()
