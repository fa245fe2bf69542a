"""
A Client with its default settings across SIGKILL of the leader of a real 3-node cluster:
the next write succeeds on the new leader, and the client noticed the dead connection
instead of waiting out an attempt there (docs/client.md "Dead nodes").
"""

from __future__ import annotations

import pytest

from concord.client import Client
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(120)
def test_next_write_acknowledged_by_new_leader_when_leader_killed(cluster: ClusterFactory) -> None:
    """SIGKILL of the leader's whole process tree: the write after it is acknowledged by the
    new leader, its attempt on the dead node ended by the dropped connection (no Lazy
    Pirate socket reopen, which only a waited-out attempt causes), and nothing is lost."""
    c = cluster(3)
    endpoints = [c.nodes[n].client for n in c.ids]
    with Client(endpoints, shm=False, timeout_s=20.0) as client:
        for i in range(5):
            client.put(f"fo:{i}", i)
        old_leader = client.leader
        assert old_leader is not None
        [old] = [n for n in c.ids if c.nodes[n].client == old_leader]
        c.nodes[old].kill_tree()  # the cluster fixture removes what it left
        revision = client.put("fo:after", "kill")
        transport = client.transport
        assert 0 == transport.reopens  # no attempt on the dead node was waited out
        # NB: two connections to the dead node: its client endpoint (the status probe)
        # and its direct endpoint, where the writes went (concord.client.direct).
        assert 2 == transport.dropped
        assert client.leader not in (None, old_leader)
        got = client.get("fo:after", consistency="strong", meta=True)
        assert ("kill", revision) == (got.value, got.revision)
        assert list(range(5)) == [client.get(f"fo:{i}", consistency="strong") for i in range(5)]

