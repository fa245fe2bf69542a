"""
The end of a simulated run: heal every fault, then check progress (a leader commits a
new write), commit news (followers learn that commit within a heartbeat interval:
concord/sim/commit_news.py), convergence (every member holds the same applied state)
and the linearizability of the client history, with a final strong read of every key.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.node.driver import Consistency, ReplyStatus
from concord.sim import buggify as buggify_mod
from concord.sim.commit_news import check_commit_news
from concord.sim.linearizability import OpKind, check_history
from concord.sim.workload import Client

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation

__all__ = ["final_checks", "heal"]


def heal(sim: Simulation) -> None:
    """Faults stop, crashed members restart, clients finish, liveness is watched."""
    sim.trace("heal all")
    sim.network.heal()
    sim.clients_cut.clear()
    sim.link_faults.drop_p = 0.0
    sim.link_faults.duplicate_p = 0.0
    sim.link_faults.long_delay_p = 0.0
    buggify_mod.activate(None)
    for node in sim.nodes.values():
        if not node.alive and node.id not in sim.removed:
            node.start()
    sim.workload.stop()
    sim.liveness.start()

def final_checks(sim: Simulation) -> None:
    """Progress, convergence and linearizability once the run has healed."""
    sim.liveness.check()
    if sim.checker.violations:
        return
    deadline = sim.loop.now + sim.config.progress_deadline_ms
    # Progress: a leader exists and commits a new write.
    rid = sim._control_request("progress write")
    submitted = False
    while sim.loop.now < deadline and rid not in sim._control_results:
        leader = sim.leader()
        if leader is not None and leader.driver is not None and not submitted:
            leader.driver.submit_write(
                rid, sim.adapter.encode(OpKind.PUT, "__progress__", (1,))
            )
            leader.process()
            submitted = True
        sim.loop.run_until(sim.loop.now + 20, stop=sim._step_check)
        if rid in sim._control_results and sim._control_results[rid] is not ReplyStatus.OK:
            # Lost the leader meanwhile: try again.
            del sim._control_results[rid]
            rid = sim._control_request("progress write")
            submitted = False
    if sim.checker.violations:
        return
    if sim._control_results.get(rid) is not ReplyStatus.OK:
        sim.checker.fail("progress", "no write committed after faults healed")
        return
    # Commit news: with no writes left to carry it, heartbeats tell followers the commit.
    check_commit_news(sim)
    if sim.checker.violations:
        return
    # Let followers catch up, then compare the members' state.
    sim.loop.run_until(sim.loop.now + 500, stop=sim._step_check)
    leader = sim.leader()
    if leader is None or leader.driver is None:
        sim.checker.fail("progress", "leader lost after healing")
        return
    conf = leader.driver.conf_state
    members = [sim.nodes[m] for m in (*conf.voters, *conf.learners) if m in sim.nodes]
    states = {
        n.id: (n.driver.applied_index, n.machine.state_hash())
        for n in members
        if n.driver is not None and n.machine is not None
    }
    if len(set(states.values())) != 1:
        sim.checker.fail("convergence", f"members' (applied, hash) differ: {states} "
                          f"conf={conf}")
        return
    # Final strong reads of every key, through the leader, join the history.
    reader = Client(-1, sim.rng.fork("final-reads"), leader.id, stopped=True)
    for key in sim.workload.keys:
        reader.inflight = None
        sim.workload.invoke(reader, OpKind.GET, key, (), Consistency.STRONG, leader.id)
        end = sim.loop.now + sim.workload.config.timeout_ms + 10
        sim.loop.run_until(end, stop=lambda: reader.inflight is None)
    sim.checker.now_ms = sim.loop.now
    history = sim.workload.timed_history(sim.applied_ts, sim.lease_expiries)
    result = check_history(history, max_steps_per_key=500_000)
    sim.lin_result = result
    for verdict in result.violations:
        sim.checker.fail("linearizability", verdict.describe())
