"""The simulator runs the production node core: its effects are checked, its plants caught."""

from __future__ import annotations

import pytest

from concord.ids import NodeId
from concord.node.core import node as node_core
from concord.node.core.effects import DropChanges, Effect, ResyncShm
from concord.node.core.node import NodeCore, NodeView
from concord.sim.cluster import SimConfig, Simulation

#: CI seeds (3 nodes) that catch the plants below at their first occurrence.
SHM_SEED = 1001
LEASE_SEED = 1017
#: A CI seed (3 nodes) whose nemesis adds a learner that asks for auto-promotion.
PROMOTION_SEED = 1002


def _resync_ignoring_shm(self: NodeCore, view: NodeView) -> Effect:
    """The plant `shm_resync_backwards`: resync once the replay is done, whatever shm holds."""
    if view.applied_index < self.replay_until:
        return DropChanges()
    first, self.shm_synced, self.shm_applied = not self.shm_synced, True, view.applied_index
    return ResyncShm(view.applied_index, first)


def _lease_before_apply(view: NodeView) -> int:
    """The plant `lease_before_apply`: the lease is published before the commit is applied."""
    return -1 if view.applied_term != view.term else view.lease_until_ms


@pytest.mark.sim
@pytest.mark.slow
def test_shm_backwards_fires_when_a_restarted_worker_resyncs_before_catching_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarted node keeps its shm half of the time: resyncing early moves it backwards."""
    assert Simulation(SimConfig(seed=SHM_SEED, nodes=3, pipeline=1)).run().ok
    monkeypatch.setattr(node_core.NodeCore, "_resync", _resync_ignoring_shm)
    planted = Simulation(SimConfig(seed=SHM_SEED, nodes=3, pipeline=1)).run()
    assert ["shm_backwards"] == [v.check for v in planted.violations][:1]


@pytest.mark.sim
@pytest.mark.slow
def test_lease_publish_fires_when_the_lease_is_published_before_the_commit_is_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read workers must not get a lease while shm lacks committed entries."""
    config = SimConfig(seed=LEASE_SEED, nodes=3, pipeline=1, leases=False)  # the seed's moment
    assert Simulation(config).run().ok
    monkeypatch.setattr(node_core.NodeCore, "_lease_ms", staticmethod(_lease_before_apply))
    planted = Simulation(config).run()
    assert ["lease_publish"] == [v.check for v in planted.violations][:1]


@pytest.mark.sim
@pytest.mark.slow
def test_learner_is_promoted_by_the_node_core_when_the_seed_adds_one_for_promotion() -> None:
    """The nemesis' add_member without `learner: true` ends with the core's ADD_VOTER."""
    sim = Simulation(SimConfig(seed=PROMOTION_SEED, nodes=3, trace=True))
    result = sim.run()
    assert [] == [v.describe() for v in result.violations]
    promoted = [line.split()[3] for line in result.trace_lines if " core promote " in line]
    assert [NodeId("n4")] == promoted
    leader = sim.leader()
    assert leader is not None and leader.driver is not None
    assert NodeId("n4") in leader.driver.conf_state.voters
