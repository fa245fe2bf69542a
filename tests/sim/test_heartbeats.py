"""One heartbeat per follower per heartbeat interval, lease probe included (docs/architecture.md)."""

from __future__ import annotations

import pytest

from concord.raft import replication
from concord.raft.core import Raft
from concord.raft.state import Role
from concord.sim.cluster import SimConfig, Simulation


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("seed", (3, 7))
def test_lease_probe_rides_on_the_heartbeat_when_both_are_due_in_one_tick(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The driver's lease probe (a ReadIndex round every heartbeat) starts with the tick's
    heartbeat instead of a second broadcast of its own: of the leaders' heartbeat
    broadcasts, plain ones (no round) are only those before a leader has committed an
    entry of its term (a probe waits for that), not one per tick.
    """
    plain = [0]
    rounds = [0]

    def counting_bcast(r: Raft, ctx: bytes) -> None:
        assert r.role is Role.LEADER
        if ctx:
            rounds[0] += 1
        else:
            plain[0] += 1
        replication.bcast_heartbeat(r, ctx)

    monkeypatch.setattr(Raft, "_bcast_heartbeat", counting_bcast)
    config = SimConfig(seed=seed, faults=False, buggify=False, membership=False)
    result = Simulation(config).run()
    assert result.ok, [v.check for v in result.violations]
    assert rounds[0] > 50
    assert plain[0] * 10 < rounds[0], f"plain={plain[0]} rounds={rounds[0]}"
