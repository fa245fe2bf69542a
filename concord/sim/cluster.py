"""
One deterministic simulation run: a cluster of `SimNode`s, a fake network, clients, a
nemesis, and the checkers. Everything derives from one seed.

Phases of a run:
1. chaos (`duration_ms`): clients run while the nemesis crashes and restarts nodes,
   partitions (two-way, one-way, isolating the leader), clogs, transfers leadership and
   changes membership (add a learner, promote it, remove a voter); the network drops,
   duplicates, delays and reorders; buggify sites misbehave. Safety invariants are
   checked after every step.
2. heal: faults stop, crashed members restart, clients finish.
3. checks: a leader is elected and commits a new write (progress); every live member
   converges to the same applied state; a strong read of every key is appended to the
   history, which must be linearizable.

Pure: no wall clock, no global randomness.
"""

from __future__ import annotations

import hashlib
from functools import partial
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace

from concord.ids import NodeId
from concord.node.driver import DriverConfig, Reply, ReplyStatus
from concord.raft.config import RaftConfig
from concord.raft.messages import ConfState, Entry, EntryType
from concord.sim import buggify as buggify_mod
from concord.sim import finish, nemesis
from concord.sim.checks import LogView, SafetyChecker, Violation
from concord.sim.classic import Figure8, LeaseSplit
from concord.sim.linearizability import CheckResult, OpKind
from concord.sim.loop import EventLoop
from concord.sim.auth import AuthRun, KvAuthAdapter
from concord.sim.machine import Adapter, KvAdapter
from concord.sim.network import LinkFaults, Network
from concord.sim.node import SimNode
from concord.sim.programs import (
    DivergentSnapshot,
    JointReplace,
    MinorityReads,
    VoteCrash,
)
from concord.sim.restarts import Liveness, WholeRestart
from concord.sim.rng import SimRandom
from concord.sim.workload import Request, Workload, WorkloadConfig

__all__ = ["DEFAULT_DURATION_MS", "SimConfig", "SimResult", "Simulation", "run_seed"]

logger = logging.getLogger(__name__)


DEFAULT_DURATION_MS = 3000
#: The programs `SimConfig.program` can force, by name.
_PROGRAMS = frozenset({
    JointReplace.name, DivergentSnapshot.name, WholeRestart.name, VoteCrash.name,
    MinorityReads.name,
})


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What a run varies besides its seed."""

    seed: int
    nodes: int = 3
    duration_ms: int = DEFAULT_DURATION_MS
    buggify: bool = True
    faults: bool = True
    membership: bool = True
    trace: bool = False
    heal_ms: int = 1500
    progress_deadline_ms: int = 3000
    #: Force one program (by its `name`: concord/sim/programs.py, `WholeRestart`)
    #: instead of the draw.
    program: str = ""
    #: Clients per session id (pipelined runs); 0: drawn (1 in half the runs, else 2-3).
    pipeline: int = 0
    #: Lease operations in the workload and the leader's expiry proposals (TTL `expire`,
    #: `lease_expire`); False runs as the simulator did before leases (tests pinned to a
    #: seed's moment use it).
    leases: bool = True


@dataclass(slots=True)
class SimResult:
    seed: int
    nodes: int
    violations: list[Violation] = field(default_factory=list)
    digest: str = ""
    ops: int = 0
    linearizability: CheckResult | None = None
    events: int = 0
    trace_lines: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        return f"python -m concord.sim --seed {self.seed} --nodes {self.nodes} --trace"


class Simulation:
    """Builds the world of one seed and runs it (see the module docstring)."""

    def __init__(self, config: SimConfig, adapter: Adapter | None = None) -> None:
        self.config = config
        self.rng = SimRandom(config.seed)
        self.loop = EventLoop()
        self.checker = SafetyChecker()
        self.adapter: Adapter = adapter or KvAdapter()
        # Auth on (concord/sim/auth.py): setup through the log, then a revocation program.
        self._auth_run = AuthRun(self) if isinstance(self.adapter, KvAuthAdapter) else None
        self._digest = hashlib.blake2b(digest_size=16)
        self.trace_lines: list[str] = []
        knobs = self.rng.fork("knobs")
        f = config.faults
        self.link_faults = _link_faults(knobs, f)
        self.network = Network(self.loop, self.rng.fork("network"), self.link_faults)
        # One seed in four runs the Figure 8 program (concord/sim/classic.py, Figure8)
        # with one entry per APPEND and one APPEND in flight, so a leader's old-term
        # entries reach a follower before its no-op does.
        self.figure8 = f and knobs.chance(0.25) and config.nodes >= 3
        self._draw_programs()
        self.promotion_rng = self.rng.fork("auto-promotion")
        self._draw_knobs(knobs)
        ids = [NodeId(f"n{i + 1}") for i in range(config.nodes)]
        self.spares = [NodeId(f"n{config.nodes + i + 1}") for i in range(2)]
        bootstrap = ConfState(voters=tuple(sorted(ids)))
        # NB: a joining node starts from the same bootstrap membership (the cluster's
        # "initial members", as in etcd): replaying the log from index 1 must reproduce
        # the membership, and the bootstrap is not in the log.
        self.bootstrap = bootstrap
        self.nodes: dict[NodeId, SimNode] = {}
        for node_id in ids:
            self.nodes[node_id] = self._make_node(node_id, bootstrap)
        self.removed: set[NodeId] = set()
        self.workload = Workload(
            self.loop,
            self.rng.fork("workload"),
            _workload_config(knobs, self.rng.fork("pipeline"), config.pipeline, config.leases),
            self.adapter,
            self._submit,
            self._client_nodes,
            self.trace,
        )
        self.nemesis_rng = self.rng.fork("nemesis")
        self._conf_change_busy = False
        self._request_ids = 1 << 40  # the nemesis' and checker's own requests
        self._core_ids = 1 << 50  # the node cores' own proposals
        self._control: dict[int, str] = {}
        self._control_results: dict[int, ReplyStatus] = {}
        #: Nodes clients cannot reach (their requests are lost), but for these requests.
        self.clients_cut: set[NodeId] = set()
        self.clients_cut_exempt: set[int] = set()
        self.liveness = Liveness(self)
        self._whole_restart: WholeRestart | None = None
        #: (client id, seq) -> the timestamp of the entry that first applied it.
        self.applied_ts: dict[tuple[str, int], int] = {}
        #: (timestamp, lease ids, virtual time) of each lease_expire entry, at its first apply.
        self.lease_expiries: list[tuple[int, tuple[int, ...], int]] = []
        self._observed: set[int] = set()
        #: A program of programs.py runs: the random nemesis holds still.
        self.program_running = False
        #: Called like `Figure8.on_leader_step`; True stops the random attrition.
        self.leader_step_hooks: list[Callable[[SimNode, bool], bool]] = []

    def _draw_knobs(self, knobs: SimRandom) -> None:
        """The cores', drivers' and disks' settings and the attrition rates of this seed."""
        f = self.config.faults
        self.raft_config_base = dict(
            election_ticks=10,
            heartbeat_ticks=knobs.choice([1, 2]),
            max_inflight_msgs=1 if self.figure8 else knobs.choice([1, 1, 4, 64]),
            # 1 byte: one entry per APPEND, so a leader's old-term entries and its no-op
            # travel apart (the Raft Figure 8 window).
            max_size_per_msg=1 if self.figure8 else knobs.choice([1, 256, 4096, 1 << 20]),
            snapshot_chunk_bytes=knobs.choice([64, 1024, 1 << 20]),
        )
        self.driver_config = DriverConfig(
            tick_ms=10,
            election_ticks=10,
            heartbeat_ticks=self.raft_config_base["heartbeat_ticks"],
            read_timeout_ms=300,
            unknown_grace_ms=knobs.choice([0, 200]),
            snapshot_every_entries=knobs.choice([0, 10, 40]) if f else 0,
            snapshot_keep_entries=knobs.choice([0, 5, 50]),
        )
        if self.divergent_snapshot:
            # Its new leader must snapshot and compact past the divergent follower.
            self.driver_config = replace(
                self.driver_config, snapshot_every_entries=10, snapshot_keep_entries=0
            )
        self.fsync_ms = (1, knobs.choice([2, 5, 15]))
        # Crash a leader right after it advanced its commit index, with this probability
        # (FoundationDB-style attrition at the interesting moment).
        self.crash_on_commit_p = knobs.choice([0.0, 0.05, 0.2]) if f else 0.0
        self.crash_on_election_p = knobs.choice([0.0, 0.2, 0.5]) if f else 0.0

    def _draw_programs(self) -> None:
        """Which program this seed runs (at most one), each from a stream of its own."""
        config, f = self.config, self.config.faults
        # One seed in four of the others runs the lease-split program (concord/sim/classic.py,
        # LeaseSplit), from its own stream so that the other seeds keep their draws.
        programs = self.rng.fork("programs")
        self.lease_split = (
            f and not self.figure8 and config.nodes >= 3 and programs.chance(0.25)
        )
        self.lease_split_restart = programs.chance(0.5)
        self.program_rng = programs.fork("lease-split")
        # Two seeds in five of the rest run the whole-cluster restart program (class
        # WholeRestart), from a stream of its own.
        whole = self.rng.fork("whole-restart")
        self.whole_restart = f and not self.figure8 and not self.lease_split and whole.chance(0.4)
        self.whole_restart_rng = whole.fork("program")
        # Of the seeds left, one in three runs the joint-replacement program, one in
        # three the divergent-snapshot one, one in six the vote-crash one and one in six
        # the minority-reads one (concord/sim/programs.py), from their own stream. One
        # program at a time: each expects the cluster the way it left it.
        more = self.rng.fork("programs/more")
        pick = more.random()
        left = (f and not self.figure8 and not self.lease_split and not self.whole_restart
                and config.nodes >= 3)
        self.joint_replace = left and config.membership and pick < 1 / 3
        self.divergent_snapshot = left and 1 / 3 <= pick < 2 / 3
        self.vote_crash = left and 2 / 3 <= pick < 5 / 6
        self.minority_reads = left and 5 / 6 <= pick
        if config.program:
            if config.program not in _PROGRAMS:
                raise ValueError(f"unknown program {config.program!r} (one of {sorted(_PROGRAMS)})")
            self.figure8 = self.lease_split = False
            self.joint_replace = config.program == JointReplace.name
            self.divergent_snapshot = config.program == DivergentSnapshot.name
            self.whole_restart = config.program == WholeRestart.name
            self.vote_crash = config.program == VoteCrash.name
            self.minority_reads = config.program == MinorityReads.name
        self.more_rng = more.fork("program")

    # -- plumbing -----------------------------------------------------------------------

    def trace(self, line: str) -> None:
        text = f"{self.loop.now} {line}"
        self._digest.update(text.encode())
        if self.config.trace:
            self.trace_lines.append(text)

    def _make_node(self, node_id: NodeId, bootstrap: ConfState) -> SimNode:
        node = SimNode(
            node_id,
            bootstrap,
            self.loop,
            self.network,
            self.checker,
            self.rng.fork(f"node/{node_id}"),
            self.adapter.new_machine,
            RaftConfig(id=node_id, **self.raft_config_base),  # type: ignore[arg-type]
            self.driver_config,
            self._on_reply,
            self.fsync_ms,
            self.trace,
            self._core_request_id,
        )
        node.on_leader_step = self._leader_step
        node.on_apply = self._observe_apply
        if self.config.leases:
            node.expiry_command = self.adapter.expiry_command
        node.cluster = self.nodes
        return node

    def _leader_step(self, node: SimNode, became_leader: bool) -> None:
        """Maybe crash a leader just elected or just past a commit, before it sends."""
        if self.loop.now >= self.config.duration_ms - 200 or not self.config.faults:
            return
        if self._figure8 is not None and self._figure8.on_leader_step(node, became_leader):
            return
        if any([hook(node, became_leader) for hook in list(self.leader_step_hooks)]):
            return
        if self.program_running:
            return
        rng = self.nemesis_rng
        p = self.crash_on_election_p if became_leader else self.crash_on_commit_p
        if not rng.chance(p):
            return
        moment = "election" if became_leader else "commit"
        if rng.random() < 0.5:
            # Cut it off before its first messages leave: its new entries (the term's
            # no-op) stay on it alone, the ingredient of the Raft Figure 8 anomaly.
            self.trace(f"isolate at {moment} {node.id}")
            self.network.isolate(node.id, list(self.nodes))
            self.loop.after(rng.randint(50, 400), self._heal_network)
            return
        self.trace(f"crash at {moment} {node.id}")
        node.crash()
        self.loop.after(rng.randint(10, 300), partial(self._restart, node.id))

    def _observe_apply(self, entry: Entry) -> None:
        """Note the cluster time of each session write, at its first apply anywhere."""
        if entry.index in self._observed or entry.type is not EntryType.NORMAL:
            return
        self._observed.add(entry.index)
        if entry.data:
            session = self.adapter.session_of(entry.data)
            if session is not None and session not in self.applied_ts:
                self.applied_ts[session] = entry.timestamp_ms
            leases = self.adapter.expired_leases(entry.data)
            if leases:
                self.lease_expiries.append((entry.timestamp_ms, leases, self.loop.now))

    def _client_nodes(self) -> list[NodeId]:
        return [n for n in self.nodes if n not in self.removed]

    def _submit(self, node_id: NodeId, request: Request) -> None:
        node = self.nodes.get(node_id)
        if node is None or node.driver is None:
            return  # lost: the client times out
        rid = request.request_id
        if node_id in self.clients_cut and rid not in self.clients_cut_exempt:
            return

        def handle() -> None:
            assert node is not None and node.driver is not None
            if request.kind in (OpKind.GET, OpKind.GET_MANY):
                # A bulk read takes the first key's barrier, then reads every key at
                # that point (as a read worker serves get_many).
                assert request.consistency is not None
                node.driver.submit_read(rid, request.key, request.consistency)
            else:
                data = self.adapter.encode(
                    request.kind, request.key, request.args, request.keys, request.session,
                    request.min_seq,
                )
                node.driver.submit_write(rid, data)
            node.process()

        node.submit(handle)

    def _on_reply(self, node_id: NodeId, reply: Reply) -> None:
        if reply.request_id in self._control:
            self._control_results[reply.request_id] = reply.status
            what = self._control.pop(reply.request_id)
            self.trace(f"control {what} -> {reply.status.value}")
            if what.startswith("cc"):
                self._conf_change_busy = False
            return
        value: Hashable = None
        ts: float | None = None
        node = self.nodes[node_id]
        request = self.workload.request_of(reply.request_id)
        machine = node.machine
        if reply.status is ReplyStatus.OK and request is not None and machine is not None:
            if request.kind is OpKind.GET:
                value = self.adapter.read(machine, request.key)
                ts = self.adapter.now_ms(machine)
            elif request.kind is OpKind.GET_MANY:
                value = self.adapter.read_many(machine, request.keys)
                ts = self.adapter.now_ms(machine)
        self.workload.on_reply(node_id, reply, value, ts)

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node in self.nodes.values():
            if node.is_leader and node.driver is not None:
                if best is None or (best.driver is not None and node.driver.term > best.driver.term):
                    best = node
        return best

    def _log_views(self) -> dict[NodeId, LogView]:
        return {n.id: n.storage for n in self.nodes.values() if n.storage is not None}

    # -- the run ------------------------------------------------------------------------

    def run(self) -> SimResult:
        state = buggify_mod.Buggify(self.config.seed, enabled=self.config.buggify)
        buggify_mod.activate(state)
        handler: logging.Handler | None = None
        raft_log = logging.getLogger("concord.sim.raft")
        if self.config.trace:
            handler = _TraceHandler(self)
            raft_log.addHandler(handler)
            raft_log.setLevel(logging.INFO)
        try:
            return self._run()
        finally:
            buggify_mod.activate(None)
            if handler is not None:
                raft_log.removeHandler(handler)
                raft_log.setLevel(logging.CRITICAL)

    def _step_check(self) -> bool:
        self.checker.now_ms = self.loop.now
        self.checker.check_leader_logs(self._log_views())
        return bool(self.checker.violations)

    def _run(self) -> SimResult:
        cfg = self.config
        for node in self.nodes.values():
            node.start()
        if self._auth_run is not None:
            self._auth_run.start(then=self.workload.start)
        else:
            self.workload.start()
        if cfg.faults:
            if self.figure8:
                self._figure8 = Figure8(self)
                self.loop.after(self.nemesis_rng.randint(200, 1500), self._figure8.start)
            if self.lease_split:
                program = LeaseSplit(self, self.program_rng, self.lease_split_restart)
                self.loop.after(self.program_rng.randint(300, 1200), program.start)
            if self.whole_restart:
                self._whole_restart = WholeRestart(self, self.whole_restart_rng)
                self._whole_restart.start()
            kind = next((k for k, on in (
                (JointReplace, self.joint_replace),
                (DivergentSnapshot, self.divergent_snapshot),
                (VoteCrash, self.vote_crash),
                (MinorityReads, self.minority_reads),
            ) if on), None)
            if kind is not None:
                other = kind(self, self.more_rng)
                self.loop.after(self.more_rng.randint(300, 1000), other.start)
            self.loop.after(self.nemesis_rng.randint(100, 400), self._nemesis)
        self.loop.run_until(cfg.duration_ms, stop=self._step_check)
        if not self.checker.violations:
            finish.heal(self)
            self.loop.run_until(self.loop.now + cfg.heal_ms, stop=self._step_check)
        if not self.checker.violations:
            finish.final_checks(self)
        if not self.checker.violations and self._auth_run is not None:
            self._auth_run.check()
        result = SimResult(cfg.seed, cfg.nodes, list(self.checker.violations))
        result.digest = self._digest.hexdigest()
        result.ops = len(self.workload.history)
        result.events = self.loop.events_run
        result.trace_lines = self.trace_lines
        result.linearizability = self.lin_result
        result.stats = {
            "messages": self.network.sent,
            "dropped": self.network.dropped,
            "eventual_reads": self.workload.eventual_reads,
            "crashes": sum(n.disk.crashes for n in self.nodes.values()),
            "snapshots": sum(
                n.driver.stats.snapshots_taken for n in self.nodes.values() if n.driver
            ),
            "terms": len(self.checker.leaders),
            "whole_restarts": self._whole_restart.restarts if self._whole_restart else 0,
        }
        return result

    lin_result: CheckResult | None = None
    _figure8: Figure8 | None = None

    # -- nemesis and membership changes (concord/sim/nemesis.py) ------------------------
    _nemesis = nemesis.nemesis
    _node_fault = nemesis.node_fault
    _network_fault = nemesis.network_fault
    _restart = nemesis.restart
    _heal_network = nemesis.heal_network
    _core_request_id = nemesis.core_request_id
    _control_request = nemesis.control_request
    _membership = nemesis.membership
    add_learner = nemesis.add_learner
    member_change = nemesis.member_change
    submit_conf_change = nemesis.submit_conf_change
    burst = nemesis.burst
    _retire = nemesis.retire

    # -- end of run ---------------------------------------------------------------------


class _TraceHandler(logging.Handler):
    """Puts the cores' log lines into the trace, in virtual-time order (not digested)."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__()
        self.sim = sim

    def emit(self, record: logging.LogRecord) -> None:
        self.sim.trace_lines.append(f"{self.sim.loop.now}   | {record.getMessage()}")


def _link_faults(knobs: SimRandom, faults: bool) -> LinkFaults:
    """The network's fault rates of this seed (none without faults; delays always)."""
    return LinkFaults(
        min_delay_ms=1,
        max_delay_ms=knobs.randint(2, 12),
        drop_p=knobs.choice([0.0, 0.01, 0.05]) if faults else 0.0,
        duplicate_p=knobs.choice([0.0, 0.01, 0.03]) if faults else 0.0,
        reorder_p=knobs.choice([0.0, 0.05, 0.2]) if faults else 0.0,
        long_delay_p=knobs.choice([0.0, 0.005]) if faults else 0.0,
    )


#: The share of every run's client operations that are lease operations (workload.py).
LEASE_P = 0.25


def _pipeline(rng: SimRandom) -> int:
    """Clients per session id (its writes in flight at once): 1 in half the runs, else 2 or 3."""
    return 1 if rng.random() < 0.5 else rng.randint(2, 3)


def _workload_config(
    knobs: SimRandom, pipeline_rng: SimRandom, pipeline: int, leases: bool
) -> WorkloadConfig:
    """
    The run's workload. Pipelined runs (a stream of their own, so other runs draw as
    before) also increment counters: 15 % of their operations are `incr`. `pipeline` > 0
    forces the clients per session id instead of the draw. With `leases`, a quarter of
    every run's operations are lease operations (their own streams: the rest draw as before).
    """
    clients, keys = knobs.randint(2, 5), knobs.randint(1, 4)
    pipeline = pipeline or _pipeline(pipeline_rng)
    return WorkloadConfig(clients=clients, keys=keys, pipeline=pipeline,
                          incr_p=0.15 if pipeline > 1 else 0.0,
                          lease_p=LEASE_P if leases else 0.0)


def run_seed(
    seed: int, nodes: int, duration_ms: int = 3000, trace: bool = False, buggify: bool = True
) -> SimResult:
    """Run one seed and return its result (violations empty when all checks pass)."""
    return Simulation(
        SimConfig(seed=seed, nodes=nodes, duration_ms=duration_ms, trace=trace, buggify=buggify)
    ).run()
