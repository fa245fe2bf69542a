"""
Whole-cluster crash and restart, and the liveness property.

`WholeRestart` is a nemesis program: it crashes every member at once and restarts them
all (after 10..100 ms each, each then busy recovering for 0..3 election timeouts, as a
raft worker replaying its log), at the moments that matter for recovery:

1. once a leader committed, before any member has a snapshot: every member's next life
   starts from its log alone, with a commit above what its worker reports first;
2. once every live member made a new snapshot durable in the current life (snapshots
   taken in a life that began without one);
3. after a membership change (the program asks for one, as the nemesis does) was
   applied, and then every live member made a new snapshot durable.

A stage that waits longer than `STAGE_DEADLINE_MS` (a seed without snapshots, say)
restarts anyway. The program runs in a seed chosen by its own stream, never with the
Figure 8 or lease-split programs.

`Liveness` is the property checked once faults stop (the heal): a leader is elected and a
write commits within `LIVENESS_ELECTION_TIMEOUTS` election timeouts. A cluster that
restarts into a state where no member campaigns (snapshots without a membership, issue
12 #1) fails it.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.node.driver import ReplyStatus
from concord.raft.messages import ConfState
from concord.sim.linearizability import OpKind
from concord.sim.rng import SimRandom

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation

__all__ = ["LIVENESS_ELECTION_TIMEOUTS", "Liveness", "WholeRestart"]

#: The liveness bound: election timeouts from the heal to a committed write.
LIVENESS_ELECTION_TIMEOUTS = 10
#: How long a stage of WholeRestart waits for its moment before restarting anyway.
STAGE_DEADLINE_MS = 1000
_WATCH_MS = 5


class WholeRestart:
    """The whole-cluster crash and restart program (see the module docstring)."""

    name = "whole-restart"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        self.sim = sim
        self.rng = rng
        self.stage = 1
        self.restarts = 0
        self.deadline = 0
        self._snapshots: dict[NodeId, int] = {}  # durable snapshot index at the last restart
        self._conf: ConfState | None = None  # the leader's membership when stage 3 began

    def start(self) -> None:
        self.deadline = self.sim.loop.now + STAGE_DEADLINE_MS
        self.sim.loop.after(_WATCH_MS, self._watch)

    def _members(self) -> list[NodeId]:
        return [n for n in sorted(self.sim.nodes) if n not in self.sim.removed]

    def _snapshot_index(self, node_id: NodeId) -> int:
        return self.sim.nodes[node_id].disk.durable.snapshot_index()

    def _watch(self) -> None:
        sim = self.sim
        if sim.loop.now >= sim.config.duration_ms - 600 or self.stage > 3:
            return
        leader = sim.leader()
        late = sim.loop.now >= self.deadline
        if self.stage == 1:
            if any(self._snapshot_index(n) for n in self._members()):
                self.stage = 2  # too late for a life without snapshots
                sim.trace("whole-restart: a snapshot exists, skip the restart before snapshots")
            elif late or (leader is not None and leader.driver is not None
                          and leader.driver.commit > 0):
                self._restart_all("before snapshots")
        elif self.stage == 2:
            if late or self._snapshotted():
                self._restart_all("after snapshots")
        elif self._conf is None:
            if leader is not None and leader.driver is not None:
                self._conf = leader.driver.conf_state
                sim.trace("whole-restart: ask for a membership change")
                sim._membership()
        else:
            changed = (leader is not None and leader.driver is not None
                       and leader.driver.conf_state != self._conf)
            if late or (changed and self._snapshotted()):
                self._restart_all("after a membership change")
        sim.loop.after(_WATCH_MS, self._watch)

    def _snapshotted(self) -> bool:
        """Every live member made a snapshot durable since the last whole restart."""
        alive = [n for n in self._members() if self.sim.nodes[n].alive]
        return bool(alive) and all(
            self._snapshot_index(n) > self._snapshots.get(n, 0) for n in alive)

    def _restart_all(self, moment: str) -> None:
        sim = self.sim
        members = self._members()
        sim.trace(f"whole-restart {moment}: crash {members}")
        for node_id in members:
            sim.nodes[node_id].crash()
        timeout_ms = sim.driver_config.election_ticks * sim.driver_config.tick_ms
        for node_id in members:
            # Each member is then busy recovering for up to 3 election timeouts (its
            # driver meets the ticks it missed: Driver._count_missed_ticks).
            sim.loop.after(self.rng.randint(10, 100), partial(
                sim._restart, node_id, self.rng.randint(0, 3 * timeout_ms)))
        self._snapshots = {n: self._snapshot_index(n) for n in members}
        self.restarts += 1
        self.stage += 1
        self.deadline = sim.loop.now + STAGE_DEADLINE_MS


class Liveness:
    """
    Once faults stop: a leader is elected and a write commits within
    `LIVENESS_ELECTION_TIMEOUTS` election timeouts (the probe writes through whichever
    node leads, again after each failed try).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.healed_at: int | None = None
        self.live_at: int | None = None
        self._rid: int | None = None
        self._target: tuple[NodeId, int] = (NodeId(""), 0)  # (node, incarnation) of the try
        cfg = sim.driver_config
        self.bound_ms = LIVENESS_ELECTION_TIMEOUTS * cfg.election_ticks * cfg.tick_ms

    def start(self) -> None:
        """The faults stopped now."""
        self.healed_at = self.sim.loop.now
        self._probe()

    def _probe(self) -> None:
        sim = self.sim
        if self.live_at is not None:
            return
        if self._rid is not None:
            status = sim._control_results.pop(self._rid, None)
            if status is ReplyStatus.OK:
                self.live_at = sim.loop.now
                return
            if status is not None:
                self._rid = None  # failed (lost leadership, dropped): try again
            elif self._target != _life(sim, self._target[0]):
                # NB: the node it went to crashed (a program still running may crash it
                # after the heal): its request is lost and no reply will come.
                self._rid = None
        leader = sim.leader()
        if self._rid is None and leader is not None and leader.driver is not None:
            self._target = (leader.id, leader.incarnation)
            self._rid = sim._control_request("liveness write")
            leader.driver.submit_write(
                self._rid, sim.adapter.encode(OpKind.PUT, "__liveness__", (1,)))
            leader.process()
        sim.loop.after(_WATCH_MS, self._probe)

    def check(self) -> None:
        """Run on until the bound if need be; a violation if nothing committed by then."""
        sim = self.sim
        assert self.healed_at is not None
        deadline = self.healed_at + self.bound_ms
        if self.live_at is None and sim.loop.now < deadline:
            sim.loop.run_until(deadline, stop=lambda: self.live_at is not None or sim._step_check())
        if self.live_at is None or self.live_at > deadline:
            when = "never" if self.live_at is None else f"at {self.live_at}"
            sim.checker.fail(
                "liveness",
                f"no leader committed a write within {LIVENESS_ELECTION_TIMEOUTS} election "
                f"timeouts ({self.bound_ms} ms) of the heal at {self.healed_at} (first: {when})")


def _life(sim: Simulation, node_id: NodeId) -> tuple[NodeId, int]:
    """(node, incarnation) while the node runs; its incarnation 0 when down or gone."""
    node = sim.nodes.get(node_id)
    if node is None or node.driver is None:
        return (node_id, 0)
    return (node_id, node.incarnation)
