"""
A Client with its default settings across SIGKILL of the leader of a real 3-node cluster:
the next write succeeds on the new leader, and the client noticed the dead connection
instead of waiting out an attempt there (docs/client.md "Dead nodes").
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from concord.client import Client
from concord.shm.layout import node_part
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
        try:
            c.nodes[old].kill_tree()
            revision = client.put("fo:after", "kill")
        finally:
            remove_ipc_dirs(c, old)
        transport = client.transport
        assert 0 == transport.reopens  # no attempt on the dead node was waited out
        assert 1 == transport.dropped
        assert client.leader not in (None, old_leader)
        got = client.get("fo:after", consistency="strong", meta=True)
        assert ("kill", revision) == (got.value, got.revision)
        assert list(range(5)) == [client.get(f"fo:{i}", consistency="strong") for i in range(5)]


def remove_ipc_dirs(c: Cluster, node_id: str) -> None:
    """The ipc folders of the node's SIGKILLed supervisors (their cleanup never ran)."""
    for spid in c.nodes[node_id].killed_supervisors:
        for folder in Path(tempfile.gettempdir()).glob(f"concord-{node_part(node_id)}-{spid}x*"):
            shutil.rmtree(folder, ignore_errors=True)
