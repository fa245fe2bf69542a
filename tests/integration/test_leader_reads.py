"""`leader` reads at a new leader before its first lease round (ReadIndex, not no_leader)."""

from __future__ import annotations

import time

import pytest

from concord.client.local import shm_names
from concord.raft.state import Role
from concord.shm.view import ShmView
from tests.helpers import wait_until
from tests.integration.cluster import Cluster
from tests.integration.conftest import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A lease probe every 5 ticks (250 ms): a new leader runs that long without a lease.
RAFT = {"tick_ms": 50, "election_ticks": 20, "heartbeat_ticks": 5}


def reads_until_lease(c: Cluster, target: str, view: ShmView, key: str) -> int:
    """
    Read `key` at `target` with `leader` consistency until its lease shows in shared
    memory; every read made while `target` led must be answered with the value. Returns
    how many were answered while no lease was published (before the first lease round).
    """
    unleased = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        before = view.current_status()
        reply = c.request(target, {"op": "get", "key": key, "consistency": "leader"},
                          timeout_ms=3000)
        after = view.current_status()
        lease_ns = view.lease_until_ns()
        led = Role.LEADER == before.role == after.role and before.term == after.term
        if led:
            assert (True, 1) == (reply["ok"], reply.get("value")), reply
            if lease_ns == 0:
                unleased += 1
            else:
                return unleased
    raise AssertionError(f"{target} held no lease within 10 s: {c.status(target)}")


@pytest.mark.timeout(120)
def test_leader_reads_are_served_when_new_leader_has_no_lease_yet(
    cluster: ClusterFactory,
) -> None:
    """Right after a leader change, leader reads at the new leader succeed at once."""
    c = cluster(3, raft=RAFT)
    leader = c.wait_leader()
    assert c.request(leader, {"op": "put", "key": "k", "value": 1})["ok"]
    c.wait_converged()
    unleased = 0
    for _ in range(5):  # until a few reads fell before the first lease round
        leader = c.wait_leader()
        target = next(n for n in c.ids if n != leader)
        status = c.status(target)
        assert status is not None
        names = shm_names(status)
        assert names is not None
        with ShmView.attach(names) as view:
            reply = c.request(leader, {"op": "transfer_leader", "member_id": target})
            assert reply["ok"], reply
            wait_until(lambda: Role.LEADER == view.current_status().role, 10,
                       lambda: f"statuses={c.statuses()}")
            unleased += reads_until_lease(c, target, view, "k")
        if unleased >= 3:
            return
    raise AssertionError(f"only {unleased} reads came before a first lease round")
