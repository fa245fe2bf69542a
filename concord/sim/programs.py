"""
Nemesis programs that steer a run into a shape random faults rarely reach (like the
Figure 8 and lease-split programs of `cluster.py`), each aimed at a class of bugs:

- `JointReplace`: joint-consensus member replacement under a partition. A learner S
  catches up; the leader L proposes {add S as voter, remove voter V} (joint consensus,
  thesis §4.3); the step in which L applies the joint entry, before its messages leave,
  the cluster splits into L, S and fewer than a majority of the old voters (an incoming
  majority) against the rest (an outgoing majority that has not learned the entry
  committed). Nothing may commit on L's side while the outgoing half cannot acknowledge.
- `DivergentSnapshot`: a follower F receives a burst of entries only from a leader L
  that nobody else hears (F's acknowledgements are cut too, so nothing commits), then L
  is isolated; the others elect L2, which commits a burst of writes, snapshots and
  compacts past F's divergence; F rejoins and must install L2's snapshot over its
  conflicting log, dropping every entry after the snapshot index.

While a program runs the random nemesis holds still (`Simulation.program_running`).
Pure: time and randomness are the simulation's.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.raft.messages import ConfChange, ConfChangeSingle, ConfChangeType
from concord.sim.rng import SimRandom

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation
    from concord.sim.node import SimNode

__all__ = ["DivergentSnapshot", "JointReplace", "replace_change"]

#: Give up a try after this long (another try follows while the run lasts).
_TRY_MS = 2000
#: Writes of the divergent-snapshot program: the follower's divergent suffix must
#: reach past the snapshot the new leader sends (it snapshots every 10 entries).
_DIVERGE_BURST = 40
_CONVERGE_BURST = 15


def replace_change(add: NodeId, remove: NodeId) -> ConfChange:
    """Promote learner `add` and remove voter `remove` in one joint-consensus change."""
    return ConfChange((
        ConfChangeSingle(ConfChangeType.ADD_VOTER, add),
        ConfChangeSingle(ConfChangeType.REMOVE, remove),
    ))


class _Program:
    """A try loop: `start` until `_try` begins, `_end` heals and maybe tries again."""

    name = "program"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        self.sim = sim
        self.rng = rng
        self.deadline = 0
        self.done = False

    def start(self) -> None:
        sim = self.sim
        if self.done or sim.loop.now >= sim.config.duration_ms - 800:
            return
        if sim.program_running or not self._try():
            sim.loop.after(100, self.start)
            return
        sim.program_running = True
        self.deadline = sim.loop.now + _TRY_MS

    def _try(self) -> bool:
        raise NotImplementedError

    def _end(self, why: str, again: bool) -> None:
        sim = self.sim
        sim.trace(f"{self.name} {why}: heal")
        sim.network.heal()
        sim.program_running = False
        if again:
            sim.loop.after(self.rng.randint(100, 300), self.start)
        else:
            self.done = True

    def _voters(self, leader: SimNode) -> list[NodeId] | None:
        """The leader's voters if all are up and the configuration is simple, else None."""
        assert leader.driver is not None
        conf = leader.driver.conf_state
        sim = self.sim
        if conf.voters_outgoing or len(conf.voters) < 3:
            return None
        if any(not sim.nodes[v].alive or v in sim.removed for v in conf.voters):
            return None
        return sorted(conf.voters)


class JointReplace(_Program):
    """See the module docstring."""

    name = "joint-replace"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        super().__init__(sim, rng)
        self.leader: NodeId | None = None
        self.learner: NodeId | None = None
        self.victim: NodeId | None = None
        self.split = False

    def _try(self) -> bool:
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.driver is None or sim._conf_change_busy:
            return False
        voters = self._voters(leader)
        learners = sorted(
            n for n in leader.driver.conf_state.learners
            if sim.nodes[n].alive and n not in sim.removed
        )
        if voters is None or (not learners and not sim.spares):
            return False
        self.leader, self.split = leader.id, False
        self.victim = self.rng.choice([v for v in voters if v != leader.id])
        if learners:
            self.learner = learners[0]
        else:
            self.learner = sim.add_learner(leader)
        sim.trace(f"{self.name} leader={self.leader} learner={self.learner} "
                  f"victim={self.victim}")
        sim.loop.after(1, self._wait_learner)
        return True

    def _wait_learner(self) -> None:
        sim = self.sim
        assert self.leader is not None and self.learner is not None
        leader, learner = sim.nodes[self.leader], sim.nodes[self.learner]
        if sim.loop.now >= self.deadline or not leader.is_leader or leader.driver is None:
            self._end("gave up", again=True)
            return
        conf = leader.driver.conf_state
        if sim._conf_change_busy:
            sim.loop.after(5, self._wait_learner)
            return
        if self.learner not in conf.learners:
            # The change was dropped (say, the leader had one pending): again.
            cc = ConfChange.add_learner(self.learner)
            sim.submit_conf_change(leader, cc, "add_learner")
            sim.loop.after(5, self._wait_learner)
            return
        if (
            learner.storage is None
            or learner.storage.last_index() < leader.driver.commit
        ):
            sim.loop.after(5, self._wait_learner)
            return
        assert self.victim is not None
        sim.trace(f"{self.name} propose replace {self.victim} by {self.learner}")
        sim.leader_step_hooks.append(self._on_leader_step)
        sim.submit_conf_change(leader, replace_change(self.learner, self.victim), "replace")
        sim.loop.after(1, self._watch)

    def _on_leader_step(self, node: SimNode, became_leader: bool) -> bool:
        """Split the cluster the step the leader applies the joint entry (before sends)."""
        if self.split or node.id != self.leader or node.driver is None:
            return False
        conf = node.driver.conf_state
        if not conf.voters_outgoing:
            return False
        sim = self.sim
        self.split = True
        old = sorted(conf.voters_outgoing)
        assert self.learner is not None
        others = [v for v in old if v not in (node.id, self.victim)]
        self.rng.shuffle(others)
        # L and S plus len(old)//2 - 1 old voters: a majority of the incoming half (S
        # replaces V), one short of a majority of the outgoing half.
        side_a = sorted([node.id, self.learner, *others[: len(old) // 2 - 1]])
        side_b = sorted(n for n in sim.nodes if n not in side_a)
        sim.trace(f"{self.name} split {side_a} | {side_b} conf={conf}")
        sim.network.partition(side_a, side_b)
        sim.loop.after(self.rng.randint(300, 700), self._heal)
        return True

    def _watch(self) -> None:
        if self.split:
            return
        if self.sim.loop.now >= self.deadline:
            self._stop("no joint configuration", again=True)
            return
        self.sim.loop.after(5, self._watch)

    def _heal(self) -> None:
        assert self.victim is not None
        self.sim.loop.after(1500, partial(self.sim._retire, self.victim))
        self._stop("done", again=False)

    def _stop(self, why: str, again: bool) -> None:
        hooks = self.sim.leader_step_hooks
        if self._on_leader_step in hooks:
            hooks.remove(self._on_leader_step)
        self._end(why, again)


class DivergentSnapshot(_Program):
    """See the module docstring."""

    name = "divergent-snapshot"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        super().__init__(sim, rng)
        self.old: NodeId | None = None
        self.follower: NodeId | None = None
        self.new: NodeId | None = None
        self.base = 0
        self.cut = False

    def _try(self) -> bool:
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.driver is None or leader.storage is None:
            return False
        voters = self._voters(leader)
        if voters is None:
            return False
        follower = self.rng.choice([v for v in voters if v != leader.id])
        self.old, self.follower, self.new, self.cut = leader.id, follower, None, False
        self.base = leader.storage.last_index()
        # L's disk stalls (L counts itself only once durable), L and F are cut from the
        # rest: F acknowledges L's burst, and still nothing commits.
        leader.disk.stalled_until = sim.loop.now + 500
        pair = [leader.id, follower]
        sim.network.partition(pair, [n for n in sim.nodes if n not in pair])
        sim.trace(f"{self.name} {leader.id} (disk stalled) with {follower} alone")
        sim.burst(leader, _DIVERGE_BURST, "diverge")
        sim.loop.after(1, self._watch)
        return True

    def _watch(self) -> None:
        sim = self.sim
        assert self.old is not None and self.follower is not None
        follower = sim.nodes[self.follower]
        if sim.loop.now >= self.deadline or follower.storage is None:
            self._end("gave up", again=True)
            return
        if self.new is None:
            self._diverge(follower)
            return
        new = sim.nodes[self.new]
        if new.storage is None or not new.is_leader:
            self._end("lost the new leader", again=True)
            return
        if new.storage.first_index() <= self.base + 2:
            sim.loop.after(5, self._watch)  # not compacted past F's divergence yet
            return
        if follower.storage.first_index() > self.base + 2:
            self._end("done", again=False)
            return
        if sim.network.partitions:
            # L2 compacted past F's divergence: F rejoins and needs a snapshot.
            sim.trace(f"{self.name} {self.follower} rejoins "
                      f"(snapshot index {new.storage.first_index() - 1})")
            sim.network.heal()
        sim.loop.after(5, self._watch)

    def _diverge(self, follower: SimNode) -> None:
        """Until F holds a long suffix: then L crashes (losing it), F is cut off."""
        sim = self.sim
        assert self.old is not None and self.follower is not None and follower.storage
        old = sim.nodes[self.old]
        if not self.cut:
            long_enough = self.base + 3 * _DIVERGE_BURST // 4
            if follower.storage.last_index() < long_enough and old.is_leader:
                sim.loop.after(1, self._watch)
                return
            sim.trace(f"{self.name} crash {self.old}, cut {self.follower} off")
            self.cut = True
            old.disk.stalled_until = 0
            old.crash()
            sim.network.heal()
            sim.network.isolate(self.follower, list(sim.nodes))
            sim.loop.after(1, partial(sim._restart, self.old))
        new = next(
            (n for n in sim.nodes.values() if n.is_leader and n.id != self.follower), None
        )
        if new is None:
            sim.loop.after(5, self._watch)
            return
        self.new = new.id
        sim.trace(f"{self.name} new leader {new.id}: burst")
        sim.burst(new, _CONVERGE_BURST, "converge")
        sim.loop.after(5, self._watch)
