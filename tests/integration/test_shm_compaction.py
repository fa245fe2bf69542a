"""The raft worker compacts the shared-memory arena once overwrites left it mostly dead."""

from __future__ import annotations

import os

import msgpack
import pytest

from concord.shm.layout import SegmentNames
from concord.shm.segments import DEV_SHM
from concord.shm.view import ShmView
from tests.helpers import wait_until
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(90)
def test_shm_arena_shrinks_when_overwrites_left_it_mostly_dead(cluster: ClusterFactory) -> None:
    """
    3 MB of overwrites of 50 keys: within shm_compaction.INTERVAL_S the node compacts (in
    steps, between its other work), the live generation shrinks to about the live data,
    and a reader attached throughout rebuilds and reads every key's last value.
    """
    c = cluster(1)
    node = c.wait_leader()
    status = c.status(node)
    assert status is not None
    shm = status["shm"]
    assert isinstance(shm, dict)
    names = SegmentNames(str(shm["node"]), str(shm["token"]))
    view = ShmView.attach(names)
    try:
        for round_ in range(60):
            items = [[f"k{i}", f"{round_}:" + "v" * 1000] for i in range(50)]
            reply = c.request(node, {"op": "put_many", "items": items})
            assert reply.get("ok") is True, reply
        st = view.status()
        before = os.path.getsize(os.path.join(DEV_SHM, names.gen(st.live_gen)))
        assert before > 3_000_000, before

        def compacted() -> bool:
            s = view.status()
            try:
                size = os.path.getsize(os.path.join(DEV_SHM, names.gen(s.live_gen)))
            except FileNotFoundError:  # replaced since the status read: ask again
                return False
            return s.lineage_gen != st.lineage_gen and size < 200_000

        wait_until(compacted, 60, "the shm arena was not compacted")
        assert view.rebuilds >= 2  # the attach, and the new lineage
        expected = [msgpack.packb("59:" + "v" * 1000) for _ in range(50)]
        assert expected == view.get_many_encoded([f"k{i}" for i in range(50)])
        reply = c.request(node, {"op": "get", "key": "k7", "consistency": "eventual"})
        assert "59:" + "v" * 1000 == reply.get("value"), reply
    finally:
        view.close()
