"""The whole-cluster restart program and the liveness property (issue 12 #1)."""

from __future__ import annotations

from functools import partial

import pytest

from concord.node.core.node import NodeCore, NodeView
from concord.node.core.snapshots import AppliedPoint
from concord.raft.messages import ConfState
from concord.sim.cluster import SimConfig, Simulation

#: A CI seed (3 nodes) that runs the whole-restart program.
SEED = 1082
#: A CI seed (3 nodes, run unpipelined) that runs the whole-restart program and, with the
#: membership decision of issue 12 #1 planted, ends with no leader. Chosen again (it was
#: 1082) when followers stopped getting commit-only appends: the restarts fall at
#: other moments.
PLANT_SEED = 1097


def _loses_the_membership(view: NodeView) -> AppliedPoint:
    """The defect of issue 12 #1, planted where snapshots now take their membership: a
    snapshot without one (an empty voter list)."""
    return AppliedPoint(view.applied_index, view.applied_term, ConfState(),
                        view.applied_bytes, view.durable_index)


@pytest.mark.sim
@pytest.mark.slow
def test_seed_restarts_the_whole_cluster_and_stays_live_when_it_runs_the_program() -> None:
    """The seed crashes every member at once before and after snapshots and after a
    membership change; a leader commits a write within the liveness bound of the heal."""
    sim = Simulation(SimConfig(seed=SEED, nodes=3))
    result = sim.run()
    assert [] == [v.describe() for v in result.violations]
    assert 3 == result.stats["whole_restarts"]
    assert sim.liveness.live_at is not None and sim.liveness.healed_at is not None
    assert sim.liveness.live_at - sim.liveness.healed_at <= sim.liveness.bound_ms


@pytest.mark.sim
@pytest.mark.slow
def test_liveness_fails_when_snapshots_lose_the_membership(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the defect planted in the node core (the simulated nodes run it), the
    restarted cluster has no voter: the liveness check fails (the simulator catches
    issue 12 #1)."""
    monkeypatch.setattr(NodeCore, "_point", staticmethod(_loses_the_membership))
    result = Simulation(SimConfig(seed=PLANT_SEED, nodes=3, pipeline=1)).run()
    assert ["liveness"] == [v.check for v in result.violations]


def _restart_rounds(seed: int, rounds: int) -> tuple[int, list[int]]:
    """
    A fault-free 3-node cluster, crashed whole and restarted `rounds` times, each member
    after 10..100 ms and then busy recovering for 1..3 election timeouts: for each round,
    the ms from the moment a quorum of members finished starting to the first leader
    (and the election timeout, ms).
    """
    sim = Simulation(SimConfig(seed=seed, nodes=3, faults=False, buggify=False, membership=False))
    timeout_ms = sim.driver_config.election_ticks * sim.driver_config.tick_ms
    rng = sim.rng.fork("test/restarts")
    for node in sim.nodes.values():
        node.start()
    waits = []
    for _ in range(rounds):
        sim.loop.run_until(sim.loop.now + 20 * timeout_ms, stop=lambda: sim.leader() is not None)
        assert sim.leader() is not None
        for node in sim.nodes.values():
            node.crash()
        ends = []
        for node_id in sim.nodes:
            delay, busy = rng.randint(10, 100), rng.randint(timeout_ms, 3 * timeout_ms)
            sim.loop.after(delay, partial(sim._restart, node_id, busy))
            ends.append(sim.loop.now + delay + busy)
        quorum_up = sorted(ends)[1]
        sim.loop.run_until(sim.loop.now + 20 * timeout_ms, stop=lambda: sim.leader() is not None)
        assert sim.leader() is not None
        assert [] == [v.describe() for v in sim.checker.violations]
        waits.append(sim.loop.now - quorum_up)
    return timeout_ms, waits


@pytest.mark.sim
@pytest.mark.slow
def test_a_whole_cluster_busy_recovering_elects_a_leader_within_an_election_timeout_of_a_quorum_up() -> None:
    """Ticks missed while recovering count toward the first election (the initial
    election tick advance): every round elects a leader within one election timeout
    (plus messages and fsyncs) of a quorum finishing start-up, not after a whole new
    randomised timeout."""
    timeout_ms, waits = _restart_rounds(11, 12)
    assert max(waits) <= timeout_ms + 40, waits
