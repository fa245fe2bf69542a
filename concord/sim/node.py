"""
One simulated node: the production `Driver` around the real `RawNode` and the production
node core (`concord.node.core.NodeCore`: shared-memory publishing and resync, the read
lease, durable snapshots, learner promotion, membership requests), over a fake disk with
the production writer core (`SimLogWriter`), fake shared memory (`SimShm`) and the fake
network. It feeds them the raft worker's events in the raft worker's order. Crash and
restart rebuild everything but the disk (and, half of the time, shared memory: the raft
worker restarted alone).

Pure: time, randomness and IO are the simulator's.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from functools import partial
from collections.abc import Callable

from concord.errors import CompactedError, StorageError, UnavailableError
from concord.ids import NodeId
from concord.node.core.effects import TakeSnapshot
from concord.node.core.node import ConfChangeSnapshots, NodeCore, NodeView
from concord.node.core.snapshots import SnapshotPolicy, SnapshotSchedule
from concord.node.driver import Driver, DriverConfig, Reply, StateMachine, load_memory_storage
from concord.node.promotion import LeaderView
from concord.raft.config import RaftConfig
from concord.raft.messages import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMeta
from concord.raft.rawnode import RawNode
from concord.raft.state import Role
from concord.raft.storage import MemoryStorage
from concord.sim.buggify import buggify
from concord.sim.checks import Config, SafetyChecker
from concord.sim.disk import FakeDisk, SimLogWriter
from concord.sim.loop import EventLoop, Timer
from concord.sim.network import Network
from concord.sim.rng import SimRandom
from concord.sim.shm import SimShm, carry_out, publish

__all__ = ["ObservedStorage", "SimNode"]

# The cores' log lines stay out of the way of a many-seed run (--trace turns them on).
_raft_logger = logging.getLogger("concord.sim.raft")
_raft_logger.propagate = False
_raft_logger.setLevel(logging.CRITICAL)


class ObservedStorage(MemoryStorage):
    """
    A MemoryStorage that reports every append to the safety checker, and has the checker
    look over every stored entry when a snapshot replaces the log.
    """

    def __init__(self, node: NodeId, checker: SafetyChecker, conf_state: ConfState) -> None:
        super().__init__(conf_state)
        self._node = node
        self._checker = checker

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        ents = [e for e in entries if e.index >= self.first_index()]
        prev: int | None = None
        if ents:
            try:
                prev = self.term(ents[0].index - 1)
            except (CompactedError, UnavailableError):
                prev = None  # compacted or beyond: the predecessor is unknown
        super().append(entries)
        if ents:
            self._checker.on_append(self._node, prev, ents)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        super().apply_snapshot(snapshot)
        self._checker.check_stored(self._node, self, self.hard_state.commit)


class SimNode:
    """
    A node of the simulated cluster.

    Args:
        node_id: its id.
        bootstrap: the initial membership (empty for a node added later).
        loop, network, checker: the shared world.
        rng: this node's stream (forked per incarnation for the core's jitter).
        machine_factory: makes a fresh state machine.
        raft_config, driver_config: settings.
        on_reply: where client replies go (the workload).
        fsync_ms: fake-disk latency range.
        new_request_id: ids for the node core's own proposals (distinct from the
            workload's and the nemesis').
    """

    def __init__(
        self,
        node_id: NodeId,
        bootstrap: ConfState,
        loop: EventLoop,
        network: Network,
        checker: SafetyChecker,
        rng: SimRandom,
        machine_factory: Callable[[], StateMachine],
        raft_config: RaftConfig,
        driver_config: DriverConfig,
        on_reply: Callable[[NodeId, Reply], None],
        fsync_ms: tuple[int, int],
        trace: Callable[[str], None],
        new_request_id: Callable[[], int] | None = None,
    ) -> None:
        self.id = node_id
        self.bootstrap = bootstrap
        self.loop = loop
        self.network = network
        self.checker = checker
        self.rng = rng
        self.disk = FakeDisk()
        self.machine_factory = machine_factory
        self.raft_config = raft_config
        self.driver_config = driver_config
        self.on_reply = on_reply
        self.fsync_ms = fsync_ms
        self.trace = trace
        self.incarnation = 0
        self.logger = logging.getLogger(f"concord.sim.raft.{node_id}")
        self.alive = False
        self.driver: Driver | None = None
        #: The core the driver runs (nemesis programs look at its timers).
        self.raw: RawNode | None = None
        self.machine: StateMachine | None = None
        self.storage: ObservedStorage | None = None
        self.writer: SimLogWriter | None = None
        #: The production node core of this incarnation, and the shared memory it writes.
        self.core: NodeCore | None = None
        self.shm = SimShm()
        self.restored = False  # a snapshot from the leader replaced the state
        #: The leader's expiry proposal (the core's ProposeExpiry): TTLs and leases due.
        self.expiry_command: Callable[[StateMachine, int], bytes | None] = _no_expiry
        self._resets = 0  # ResyncShm effects carried out (the last one's reset counts)
        self._reset_rng = rng.fork("shm-reset")
        self._conf_snapshots = ConfChangeSnapshots()
        self._new_request_id = new_request_id or _local_ids()
        self._tick_timer: Timer | None = None
        self._processing = False
        self._outbox: list[Message] = []
        self._last_commit = 0
        self._was_leader = False
        self.paused_until = 0
        self._deferred: list[tuple[bool, Callable[[], None]]] = []
        #: Called when this node became leader (True) or, as leader, advanced its commit
        #: index (False), before the step's messages are sent (a nemesis hook).
        self.on_leader_step: Callable[[SimNode, bool], None] | None = None
        #: Called with every entry this node applies.
        self.on_apply: Callable[[Entry], None] | None = None
        #: Every node of the cluster (the simulation's map): whose disks hold what.
        self.cluster: dict[NodeId, SimNode] = {}
        self._conf_before: Config = (frozenset(), frozenset())
        #: Senders of HEARTBEAT_RESP per read-round context, in `_acks_term`.
        self._read_acks: dict[bytes, set[NodeId]] = {}
        self._acks_term = 0
        self._checked_commit = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, startup_ms: int = 0) -> None:
        """
        Start (or restart) from what the disk holds. With `startup_ms`, the node is then
        busy that long (a raft worker replaying its log): it handles nothing until then,
        and its driver meets the ticks it missed at its first tick.
        """
        self.incarnation += 1
        recovered = self.disk.recover()
        storage = ObservedStorage(self.id, self.checker, self.bootstrap)
        loaded = load_memory_storage(storage, recovered)
        machine = self.machine_factory()
        if recovered.snapshot is not None and not recovered.snapshot.is_empty:
            machine.restore(recovered.snapshot.data)
            self.checker.on_snapshot_applied(
                self.id, recovered.snapshot.meta.index, recovered.snapshot.meta.term
            )
        raw = RawNode(
            self.raft_config if self.raft_config.logger is not None
            else replace(self.raft_config, logger=self.logger),
            storage,
            self.rng.fork(f"raft/{self.incarnation}"),
        )
        writer = SimLogWriter(
            self.loop,
            self.disk,
            self.rng.fork(f"disk/{self.incarnation}"),
            self._persisted,
            self.fsync_ms,
        )
        driver = self._build_driver(raw, storage, writer, machine)
        self.storage, self.machine, self.driver, self.writer = storage, machine, driver, writer
        self.raw = raw
        self._conf_snapshots.drain()
        self.restored = False
        # As the raft worker starts (RaftWorker.__init__ and run): attach shared memory,
        # then one round before the first Ready (the recovered membership's peers).
        # The knob is the node's durable snapshot interval ([storage] snapshot_entries);
        # the driver itself snapshots only after membership changes, as in the raft worker.
        every = self.driver_config.snapshot_every_entries
        self.core = NodeCore(self.id, self._new_request_id, self.shm.applied_index,
                             loaded.commit, SnapshotSchedule(
                                 SnapshotPolicy(every if every < 1 << 62 else 0, 0),
                                 recovered.snapshot.meta if recovered.snapshot else None))
        carry_out(self, self.core.on_start(self.view()))
        carry_out(self, self.core.after_ready(self.view()))
        self.alive = True
        self._conf_before = self._conf()
        self._read_acks, self._acks_term = {}, 0
        self._checked_commit = storage.hard_state.commit
        self.checker.check_stored(self.id, storage, storage.hard_state.commit)
        self.network.register(self.id, self._receive)
        tick = self.driver_config.tick_ms
        self._tick_timer = self.loop.after(self.rng.randint(1, tick), self._tick)
        if startup_ms > 0:
            self.pause(self.loop.now + startup_ms)
        self.trace(f"start {self.id} inc={self.incarnation} "
                   f"snap={recovered.snapshot.meta.index if recovered.snapshot else 0} "
                   f"hs={recovered.hard_state.term}/{recovered.hard_state.commit} "
                   f"ents={len(recovered.entries)}")

    def _build_driver(self, raw: RawNode, storage: ObservedStorage, writer: SimLogWriter,
                      machine: StateMachine) -> Driver:
        """The production driver over this incarnation's core, log, writer and machine."""
        hard_state, conf_state = storage.initial_state()
        return Driver(
            self.id,
            raw,
            storage,
            self,
            writer,
            self,
            machine,
            self._reply,
            replace(self.driver_config, snapshot_every_entries=1 << 62),
            conf_state,
            hard_state,
            snapshot_sink=self._conf_snapshots,
            applied_observer=self._applied,
            snapshot_observer=self._snapshot_installed,
        )

    def crash(self) -> None:
        """Stop now: lose memory and unsynced writes (maybe tearing the last one)."""
        if not self.alive:
            return
        self.alive = False
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        if self.writer is not None:
            self.writer.dead = True
        self.network.unregister(self.id)
        self.disk.crash(self.rng.fork(f"crash/{self.incarnation}"))
        if not self.rng.fork(f"shm/{self.incarnation}").chance(0.5):
            self.shm = SimShm()  # the whole node restarted: fresh segments
        self._outbox = []
        self._was_leader = False
        self.paused_until = 0
        self._deferred = []
        self.driver = None
        self.machine = None
        self.storage = None
        self.writer = None
        self.core = None
        self.trace(f"crash {self.id}")

    # -- the world's view of the driver and the node core -----------------------------------

    def view(self) -> NodeView:
        """The node core's view of the driver (RaftWorker._view)."""
        d = self.driver
        assert d is not None
        assert self.storage is not None
        return NodeView(d.term, d.leader_id, d.role, d.commit, d.applied_index, d.applied_term,
                        d.lease_until_ms, d.conf_state, self.restored,
                        applied_bytes=d.stats.entry_bytes_applied,
                        durable_index=self.storage.last_index())

    def take_snapshot(self, effect: TakeSnapshot) -> None:
        """
        The node core's TakeSnapshot, as the raft worker's forked child: the state now
        (the fork's copy-on-write view), written by the disk after a while.
        """
        assert self.machine is not None and self.writer is not None
        snapshot = Snapshot(effect.meta, self.machine.snapshot())
        incarnation = self.incarnation
        self.trace(f"snapshot start {self.id} index={effect.meta.index}")

        def done(ok: bool) -> None:
            if self.incarnation != incarnation or self.driver is None:
                return
            if self.frozen():
                self._defer(partial(done, ok))
                return
            assert self.core is not None
            self.core.on_snapshot_done(self.view(), ok)
            if ok:
                self._snapshot_written(snapshot)
            else:
                self.trace(f"snapshot failed {self.id} index={effect.meta.index}")

        self.writer.write_snapshot(snapshot, done)

    def begin_reset(self, applied: int) -> None:
        """
        A ResyncShm: the reset at `applied` is published 0..2 ticks later (the raft
        worker builds it in steps between the turns of its loop), unless the node
        crashed or began another meanwhile; then the node core hears it and runs a round
        (the changes applied since are published).
        """
        self._resets += 1
        token = (self.incarnation, self._resets)
        delay = self._reset_rng.randint(0, 2 * self.driver_config.tick_ms)
        self.loop.after(delay, partial(self._reset_published, token, applied))

    def _reset_published(self, token: tuple[int, int], applied: int) -> None:
        if token != (self.incarnation, self._resets) or not self.alive or self.core is None:
            return  # crashed, or another reset replaced this one
        if self.frozen():
            self._defer(partial(self._reset_published, token, applied))
            return
        publish(self, applied)
        self.shm.resets += 1
        self.trace(f"shm reset {self.id} applied={applied}")
        self.core.on_reset_published()
        self.process()

    def _reply(self, reply: Reply) -> None:
        """The driver's reply callback: the core's own proposals stop here."""
        if self.core is not None and self.core.on_reply(reply.request_id):
            return
        self.on_reply(self.id, reply)

    def member_change(self, op: str, member: NodeId, request_id: int,
                      learner: bool | None = None) -> None:
        """A membership request at this node (the raft worker's add/remove/promote_member)."""
        assert self.core is not None and self.driver is not None
        core, conf = self.core, self.driver.conf_state
        if op == "add_member":
            effects = core.add_member(self.view(), member, learner, request_id)
        elif op == "remove_member":
            effects = core.remove_member(conf, member, request_id)
        else:
            effects = core.promote_member(conf, member, request_id)
        carry_out(self, effects)

    def now_ms(self) -> int:
        """Clock: virtual time."""
        return self.loop.now

    def send(self, msg: Message) -> None:
        """Transport: into the outbox, flushed to the network at the end of the step."""
        self._outbox.append(msg)

    def _flush(self) -> None:
        """
        Hand this step's messages to the network in a canonical order.

        NB: the core builds its progress map from sets of node ids, so the order of its
        messages within one step depends on PYTHONHASHSEED; sorting them here keeps the
        network's random draws (and so the whole run) a function of the seed alone.
        """
        if not self._outbox:
            return
        out, self._outbox = self._outbox, []
        out.sort(key=lambda m: (m.to, m.type, m.index, m.term))
        hs = self.disk.durable.hard_state
        for msg in out:
            if msg.type is MessageType.VOTE_RESP and not msg.reject:
                self.checker.check_vote_durable(self.id, msg.to, msg.term, hs.term, hs.vote)
            if buggify("node.drop_send"):
                continue  # a legal loss
            self.network.send(msg)

    # -- pauses (a stopped process: a GC pause, SIGSTOP, a VM migration) ------------------

    def pause(self, until_ms: int) -> None:
        """Freeze the node: it handles nothing (messages, ticks, acks) until `until_ms`."""
        if self.alive:
            self.paused_until = max(self.paused_until, until_ms)
            self.trace(f"pause {self.id} until={until_ms}")

    def frozen(self) -> bool:
        return self.loop.now < self.paused_until

    def _defer(self, call: Callable[[], None], client: bool = False) -> None:
        """Run `call` when the pause ends, unless the node crashed meanwhile."""
        if not self._deferred:
            incarnation = self.incarnation
            self.loop.at(self.paused_until, partial(self._resume, incarnation))
        self._deferred.append((client, call))

    def _resume(self, incarnation: int) -> None:
        """
        The pause ends: handle what queued up. NB: a resumed process may poll its client
        socket before its peer socket, so half the time client requests go first (a
        deposed leader then meets them before the news of its deposition).
        """
        calls, self._deferred = self._deferred, []
        if self.incarnation != incarnation or not self.alive:
            return
        if self.frozen():  # paused again meanwhile
            for client, call in calls:
                self._defer(call, client)
            return
        if self.rng.random() < 0.5:
            calls = [c for c in calls if c[0]] + [c for c in calls if not c[0]]
        for _, call in calls:
            if self.alive and self.incarnation == incarnation:
                call()

    def submit(self, call: Callable[[], None]) -> None:
        """A client request arrives: handle it now, or when a pause ends."""
        if self.frozen():
            self._defer(call, client=True)
        else:
            call()

    def _receive(self, msg: Message) -> None:
        if self.driver is None:
            return
        if self.frozen():
            self._defer(partial(self._receive, msg))
            return
        self.trace(f"msg {msg.frm}>{msg.to} {msg.type.name} t{msg.term} i{msg.index}")
        core = self.raw.raft if self.raw is not None else None
        rounds: list[bytes] = []
        if core is not None and core.role is Role.LEADER:
            # NB: only acks of the leader's own term count (the core drops a stale
            # response of an older term, whose round numbers restart each term); a stale
            # one must not reset what this term's acks were.
            if msg.type is MessageType.HEARTBEAT_RESP and msg.context and msg.term == core.term:
                if core.term != self._acks_term:
                    self._read_acks, self._acks_term = {}, core.term
                self._read_acks.setdefault(msg.context, set()).add(msg.frm)
            rounds = list(core.read_only.rounds)
        read_only = core.read_only if core is not None else None
        term = core.term if core is not None else 0
        conf_before = self._conf_before
        self.driver.on_message(msg)
        self.process()
        if rounds and core is not None and core.read_only is read_only:
            released = [ctx for ctx in rounds if ctx not in core.read_only.rounds]
            if released:
                # Rounds are released in order up to the one confirmed, the last here.
                acks = {self.id}
                if term == self._acks_term:
                    acks |= self._read_acks.get(released[-1], set())
                self.checker.check_read_quorum(
                    self.id, term, acks, [conf_before, self._conf()]
                )

    def _tick(self) -> None:
        if self.driver is None:
            return
        if self.frozen():
            self._defer(self._tick)
            return
        self.driver.on_tick()
        self._core_tick()
        self.process()
        self._tick_timer = self.loop.after(self.driver_config.tick_ms, self._tick)

    def _core_tick(self) -> None:
        """The node core's tick (RaftWorker._on_tick), after the driver's."""
        driver, raw, core = self.driver, self.raw, self.core
        assert driver is not None and raw is not None and core is not None
        if driver.role is Role.LEADER:
            status = raw.status()
            leader = LeaderView(driver.term, True, status.conf_state, status.committed,
                                {member: pr.match for member, pr in status.progress.items()})
        else:
            leader = LeaderView(driver.term, False, driver.conf_state, driver.commit, {})
        carry_out(self, core.on_tick(self.view(), leader, self.loop.now))

    def _persisted(self, number: int) -> None:
        if self.driver is None:
            return
        if self.frozen():
            self._defer(partial(self._persisted, number))
            return
        self.driver.on_persisted(number)
        self.process()

    def _snapshot_written(self, snapshot: Snapshot) -> None:
        if self.driver is None:
            return
        if self.frozen():
            self._defer(partial(self._snapshot_written, snapshot))
            return
        self.driver.on_snapshot_written(snapshot.meta, snapshot.data)
        self.trace(f"snapshot {self.id} index={snapshot.meta.index}")

    def _snapshot_installed(self, meta: SnapshotMeta) -> None:
        self.checker.on_snapshot_applied(self.id, meta.index, meta.term)
        if self.core is not None and self.driver is not None:
            self.core.on_snapshot_installed(meta, self.driver.stats.entry_bytes_applied)
        self.restored = True
        self.trace(f"install {self.id} index={meta.index} term={meta.term}")

    def _applied(self, entry: Entry) -> None:
        assert self.driver is not None
        self.checker.on_apply(self.id, entry, self.driver.term)
        if self.on_apply is not None:
            self.on_apply(entry)

    def _conf(self) -> Config:
        """The core's configuration now (its two halves)."""
        if self.raw is None:
            return (frozenset(), frozenset())
        config = self.raw.raft.tracker.config
        return (frozenset(config.voters), frozenset(config.voters_outgoing))

    def _check_commit_quorum(self, configs: list[Config]) -> None:
        """
        A leader's new commit index is durable on a majority of (each half of) the
        configuration it was decided in, one of `configs`.
        """
        assert self.raw is not None
        core = self.raw.raft
        index = core.log.committed
        if core.role is not Role.LEADER:
            self._checked_commit = index  # a leader is held to the commits it decides
            return
        if index <= self._checked_commit:
            return
        self._checked_commit = index
        try:
            term = core.log.term(index)
        except StorageError:
            return  # compacted meanwhile: an earlier step checked it
        holders = {n for n, node in self.cluster.items() if node.disk.durable.holds(index, term)}
        self.checker.check_commit_quorum(self.id, core.term, index, holders, configs)

    def process(self) -> None:
        """Run the driver's Ready loop, then the per-step safety checks."""
        driver = self.driver
        if driver is None or self._processing:
            return
        self._processing = True
        conf_before = self._conf_before
        # NB: a step decides commits in the configuration it started with; applying a
        # membership change (in process_ready) may commit more in the next one.
        if self.cluster:
            self._check_commit_quorum([conf_before])
        try:
            driver.process_ready()
            # As the raft worker's loop: the node core's round, then the snapshots
            # taken after a membership change handed back as written.
            assert self.core is not None
            carry_out(self, self.core.after_ready(self.view()))
            for meta in self._conf_snapshots.drain():
                driver.on_snapshot_written(meta)
        finally:
            self._processing = False
        self._conf_before = self._conf()
        if self.cluster:
            self._check_commit_quorum([conf_before, self._conf_before])
        if driver.role is Role.LEADER:
            self.checker.on_leader(self.id, driver.term)
            became = not self._was_leader
            advanced = driver.commit > self._last_commit
            self._was_leader, self._last_commit = True, driver.commit
            if (became or advanced) and self.on_leader_step is not None:
                # NB: before the flush: the nemesis may crash the node right here, and
                # then this step's messages never leave (a legal crash point).
                self.on_leader_step(self, became)
                if self.driver is None:
                    return
        else:
            self._was_leader, self._last_commit = False, driver.commit
        self._flush()

    @property
    def is_leader(self) -> bool:
        return self.driver is not None and self.driver.role is Role.LEADER


def _no_expiry(machine: StateMachine, now_ms: int) -> bytes | None:
    return None


def _local_ids() -> Callable[[], int]:
    """Request ids for a node built without the simulation's counter (tests)."""
    return itertools.count(1 << 50).__next__
