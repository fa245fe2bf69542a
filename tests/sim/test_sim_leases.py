"""KV leases in whole simulated runs: the workload exercises them and the checker catches a
lease mistake planted in the state machine (docs/simulation.md "Clients", "Planted bugs")."""

from __future__ import annotations

from collections import Counter

import pytest

import concord.kv.machine as kv_machine
from concord.kv.commands import LeaseRevoke
from concord.kv.leases import DeleteKeys, LeaseCommand, LeaseTable, apply_lease_command
from concord.kv.record import Change
from concord.sim.cluster import SimConfig, Simulation
from concord.sim.history import NOT_FOUND, OpKind, Outcome

#: A 3-node CI seed whose history revokes a lease holding keys (bench/sim_plants.py).
REVOKE_SEED = 1016


@pytest.mark.sim
@pytest.mark.slow
def test_lease_operations_reach_the_history_when_a_seed_runs() -> None:
    """Grants, keepalives, revokes, leased puts (some refused) and expire entries are checked."""
    sim = Simulation(SimConfig(seed=REVOKE_SEED, nodes=3))
    assert [] == sim.run().violations
    history = sim.workload.timed_history(sim.applied_ts, sim.lease_expiries)
    ok = Counter(op.kind for op in history if op.outcome is Outcome.OK)
    refused = Counter(op.kind for op in history if op.result == NOT_FOUND)
    leased = [op for op in history if op.kind is OpKind.PUT and len(op.args) > 2]
    assert all(ok[kind] for kind in (OpKind.LEASE_GRANT, OpKind.LEASE_KEEPALIVE,
                                     OpKind.LEASE_REVOKE, OpKind.LEASE_EXPIRE)), ok
    assert refused and leased
    assert any(op.kind is OpKind.LEASE_REVOKE and op.result for op in history)


@pytest.mark.sim
@pytest.mark.slow
def test_revoke_that_keeps_the_keys_is_caught_when_planted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plant kv_lease_revoke_keeps_keys in-process: the revoked lease's key is read later."""
    def keeps_keys(table: LeaseTable, command: LeaseCommand, index: int, ts: int,
                   delete: DeleteKeys) -> tuple[dict[str, object], list[Change]]:
        if isinstance(command, LeaseRevoke):
            table.live(command.lease, ts)
            table.remove(command.lease)
            return {"deleted": 0}, []
        return apply_lease_command(table, command, index, ts, delete)

    monkeypatch.setattr(kv_machine, "apply_lease_command", keeps_keys)
    planted = Simulation(SimConfig(seed=REVOKE_SEED, nodes=3)).run()
    assert ["linearizability"] == [v.check for v in planted.violations]


@pytest.mark.sim
@pytest.mark.slow
def test_liveness_probe_tries_again_when_the_node_it_wrote_to_crashed() -> None:
    """Seed 1107: the divergent-snapshot program crashes the leader 25 ms after the heal,
    with the probe's write on it; the probe must try the next leader, not wait forever."""
    assert [] == Simulation(SimConfig(seed=1107, nodes=3)).run().violations


@pytest.mark.sim
@pytest.mark.slow
def test_unanswered_writes_no_node_applied_leave_the_history_when_it_is_checked() -> None:
    """An unknown session write without a timestamp took no effect: the checker never sees it
    (one fewer "maybe" for the search); unknown writes some node applied stay, timed."""
    sim = Simulation(SimConfig(seed=REVOKE_SEED, nodes=3))
    sim.run()
    sessions = sim.workload.sessions
    recorded = [sessions[i] for i, op in enumerate(sim.workload.history)
                if op.outcome is Outcome.UNKNOWN and i in sessions]
    assert any(s not in sim.applied_ts for s in recorded)
    assert any(s in sim.applied_ts for s in recorded)
    checked = sim.workload.timed_history(sim.applied_ts, sim.lease_expiries)
    unknown = [op for op in checked if op.outcome is Outcome.UNKNOWN]
    assert unknown and all(op.ts is not None for op in unknown)
