"""A 3-node cluster: election, every op through every node at every consistency level."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(90)
def test_every_node_serves_reads_and_writes_when_three_nodes_run(cluster: ClusterFactory) -> None:
    """Writes go to the leader; reads at every level are served (or redirected) everywhere."""
    c = cluster(3)
    leader = c.wait_leader()
    followers = [n for n in c.ids if n != leader]
    reply = c.request(followers[0], {"op": "put", "key": "k", "value": 1})
    assert "not_leader" == reply["error"]
    assert c.nodes[leader].client == reply["leader"]
    assert reply == reply
    put = c.request(leader, {"op": "put", "key": "k", "value": {"a": [1, 2]}})
    assert True is put["ok"]
    for nid in c.ids:
        strong = c.request(nid, {"op": "get", "key": "k", "consistency": "strong"})
        assert {"a": [1, 2]} == strong["value"], nid
