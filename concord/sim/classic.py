"""
The simulator's two oldest nemesis programs, steering a run into a known dangerous shape:

- `Figure8`: the Raft paper's Figure 8 (a leader's old-term entries committed by
  counting replicas, then overwritten);
- `LeaseSplit`: a leader keeps serving `leader` reads under its lease while a new
  leader is elected on the other side of a partition (or after a transfer or a restart).

concord/sim/cluster.py decides per seed whether one runs (docs/simulation.md). The newer
programs live in concord/sim/programs.py and concord/sim/restarts.py.

Pure: time and randomness are the simulator's.
"""

from __future__ import annotations

from enum import Enum
from functools import partial
from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.node.driver import Consistency
from concord.raft.state import Role
from concord.sim import buggify as buggify_mod
from concord.sim.linearizability import OpKind
from concord.sim.rng import SimRandom
from concord.sim.workload import Client

if TYPE_CHECKING:
    from concord.sim.cluster import Simulation
    from concord.sim.node import SimNode

__all__ = ["Figure8", "LeaseSplit", "Stage"]


class Figure8:
    """
    A nemesis program that steers the cluster into the Raft paper's Figure 8 shape.

    1. isolate the leader A (it keeps appending client writes no one else has);
    2. the majority elects B: isolate B before its first messages leave (its term's
       no-op stays on B), then crash B and heal the network;
    3. A is elected again and replicates its old-term entries; the moment A advances
       its commit index, crash A before that step's messages leave, and restart B;
    4. B may now win an election (its last term is higher than the others').
    A correct core commits nothing of A's old term before A's own no-op is on a
    majority, so step 4 cannot overwrite a committed entry; a core that commits
    old-term entries by counting replicas does (state-machine safety fires).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.stage = 0
        self.a: NodeId | None = None
        self.b: NodeId | None = None

    def start(self) -> None:
        leader = self.sim.leader()
        if leader is None or len(self.sim.nodes) < 3:
            return
        self.a = leader.id
        self.stage = 1
        self.sim.trace(f"figure8 isolate A={self.a}")
        self.sim.network.isolate(leader.id, list(self.sim.nodes))

    def on_leader_step(self, node: SimNode, became_leader: bool) -> bool:
        sim = self.sim
        if self.stage == 1 and became_leader and node.id != self.a:
            self.b = node.id
            self.stage = 2
            sim.trace(f"figure8 isolate B={self.b}")
            sim.network.isolate(node.id, list(sim.nodes))
            sim.loop.after(30, self._crash_b)
            return True
        if self.stage == 3 and not became_leader and node.id == self.a:
            self.stage = 4
            sim.trace(f"figure8 crash A={self.a} at commit, restart B={self.b}")
            node.crash()
            b = self.b
            assert b is not None
            sim.loop.after(5, partial(sim._restart, b))
            sim.loop.after(400, partial(sim._restart, node.id))
            return True
        return self.stage in (2, 3)

    def _crash_b(self) -> None:
        sim = self.sim
        assert self.b is not None
        sim.nodes[self.b].crash()
        sim.network.heal()
        self.stage = 3
        sim.trace("figure8 crashed B, healed")
        # Give up if A never leads again.
        sim.loop.after(1500, self._give_up)

    def _give_up(self) -> None:
        if self.stage == 3:
            self.stage = 5
            if self.b is not None:
                self.sim._restart(self.b)


class Stage(Enum):
    """Where a `_LeaseSplit` program is."""

    IDLE = 0  # not started (or no leader with a lease yet)
    DRAIN = 1  # clients cut from L: waiting for F to hold all of L's log
    SPLIT = 2  # L -> F cut: waiting for F to campaign
    TRANSFERRING = 8  # L asked to hand leadership to F: waiting for a leader other than L
    ELECTING = 3  # everyone -> L cut: waiting for a leader other than L
    WRITING = 4  # a fresh write through the new leader
    WRITTEN = 5  # acknowledged: the read starts at the next watch
    READING = 6  # a `leader` read at L
    DONE = 7  # healed


class LeaseSplit:
    """
    A nemesis program aimed at leader leases (thesis §6.4.1): elect a new leader while the
    old one still holds its read lease, and read at the old one.

    1. Leader L holds a lease. Clients lose their way to L (their requests to it are
       dropped; peers still reach it), so its log stops growing; once a voter F holds
       all of L's log, cut L -> F one way: F stops hearing L and campaigns with an
       up-to-date log, while the other voters still hear L and keep renewing its lease.
    2. The moment F (pre-)campaigns, the others' messages to L are cut too (L must not
       learn of a new term). With `restart`, one tick before F's election timer fires,
       the other voters crash and restart at once and stop hearing L: they no longer
       remember granting L's lease, and F's (pre-)votes find them just restarted.
    3. If F (or anyone but L) still wins, a program client writes a fresh value through
       the new leader and, once acknowledged, reads it with `leader` consistency at L.
    In the transfer variant (half of the tries, drawn from the program's "mode" stream),
    step 2 is a leadership transfer instead: once F holds all of L's log, F -> L is cut
    and L is asked to transfer leadership to F (TimeoutNow: F's election overrides the
    voters' lease), and every other voter's messages to L are cut the moment it reaches
    a term above L's, so L never learns of the new term while the others keep answering
    its heartbeats of the old one. A correct L holds no lease from the start of the
    transfer (node/driver.py), so its `leader` read takes a ReadIndex round that no
    quorum confirms; a lease renewed by a probe in flight, or sent while the transfer
    was pending, answers with the old value.
    Buggify losses are off from step 1 until the program ends (the window is a few tens
    of ms; the seed's network faults still apply), and a try that fails (no leader with
    a lease, the leader lost, no new leader in 1.5 s) is made again while the run lasts.
    A correct node never lets stage 3 happen while L's lease runs: voters that hear a
    leader refuse votes (check-quorum leases), and a restarted voter holds its vote for
    an election timeout (it may have granted a lease before the crash). A stale answer
    at L is then a linearizability violation.
    """

    def __init__(self, sim: Simulation, rng: SimRandom, restart: bool) -> None:
        self.sim = sim
        self.rng = rng
        self.restart = restart
        self.restarted = False
        self.paused_buggify: buggify_mod.Buggify | None = None
        self.stage = Stage.IDLE
        self.l: NodeId | None = None
        self.f: NodeId | None = None
        self.deadline = 0
        self.key = ""
        self.writer = Client(100, rng.fork("writer"), NodeId(""), stopped=True)
        self.reader = Client(101, rng.fork("reader"), NodeId(""), stopped=True)
        # NB: its own stream, so that the link-cut tries keep the draws they had.
        self.mode_rng = rng.fork("mode")
        self.transfer = False

    def start(self) -> None:
        sim = self.sim
        if sim.loop.now >= sim.config.duration_ms - 600:
            return
        leader = sim.leader()
        if leader is None or leader.driver is None or not leader.driver.lease_valid:
            sim.loop.after(50, self.start)  # wait for a leader with a lease
            return
        voters = [
            v for v in leader.driver.conf_state.voters
            if v != leader.id and v not in sim.removed and sim.nodes[v].alive
        ]
        if len(voters) < 2:
            sim.loop.after(50, self.start)  # wait for the other voters to be up
            return
        self.l, self.f = leader.id, self.rng.choice(sorted(voters))
        self.restarted = False
        self.transfer = self.mode_rng.chance(0.5)
        # The window is a few tens of ms wide: no buggify losses inside it (a dropped
        # vote reply alone would close it). Network faults of the seed still apply.
        state = buggify_mod.active()
        if state is not None and state.enabled:
            state.enabled = False
            self.paused_buggify = state
        self.stage = Stage.DRAIN
        self.deadline = sim.loop.now + 1500
        sim.trace(
            f"lease-split clients cut from {self.l} restart={self.restart} "
            f"transfer={self.transfer}"
        )
        sim.clients_cut.add(self.l)
        sim.loop.after(1, self._watch)

    def _watch(self) -> None:
        sim = self.sim
        l, f = self.l, self.f
        assert l is not None and f is not None
        if sim.loop.now >= self.deadline:
            self._end("gave up")
            return
        if self.stage is Stage.DRAIN:
            if not self._watch_drain(l, f):
                return
        elif self.stage is Stage.SPLIT:
            self._watch_split(l, f)
        elif self.stage is Stage.ELECTING:
            self._write_through_new_leader()
        elif self.stage is Stage.TRANSFERRING:
            self._cut_new_terms()
            self._write_through_new_leader()
        elif self.stage is Stage.WRITING:
            if self.writer.inflight is None:
                # The read starts strictly after the write was acknowledged (the next
                # watch, 1 ms on): real-time order makes a stale answer a violation.
                self.stage = Stage.WRITTEN
        elif self.stage is Stage.WRITTEN:
            self.stage = Stage.READING
            sim.trace(f"lease-split leader read of {self.key} at {l}")
            rid = sim.workload.invoke(
                self.reader, OpKind.GET, self.key, (), Consistency.LEADER, l
            )
            sim.clients_cut_exempt.add(rid)
        elif self.stage is Stage.READING:
            if self.reader.inflight is None:
                self._end("done")
                return
        sim.loop.after(1, self._watch)

    def _watch_drain(self, l: NodeId, f: NodeId) -> bool:
        """Once F holds all of L's log: cut L -> F, or ask L to transfer (False: ended)."""
        sim = self.sim
        leader, follower = sim.nodes[l], sim.nodes[f]
        if not leader.is_leader or leader.storage is None:
            self._end("lost the leader")
            return False
        if (
            follower.storage is not None
            and follower.storage.last_index() == leader.storage.last_index()
        ):
            if self.transfer:
                self._start_transfer(leader)
            else:
                self.stage = Stage.SPLIT
                sim.trace(
                    f"lease-split block {l}->{f} at index {leader.storage.last_index()}"
                )
                sim.network.block(l, f)
        return True

    def _watch_split(self, l: NodeId, f: NodeId) -> None:
        """Crash and restart the other voters (restart variant); when F campaigns, cut L off."""
        sim = self.sim
        node = sim.nodes[f]
        core = node.raw.raft if node.raw is not None else None
        if (
            self.restart
            and not self.restarted
            and core is not None
            and core.election_elapsed >= core.randomized_election_timeout - 1
        ):
            self.restarted = True
            for other in sorted(sim.nodes):
                peer = sim.nodes[other]
                if other not in (l, f) and peer.alive and other not in sim.removed:
                    sim.trace(f"lease-split crash and restart {other}, cut {l}->{other}")
                    sim.network.block(l, other)
                    peer.crash()
                    sim.loop.after(1, partial(sim._restart, other))
        if node.driver is not None and node.driver.role in (
            Role.PRE_CANDIDATE, Role.CANDIDATE
        ):
            self.stage = Stage.ELECTING
            sim.trace(f"lease-split {f} campaigns: cut everyone -> {l}")
            for other in sim.nodes:
                if other != l:
                    sim.network.block(other, l)

    def _write_through_new_leader(self) -> None:
        """Step 3: once anyone but L leads, write a fresh value through it."""
        sim = self.sim
        new = next((n for n in sim.nodes.values() if n.is_leader and n.id != self.l), None)
        if new is None:
            return
        self.stage = Stage.WRITING
        key = self.rng.choice(sim.workload.keys)
        self.key = key
        sim.trace(f"lease-split new leader {new.id}: write {key}")
        sim.workload.invoke(
            self.writer, OpKind.PUT, key, (777_000_000 + sim.loop.now,), None, new.id
        )

    def _start_transfer(self, leader: SimNode) -> None:
        """The transfer variant's step 2: cut F -> L and ask L to hand over to F."""
        sim, f = self.sim, self.f
        assert f is not None and leader.driver is not None
        self.stage = Stage.TRANSFERRING
        sim.trace(f"lease-split transfer {leader.id}->{f}: cut {f}->{leader.id}")
        sim.network.block(f, leader.id)
        leader.driver.transfer_leader(f)
        leader.process()

    def _cut_new_terms(self) -> None:
        """Cut every node that reached a term above L's from L (L must not learn it)."""
        sim, l = self.sim, self.l
        assert l is not None
        old = sim.nodes[l]
        if old.driver is None:
            return
        for other, node in sorted(sim.nodes.items()):
            if (
                other != l
                and node.driver is not None
                and node.driver.term > old.driver.term
                and not sim.network.is_blocked(other, l)
            ):
                sim.trace(f"lease-split {other} is at term {node.driver.term}: cut {other}->{l}")
                sim.network.block(other, l)

    def _end(self, why: str) -> None:
        sim = self.sim
        self.stage = Stage.DONE
        sim.trace(f"lease-split {why}: heal")
        sim.network.heal()
        sim.clients_cut.clear()
        if self.paused_buggify is not None:
            self.paused_buggify.enabled = True
            self.paused_buggify = None
        if why != "done":  # another try while the run lasts (start() checks the time)
            self.stage = Stage.IDLE
            sim.loop.after(self.rng.randint(100, 300), self.start)
