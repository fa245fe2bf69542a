"""Restart of a whole cluster holding many keys: snapshot plus log replay, bulk publish."""

from __future__ import annotations

import pytest

from concord.shm.layout import SegmentNames
from concord.shm.view import ShmView
from tests.helpers import wait_until
from tests.integration.cluster import Cluster, as_int
from tests.integration.conftest import ClusterFactory

KEYS = 6_000
BATCH = 500


def _load(c: Cluster) -> dict[str, int]:
    """put_many KEYS keys in batches; the revision each key was acknowledged with."""
    revisions: dict[str, int] = {}
    leader = c.wait_leader()
    for lo in range(0, KEYS, BATCH):
        items = [[f"key{i:05d}", {"i": i, "pad": "x" * 64}] for i in range(lo, lo + BATCH)]
        reply = c.request(leader, {"op": "put_many", "items": items}, timeout_ms=10_000)
        assert reply.get("ok"), reply
        for key, _ in items:
            revisions[str(key)] = as_int(reply["revision"])
    return revisions


def _restart_all(c: Cluster) -> None:
    c.stop()
    for node in c.nodes.values():
        node.launch()
    for node in c.nodes.values():
        node.wait_ready()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_every_key_served_with_its_revision_when_cluster_restarts_with_many_keys(
    cluster: ClusterFactory,
) -> None:
    """A restart (snapshot by size plus a log tail) serves every acknowledged key with its
    revision, publishes shared memory in one reset (no ring slot per replayed change),
    republishes no events (earlier revisions are `compacted`), and replicas agree."""
    # snapshot_bytes well below the load: a snapshot by size, then a tail to replay.
    c = cluster(3, storage={"snapshot_entries": 100_000, "snapshot_bytes": 300_000})
    revisions = _load(c)
    last_revision = max(revisions.values())
    c.wait_converged()
    for nid in c.ids:
        assert list((c.nodes[nid].data_dir / "snap").glob("*.snap")), f"{nid} took no snapshot"
    _restart_all(c)
    leader = c.wait_leader()
    c.wait_converged()
    for nid in c.ids:
        status = c.status(nid)
        assert status is not None
        shm = status["shm"]
        assert isinstance(shm, dict)
        view = ShmView.attach(SegmentNames(str(shm["node"]), str(shm["token"])))
        try:
            wait_until(lambda: view.applied_index_now() >= last_revision, 20,
                       lambda: f"{nid} shm applied {view.applied_index_now()}")
            # Replayed changes went to shared memory in one reset: no ring slots.
            assert 0 == view.status().ring_head
            keys = sorted(revisions)
            for lo in range(0, KEYS, BATCH):
                chunk = keys[lo:lo + BATCH]
                found = view.get_many_values(chunk)
                assert [{"i": int(k[3:]), "pad": "x" * 64} for k in chunk] == found
        finally:
            view.close()
        # The change stream starts after the restart: earlier revisions are compacted.
        reply = c.request(nid, {"op": "events", "since_revision": 0})
        assert (True, last_revision) == (reply.get("compacted"), reply.get("next_revision")), reply
        reply = c.request(nid, {"op": "events", "since_revision": last_revision})
        assert [] == reply.get("events"), reply
    for key in sorted(revisions)[:: BATCH // 5]:
        reply = c.request(leader, {"op": "get", "key": key, "consistency": "strong",
                                   "meta": True})
        assert revisions[key] == reply.get("revision"), reply
    for nid in c.ids:
        assert "state hash mismatch" not in c.nodes[nid].stderr()
