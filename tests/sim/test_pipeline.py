"""Pipelined sessions in the simulator (Raft thesis §6.3): several writes of one session id
in flight, each retried with min_seq, and counter increments, checked for linearizability."""

from __future__ import annotations

import pytest

from concord.sim.cluster import SimConfig, Simulation
from concord.sim.history import OpKind, Outcome

#: CI seeds whose workload shares session ids between clients (pipeline 3, 2, 3) and whose
#: increments complete.
PIPELINED_SEEDS = (1000, 1011, 1013)


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("seed", PIPELINED_SEEDS)
def test_pipelined_sessions_stay_linearizable_when_writes_of_one_session_overlap(seed: int) -> None:
    """Writes of one session id overlap (min_seq below seq) and every check passes."""
    sim = Simulation(SimConfig(seed=seed, nodes=3))
    assert sim.workload.config.pipeline > 1
    result = sim.run()
    assert [] == result.violations, f"seed={seed}: {result.violations[0]}"
    assert sim.workload.overlapping_writes > 0
    incrs = [op for op in sim.workload.history if op.kind is OpKind.INCR and op.outcome is Outcome.OK]
    assert incrs  # counters are in the checked history too
