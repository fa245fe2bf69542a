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
- `VoteCrash`: crash between vote and persist. The leader is isolated, so the others
  campaign; the moment a voter V holds a vote for another node that is not yet on its
  disk (its fsync takes >= 1 ms), V crashes, losing it, and restarts; the
  candidate and the voters that gave it their vote are cut from the rest, where V may
  campaign in the same term (its disk holds an older one). A vote must not leave V
  before it is durable (`vote_durable`), or V votes twice in one term and two leaders
  of that term follow (election safety).
- `MinorityReads`: reads at a leader partitioned from a majority of its voters (it keeps
  only a minority: itself, fewer than half of the others, and a learner, added first if
  there is none and a spare node is left). Strong reads keep arriving
  at the old leader L until it steps down, and once the majority side elects a leader, a
  fresh write goes through it: no ReadIndex round may be released at L without a voter
  majority (`read_quorum`), and no read at L may miss the write (linearizability).

While a program runs the random nemesis holds still (`Simulation.program_running`).
Pure: time and randomness are the simulation's.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.node.driver import Consistency
from concord.raft.messages import ConfChange, ConfChangeSingle, ConfChangeType
from concord.sim.linearizability import OpKind
from concord.sim.rng import SimRandom
from concord.sim.workload import Client

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation
    from concord.sim.node import SimNode

__all__ = ["DivergentSnapshot", "JointReplace", "MinorityReads", "VoteCrash", "replace_change"]

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
        self.sides: tuple[list[NodeId], list[NodeId]] = ([], [])

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

    def _split(self, side: list[NodeId]) -> None:
        """Cut `side` from the rest, and keep it cut (`_hold`) until the program ends."""
        self.sides = (side, [n for n in self.sim.nodes if n not in side])
        self.sim.network.partition(*self.sides)

    def _hold(self) -> None:
        """Cut the sides again if a heal the nemesis scheduled before the program ran."""
        a, b = self.sides
        if a and b and not self.sim.network.is_blocked(a[0], b[0]):
            self.sim.trace(f"{self.name} split {a} again")
            self.sim.network.partition(a, b)

    def _end(self, why: str, again: bool) -> None:
        sim = self.sim
        sim.trace(f"{self.name} {why}: heal")
        self.sides = ([], [])
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
            self.learner = sim.add_learner(leader, stays=True)
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


class VoteCrash(_Program):
    """See the module docstring."""

    name = "vote-crash"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        super().__init__(sim, rng)
        self.old: NodeId | None = None
        self.voter: NodeId | None = None
        self.crashed = False

    def _try(self) -> bool:
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.driver is None or self._voters(leader) is None:
            return False
        self.old, self.voter, self.crashed = leader.id, None, False
        # The others campaign; their votes are watched every ms, and a vote is in memory
        # only for its fsync (>= 1 ms). NB: no stalled disk: it would hold the voters'
        # pre-vote answers too, and then nobody is elected.
        self._split([leader.id])
        sim.trace(f"{self.name} {leader.id} isolated")
        sim.loop.after(1, self._watch)
        return True

    def _watch(self) -> None:
        sim = self.sim
        if sim.loop.now >= self.deadline:
            self._end("done" if self.crashed else "gave up", again=not self.crashed)
            return
        self._hold()
        if not self.crashed:
            for node_id, node in sorted(sim.nodes.items()):
                core = node.raw.raft if node.alive and node.raw is not None else None
                if node_id == self.old or node_id in sim.removed or core is None:
                    continue
                durable = node.disk.durable.hard_state
                if core.vote not in (None, node_id) and (durable.term, durable.vote) != (
                    core.term, core.vote
                ):
                    # Crash now, after the step that granted it: a vote answered before
                    # its fsync has left.
                    assert core.vote is not None
                    self.voter, self.crashed = node_id, True
                    self._crash(core.term, core.vote)
                    return
        sim.loop.after(1, self._watch)

    def _crash(self, term: int, candidate: NodeId) -> None:
        """
        V loses its vote for `candidate` in `term`; then `candidate` and the voters that
        gave it their vote in `term` are cut from the rest, which holds V and the old
        leader. The rest reaches a majority only if V's vote counts twice: V may
        campaign in `term` again (its disk holds an older term) and win it.
        """
        sim = self.sim
        assert self.voter is not None
        node = sim.nodes[self.voter]
        sim.trace(f"{self.name} crash {self.voter} before its term-{term} vote for "
                  f"{candidate} is durable")
        node.crash()
        sim.loop.after(1, partial(sim._restart, self.voter))
        side = sorted({candidate} | {
            n for n, peer in sim.nodes.items()
            if n != self.voter and n not in sim.removed and peer.alive
            and peer.raw is not None
            and (peer.raw.raft.term, peer.raw.raft.vote) == (term, candidate)
        })
        sim.network.heal()
        self._split(side)
        # NB: V's answer may still be on its way: V -> candidate stays open (its later
        # messages to the candidate's side change nothing: they hear a leader).
        sim.network.unblock(self.voter, candidate)
        sim.trace(f"{self.name} split {side} from the rest ({self.voter}->{candidate} open)")
        sim.loop.after(1, self._watch)


class MinorityReads(_Program):
    """See the module docstring."""

    name = "minority-reads"

    def __init__(self, sim: Simulation, rng: SimRandom) -> None:
        super().__init__(sim, rng)
        self.old: NodeId | None = None
        self.learner: NodeId | None = None
        self.minority: list[NodeId] = []
        self.key = ""
        self.wrote = False
        self.reads = 0
        self.writer = Client(102, rng.fork("writer"), NodeId(""), stopped=True)
        self.reader = Client(103, rng.fork("reader"), NodeId(""), stopped=True)

    def _try(self) -> bool:
        sim = self.sim
        leader = sim.leader()
        if leader is None or leader.driver is None or sim._conf_change_busy:
            return False
        voters = self._voters(leader)
        if voters is None:
            return False
        learners = sorted(
            n for n in leader.driver.conf_state.learners
            if sim.nodes[n].alive and n not in sim.removed
        )
        self.old, self.wrote, self.reads, self.minority = leader.id, False, 0, []
        # A learner on L's side: with three voters, L and a learner are the one shape in
        # which counting every heartbeat answer reaches "half the voters".
        if learners:
            self.learner = learners[0]
        elif sim.spares:
            self.learner = sim.add_learner(leader, stays=True)
        else:
            self.learner = None
        sim.trace(f"{self.name} leader={leader.id} learner={self.learner}")
        sim.loop.after(1, self._wait_learner)
        return True

    def _wait_learner(self) -> None:
        sim = self.sim
        assert self.old is not None
        leader = sim.nodes[self.old]
        if sim.loop.now >= self.deadline or not leader.is_leader or leader.driver is None:
            self._end("gave up", again=True)
            return
        learner = sim.nodes[self.learner] if self.learner is not None else None
        if learner is not None and (
            self.learner not in leader.driver.conf_state.learners
            or learner.storage is None
            or learner.storage.last_index() < leader.driver.commit
        ):
            sim.loop.after(5, self._wait_learner)  # not added, or not caught up yet
            return
        voters = self._voters(leader)
        if voters is None:
            self._end("gave up", again=True)
            return
        others = [v for v in voters if v != self.old]
        self.rng.shuffle(others)
        # L and fewer than half of the others: (n - 1) // 2 voters, a minority, plus the
        # learner (its answers to L's heartbeats must not count toward a read round).
        side = [self.old, *others[: (len(voters) - 1) // 2 - 1]]
        self.minority = sorted(side + ([self.learner] if self.learner is not None else []))
        self.key = self.rng.choice(sim.workload.keys)
        self._split(self.minority)
        sim.trace(f"{self.name} {self.old} keeps only {self.minority}; reads of {self.key}")
        sim.loop.after(1, self._watch)

    def _watch(self) -> None:
        sim = self.sim
        assert self.old is not None
        old = sim.nodes[self.old]
        if sim.loop.now >= self.deadline:
            self._end("done" if self.reads else "gave up", again=not self.reads)
            return
        self._hold()
        if self.reader.inflight is None and old.is_leader:
            self.reads += 1
            sim.workload.invoke(
                self.reader, OpKind.GET, self.key, (), Consistency.STRONG, self.old
            )
        if not self.wrote:
            new = next(
                (n for n in sim.nodes.values() if n.is_leader and n.id not in self.minority),
                None,
            )
            if new is not None:
                self.wrote = True
                sim.trace(f"{self.name} new leader {new.id}: write {self.key}")
                sim.workload.invoke(
                    self.writer, OpKind.PUT, self.key, (778_000_000 + sim.loop.now,), None,
                    new.id,
                )
        if (
            self.wrote
            and self.writer.inflight is None
            and not old.is_leader
            and self.reader.inflight is None
        ):
            self._end("done", again=False)
            return
        sim.loop.after(2, self._watch)
