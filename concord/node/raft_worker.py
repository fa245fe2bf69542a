"""
The raft worker process: consensus, apply, shared-memory publishing, the change stream.

One process per node, started (and restarted alone, rest_for_one) by concord.supervisor.
It owns its zmq.Context and runs one poll loop around `concord.node.driver.Driver` (the
code the simulator proves):

- recovery: the log writer's HELLO answer (snapshot + hard state + entries) is loaded into
  a MemoryStorage and the kv state machine; an empty data dir bootstraps the membership
  from the config's members (or from nothing with `join`, for a node added at run time);
- peers: `PeerTransport` carries raft messages encoded by `concord.storage.codec`;
- the log writer (`LogWriterClient`) is the driver's LogSink: PERSISTED acks release the
  held messages (term and vote reach the disk before any message that depends on them);
- durable snapshots: when the node core says one is due (TakeSnapshot), a forked child
  writes this process's state machine at the applied index (concord.node.snapshot_fork,
  concord.node.worker_snapshots); the writer then compacts the WAL (SNAPSHOT_TAKEN), the
  in-memory log is compacted and the file becomes the InstallSnapshot source;
- the front door link (`BackendLink`, Backend.RAFT): writes, strong reads (ReadIndex, then
  served from this process's kv), the door's read barriers (concord.node.worker_barriers:
  the door answers those strong reads itself), status, membership, leader transfer and
  fault ops;
- after apply: the changes go to shared memory (`Publisher`), the header carries applied
  index, revision, term, leader, role, leader time and the read lease; the change
  stream (concord.net.events.EventStream: one message per changed user key, a retained
  history for the `events` op) publishes them on the events port.

Every decision that touches no socket or file is the node core's
(concord.node.core.NodeCore: when to publish or resync shared memory, the read lease,
replies after the publish, peer links, durable snapshots, learner promotion,
member-address entries, expiry and cluster-id proposals, the reaction to a failing
disk): this loop feeds it events (`after_ready`, `on_tick`, `on_reply`, membership
requests, `on_disk`) and carries out the effects it returns (`carry_out`, in
concord.node.worker_effects). The simulator feeds it the same events. Request handling
is concord.node.worker_requests, the informational ops concord.node.worker_ops.

Leader-only requests reaching a follower are forwarded to the leader over the peer link
(concord.node.forward, `raft.forward_to_leader`), or answered `not_leader` with the
leader's CLIENT endpoint for the client to follow. Never unlinks shared memory.
"""

from __future__ import annotations

import itertools
import logging
import random
import signal
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import FrameType

import zmq

from concord.storage import codec
from concord.bulk import long_lived_build
from concord.config import NodeConfig
from concord.errors import ConfigError, ProtocolError, StorageError
from concord.ids import NodeId
from concord.net.backend import BackendLink
from concord.net.curve import ZapHandler
from concord.net.events import EventStream
from concord.net.peer import PeerOptions, PeerTransport
from concord.net.ratelog import RateLimitedLog
from concord.net.wire import Backend
from concord.node import gc_settings, worker_effects, worker_requests, worker_snapshots
from concord.node.direct import DirectEndpoint, direct_enabled
from concord.node.forward import FORWARD_BYTE, Forwarder
from concord.node.driver import Driver, DriverConfig, LogSink, Reply, load_memory_storage
from concord.node.links import NodeLinks, load_links
from concord.node.raft_metrics import RaftMetrics
from concord.node.shm_compaction import ShmCompaction
from concord.node.tracing import RaftTracing, TracedSink
from concord.node.worker_barriers import Barriers
from concord.node.worker_requests import Pending
from concord.node.auth import NodeAuth
from concord.node.backup import BackupJobs
from concord.node.node_machine import (
    MonotonicClock,
    NodeMachine,
    WallClock,
    WorkerEndpoints,
    kv_config_of,
)
from concord.node.log_writer import DiskStatus, LogWriterClient, Persisted
from concord.node.members import Address, AddressBook, NodeStateMachine
from concord.node.core.effects import SetPeers
from concord.node.core.node import ConfChangeSnapshots, NodeCore, NodeView
from concord.node.core.snapshots import SnapshotPolicy, SnapshotSchedule
from concord.node.snapshot_fork import SnapshotLoader, SnapshotWriter
from concord.node.promotion import LeaderView
from concord.raft.config import RaftConfig
from concord.raft.messages import ConfState, Message, MessageType, SnapshotMeta
from concord.raft.rawnode import RawNode
from concord.raft.state import HardState, Role
from concord.raft.storage import MemoryStorage
from concord.shm.publisher import Publisher
from concord.storage import faults as disk_faults
from concord.storage.recovery import RecoveredState, snap_dir, with_snapshot_membership
from concord.tracing import setup_process

__all__ = ["NodeMachine", "RaftWorker", "WorkerEndpoints", "kv_config_of", "run_raft_worker"]

logger = logging.getLogger(__name__)

#: Seconds of work per step of a shared-memory reset between the turns of the loop
#: (concord.shm.bulkreset: one step is at least STEP_RECORDS records, ~10-20 ms).
RESET_STEP_S = 0.01


def raft_config_of(config: NodeConfig) -> RaftConfig:
    """The consensus core's settings from a node config."""
    raft = config.raft
    return RaftConfig(
        id=config.node.id,
        election_ticks=raft.election_ticks,
        heartbeat_ticks=raft.heartbeat_ticks,
        max_inflight_msgs=raft.max_inflight_msgs,
        max_size_per_msg=raft.max_batch_bytes,
        pre_vote=raft.pre_vote,
        check_quorum=raft.check_quorum,
        snapshot_chunk_bytes=raft.snapshot_chunk_bytes,
        logger=logging.getLogger("concord.raft"),
    )


class _Adapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds node, term and role to every line (docs/contributing.md, logging)."""

    def __init__(self, log: logging.Logger, worker: RaftWorker) -> None:
        super().__init__(log, {})
        self._worker = worker

    def process(
        self, msg: object, kwargs: MutableMapping[str, object]
    ) -> tuple[object, MutableMapping[str, object]]:
        d = getattr(self._worker, "driver", None)  # None while the worker is being built
        term, role = (d.term, d.role.name) if d is not None else ("-", "-")
        return f"{msg} node={self._worker.node_id} term={term} role={role}", kwargs


class RaftWorker:
    """
    The raft worker's state and loop. Not thread-safe.

    Args:
        config: the node configuration.
        endpoints: the writer/front-door ipc endpoints and shm names.
        join: start with an empty membership (a node added at run time) if the data dir
            is empty, instead of bootstrapping from the config's members.
        previous: the READY info of this worker's previous incarnation (its real ports).
    """

    #: The shm reset being built (worker_effects.resync_shm): when it began and whether
    #: it is the start-up one (logging), and the CPU of its steps so far.
    reset_started: tuple[float, bool] = (0.0, False)
    reset_cpu_s = 0.0

    def __init__(
        self,
        config: NodeConfig,
        endpoints: WorkerEndpoints,
        join: bool = False,
        previous: Mapping[str, object] | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node.id
        self.log = _Adapter(logger, self)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.clock = WallClock()
        self.timer = MonotonicClock()
        self.ids = itertools.count(1)
        self.pending: dict[int, Pending] = {}
        self._outbox: list[tuple[int, bytes]] = []
        self.held_replies: list[tuple[int, bytes]] = []  # wait for the shm reset being built
        self._stopping = False
        self._conf_snapshots = ConfChangeSnapshots()
        self.disk = DiskStatus(None, None)  # the writer's last DISK report
        previous = previous or {}

        self.book = AddressBook(
            Address(m.id, m.host, m.client_port, m.peer_port, m.events_port)
            for m in config.members
        )
        recovered, loaded = self._recover(endpoints, join)
        hard_state, conf_state = self.storage.initial_state()
        self.raw = RawNode(raft_config_of(config), self.storage, random.Random())
        links = load_links(config.curve)
        self._open_peers(previous, links)
        # -- tracing (off: None, and every hook below is one `is None` test) ---------------
        process_tracing = setup_process(config.tracing, self.node_id, "raft")
        self.tracing = None if process_tracing is None else RaftTracing(process_tracing)
        self.driver = self._build_driver(conf_state, hard_state)
        # Without CURVE anyone who can reach the peer port can send as a member: what we
        # drop is logged, but at most once per reason per interval.
        self._peer_drop_log = RateLimitedLog(self.log, self.transport.options.drop_log_interval_s)
        # -- auth (concord.node.auth) ------------------------------------------------------
        self.auth = NodeAuth(config.auth, self.machine.kv,
                             lambda: self.publisher.cluster_now_ms(), time.monotonic)
        self._bootstrap_pending: int | None = None
        self._open_events(previous, links)
        # -- shared memory -----------------------------------------------------------------
        self.shm_names = endpoints.shm
        self.publisher = Publisher.attach(endpoints.shm)
        self.shm_compaction = ShmCompaction(self.publisher, self.log, time.monotonic())
        # The decisions (concord.node.core): shm never goes backwards (after a restart of
        # this worker alone it may hold a later state than the recovered one), and the
        # start-up replay (the entries committed before this start) is published once, in
        # bulk, when applied reaches the recovered commit.
        storage_config = config.storage
        self.core = NodeCore(self.node_id, self.ids.__next__,
                             shm_applied=self.publisher.applied_index,
                             replay_until=loaded.commit,
                             snapshots=SnapshotSchedule(
                                 SnapshotPolicy(storage_config.snapshot_entries,
                                                storage_config.snapshot_bytes),
                                 recovered.snapshot.meta if recovered.snapshot else None))
        self.carry_out(self.core.on_start(self.view()))
        self._open_door(endpoints)
        self.direct = self._open_direct(previous, links)
        self.metrics = RaftMetrics(self)
        empty = recovered.snapshot is None and not recovered.entries and recovered.hard_state.is_empty
        self.log.info("raft worker started empty=%s snapshot_index=%d entries=%d commit=%d peer=%s",
                      empty, recovered.snapshot.meta.index if recovered.snapshot else 0,
                      len(recovered.entries), hard_state.commit, self.peer_endpoint)

    def _open_door(self, endpoints: WorkerEndpoints) -> None:
        """The front door's link (its read barriers, forwarding to the leader), and the poller."""
        self.link = BackendLink(self.ctx, endpoints.backend, Backend.RAFT, f"raft-{self.node_id}",
                                heartbeat_interval_s=0.1)
        self.barriers = Barriers()  # the door's read barriers (concord.node.worker_barriers)
        self.forward = Forwarder(self, self.config.raft.forward_to_leader,
                                 self.config.limits.max_request_bytes)
        self.poller = zmq.Poller()
        self.transport.register(self.poller)
        self.link.register(self.poller)
        self.poller.register(self.events.socket, zmq.POLLIN)
        self.poller.register(self.writer.socket, zmq.POLLIN)
        if self.zap is not None:
            self.poller.register(self.zap.socket, zmq.POLLIN)

    def _open_direct(self, previous: Mapping[str, object], links: NodeLinks) -> DirectEndpoint | None:
        """The direct client endpoint (concord.node.direct), None when off."""
        me = self.config.member
        if not direct_enabled(self.config):
            if me.direct_port >= 0:
                self.log.info("direct endpoint not bound: [audit], [tracing] or [metrics] is on "
                              "(their observers see only the front door)")
            return None
        port = me.direct_port or int(str(previous.get("direct_port", 0)))
        direct = DirectEndpoint(self.ctx, me.endpoint(port), self.config.limits.max_request_bytes,
                                links.client, self.book.client_endpoint(self.node_id))
        self.poller.register(direct.socket, zmq.POLLIN)
        return direct

    def reply_clients(self, replies: list[tuple[int, bytes]]) -> None:
        """Send replies to the clients of their tokens: the direct endpoint's, else the door's."""
        if self.direct is not None:
            replies = self.direct.take_own(replies)
        if replies:
            self.link.reply_many(replies)

    def _recover(self, endpoints: WorkerEndpoints, join: bool) -> tuple[RecoveredState, HardState]:
        """
        Ask the log writer for the recovered state, load it into the in-memory log and the
        state machine. Returns it and the hard state loaded.
        """
        config = self.config
        # One packer for the writer's PERSIST and every peer's AppendEntries: each entry
        # is packed once, however many of them carry it.
        self.packer = codec.EntryPacker()
        self.writer = LogWriterClient(endpoints.writer, self.ctx, self.packer)
        answer = self.writer.handshake(timeout_s=config.supervisor.ready_timeout_s)
        started = time.monotonic()
        recovered, state_hash = worker_snapshots.load_recovered(config.node.data_dir, answer)
        # A joining node starts from the config's other members as the voters: the log
        # it replays (from index 1, or a snapshot) then adds it as a learner; it is not a
        # voter of its own bootstrap, so it never campaigns before the leader adds it.
        voters = tuple(m.id for m in config.members if not join or m.id != self.node_id)
        bootstrap = ConfState(voters)
        recovered = with_snapshot_membership(config.node.data_dir, recovered, bootstrap)
        self.storage = MemoryStorage(bootstrap)
        loaded = load_memory_storage(self.storage, recovered)
        state = NodeStateMachine(kv_config_of(config))
        if recovered.snapshot is not None and not recovered.snapshot.is_empty:
            with long_lived_build():
                state.restore(recovered.snapshot.data)
            worker_snapshots.check_restored(self.log, recovered.snapshot.meta, state_hash,
                                            state.state_hash())
        self._restored_s = time.monotonic() - started
        self._started_s = started
        self._run_started_s = time.monotonic()  # run() sets it again
        self.machine = NodeMachine(state, self.book)
        self.backups = BackupJobs(config.node.data_dir / "backup", state.snapshot, state.state_hash)
        self.snapshot_writer = SnapshotWriter(snap_dir(config.node.data_dir), state.snapshot,
                                              state.state_hash, config.storage.fsync)
        self.snapshot_loader = SnapshotLoader(worker_snapshots.read_snapshot_data)
        return recovered, loaded

    def _open_peers(self, previous: Mapping[str, object], links: NodeLinks) -> None:
        raft, me = self.config.raft, self.config.member
        # CURVE: one ZAP handler per context answers the peer ROUTER's handshakes (the
        # allow-list) and the events endpoint's (any key; its User-Id is the key).
        self.zap = None if links.peer is None and links.events is None else ZapHandler(
            self.ctx, lambda: links.peer.keys.by_key if links.peer else {}, self.log,
            on_unknown=lambda: self.transport.maybe_reload_keys(time.monotonic()))
        peer_port = me.peer_port or int(str(previous.get("peer_port", 0)))
        tick_s = raft.tick_ms / 1000.0
        self.transport = PeerTransport(
            self.ctx,
            self.node_id,
            me.endpoint(peer_port),
            self.book.peer_endpoints(),
            PeerOptions(
                heartbeat_interval_s=max(tick_s, 0.01),
                dead_after_s=max(tick_s * raft.election_ticks, 0.05),
                faults_enabled=self.config.faults.enabled,
            ),
            curve=links.peer,
            logger=self.log,
        )
        self.peer_endpoint = self.transport.endpoint

    def _build_driver(self, conf_state: ConfState, hard_state: HardState) -> Driver:
        raft = self.config.raft
        sink: LogSink = self.writer if self.tracing is None else TracedSink(self.writer, self.tracing)
        return Driver(
            self.node_id,
            self.raw,
            self.storage,
            self,
            sink,
            self.clock,
            self.machine,
            self._on_reply,
            DriverConfig(
                tick_ms=raft.tick_ms,
                election_ticks=raft.election_ticks,
                heartbeat_ticks=raft.heartbeat_ticks,
                read_timeout_ms=max(1000, 3 * raft.election_ticks * raft.tick_ms),
                unknown_grace_ms=raft.election_ticks * raft.tick_ms,
                # Only after membership changes (ConfChangeSnapshots); the periodic
                # durable snapshots are the log writer's.
                snapshot_every_entries=1 << 62,
            ),
            conf_state,
            hard_state,
            snapshot_sink=self._conf_snapshots,
            snapshot_observer=self._on_snapshot_installed,
            timer=self.timer,
        )

    def _open_events(self, previous: Mapping[str, object], links: NodeLinks) -> None:
        config, me = self.config, self.config.member
        events_port = me.events_port or int(str(previous.get("events_port", 0)))
        # NB: a bind failure raises ConfigError("cannot bind events endpoint ...").
        self.events = EventStream(
            self.ctx,
            me.endpoint(events_port),
            history_entries=config.events.history_entries,
            history_bytes=config.events.history_bytes,
            send_values=config.events.send_values,
            start_revision=self.machine.kv.revision,
            curve=links.events,
            guard=self.auth.subscription if self.auth.guards_stream else None,
        )
        self.events_endpoint = self.events.endpoint

    # -- Transport (the driver's) ----------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.metrics.on_send(msg)
        trace = None
        if self.tracing is not None and msg.type is MessageType.APPEND:
            trace = self.tracing.append_trace(msg.entries)
        self.transport.send(msg.to, codec.encode_message(msg, self.packer, trace))

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        tick_s = self.config.raft.tick_ms / 1000.0
        next_tick = self._run_started_s = time.monotonic()
        next_tick += tick_s
        self._after_ready()
        frozen = gc_settings.settle_after_start()  # start-up is over (concord.node.gc_settings)
        self.log.debug("gc settled frozen_objects=%d", frozen)
        while not self._stopping:
            now = time.monotonic()
            deadline = min(next_tick, self.transport.next_deadline(), self.link.next_deadline(),
                           self.events.next_deadline())
            if self.publisher.compacting or self.publisher.resetting:
                deadline = now  # shm steps to take: look for input, no sleep
            events = dict(self.poller.poll(max(0, int((deadline - now) * 1000)) + 1))
            now = time.monotonic()
            self.transport.service_timers(now)
            self.link.service_timers(now)
            # NB: zmq polling is level-triggered, so a socket left unread (nothing was
            # reported on it, or more than one drain's worth waits) is reported again by
            # the next poll; skipping it saves a raising non-blocking receive.
            self.events.service(now, self.events.socket in events)
            if self.zap is not None and self.zap.socket in events:
                self.zap.handle()
            if self.writer.socket in events:
                self._on_writer_events()
            job = self.snapshot_writer.job
            if job is not None and job.fd in events:
                self._finish_snapshot()
            if self.transport.router in events or self.transport.monitor in events:
                self._drain_peers()
            if self.link.socket in events:
                worker_requests.drain_requests(self)
            if self.direct is not None and self.direct.socket in events:
                self.direct.drain(self)  # concord.node.direct
            if next_tick - now > 2 * tick_s:
                # NB: time.monotonic() never steps back on Linux, but a test harness can
                # fake it (libfaketime without FAKETIME_DONT_FAKE_MONOTONIC): re-base
                # rather than stop ticking (no ticks = no heartbeats, no elections).
                self.log.warning("monotonic clock stepped back by %.3fs: re-basing ticks",
                                 next_tick - now - tick_s)
                next_tick = now
            if now >= next_tick:
                next_tick = max(next_tick + tick_s, now)
                self._on_tick()
            self.driver.process_ready()
            self._after_ready()
            if self._conf_snapshots.taken:
                for meta in self._conf_snapshots.taken:
                    self.driver.on_snapshot_written(meta)
                self._conf_snapshots.taken.clear()
            worker_snapshots.offer_loaded(self)
            if self.publisher.resetting:
                self._step_reset(RESET_STEP_S)
            self.shm_compaction.step(now)

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
        self.backups.close()
        self.snapshot_writer.abandon()
        if self.direct is not None:
            self.direct.close()
        for closer in (self.link.close, self.transport.close, self.writer.close):
            try:
                closer()
            except (zmq.ZMQError, StorageError, ProtocolError):
                pass
        self.events.close()
        if self.zap is not None:
            self.zap.close()
        self.publisher.set_lease(0)
        self.publisher.close()
        self.ctx.term()

    # -- inputs -----------------------------------------------------------------------------

    def _on_writer_events(self) -> None:
        for event in self.writer.recv():
            if isinstance(event, Persisted):
                self.driver.on_persisted(event.number)
                if self.tracing is not None:
                    self.tracing.on_persisted(event.number)
            elif isinstance(event, DiskStatus):
                self._on_disk(event)

    def _on_disk(self, disk: DiskStatus) -> None:
        """The writer's disk health changed (the decision: NodeCore.on_disk)."""
        was_failing = self.disk.wal_error is not None
        # NB: the snapshot error is this worker's own (its children write the snapshots).
        self.disk = disk = DiskStatus(disk.wal_error, self.disk.snapshot_error)
        if disk.wal_error is not None and not was_failing:
            self.log.warning("storage failing: refusing writes until the wal recovers error=%s",
                             disk.wal_error)
        elif disk.wal_error is None and was_failing:
            self.log.info("storage recovered: accepting writes again")
        best = self.best_other_voter() if self.driver.role is Role.LEADER else None
        self.carry_out(self.core.on_disk(disk.wal_error, self.driver.role, best))

    def best_other_voter(self) -> NodeId | None:
        """The other voter with the longest matched log (None: this node is alone)."""
        voters = [v for v in self.driver.conf_state.voters if v != self.node_id]
        status = self.raw.status()
        ranked = sorted(voters, key=lambda v: -status.progress[v].match if v in status.progress else 0)
        return ranked[0] if ranked else None

    def _drain_peers(self) -> None:
        for _ in range(1000):
            got = self.transport.recv()
            if got is None:
                return
            sender, payload = got
            if payload[:1] == FORWARD_BYTE:
                self.forward.on_peer(sender, payload)  # concord.node.forward
                continue
            try:
                msg, trace = codec.decode_message_and_trace(payload)
            except ProtocolError as exc:
                self._peer_drop_log.warning("bad", "bad peer message from=%s error=%s", sender, exc)
                continue
            if msg.frm != sender or msg.to != self.node_id:
                self._peer_drop_log.warning("misaddressed",
                                            "misaddressed peer message from=%s frm=%s to=%s",
                                            sender, msg.frm, msg.to)
                continue
            self.metrics.on_message(msg)
            if trace is not None and self.tracing is not None:
                self.tracing.on_append(sender, trace)
            self.driver.on_message(msg)

    def _on_tick(self) -> None:
        self.driver.on_tick()
        self.metrics.on_tick(time.monotonic())
        self.forward.on_tick(time.monotonic())
        if self.direct is not None:
            self.direct.expire(time.monotonic())
        for peer in self.transport.unreachable():
            self.raw.report_unreachable(peer)
        driver = self.driver
        if driver.role is Role.LEADER:
            status = self.raw.status()
            leader = LeaderView(driver.term, True, status.conf_state, status.committed,
                                {member: pr.match for member, pr in status.progress.items()})
        else:
            leader = LeaderView(driver.term, False, driver.conf_state, driver.commit, {})
        self.carry_out(self.core.on_tick(self.view(), leader, self.clock.now_ms(),
                                          self.machine.state.cluster_id is not None))
        until = self.events.guarded_until_ms
        if until and self.publisher.cluster_now_ms() >= until:
            self._rebind_events("a subscribed token expired")
        if driver.role is Role.LEADER:
            self._maybe_bootstrap_auth()

    def _rebind_events(self, reason: str) -> None:
        """Drop every change-stream subscriber: each re-authenticates (concord.net.events)."""
        if not self.auth.guards_stream:
            return
        self.poller.unregister(self.events.socket)
        self.events.guard = self.auth.subscription
        self.poller.register(self.events.rebind(reason), zmq.POLLIN)

    def _maybe_bootstrap_auth(self) -> None:
        """A leader writes the configured first admin token through Raft (one in flight)."""
        if self._bootstrap_pending is not None:
            return
        command = self.auth.bootstrap_command()
        if command is None:
            return
        self._bootstrap_pending = next(self.ids)
        self.log.info("proposing the configured bootstrap token")
        self.driver.submit_write(self._bootstrap_pending, command, prompt_commit=True)

    # -- replies -------------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        self.metrics.on_reply(reply)
        rid = reply.request_id
        if self.core.on_reply(rid):
            return  # one of the core's own proposals
        if self.barriers.on_reply(self, reply):
            return  # the door's read barrier (concord.node.worker_barriers)
        if rid == self._bootstrap_pending:
            self._bootstrap_pending = None  # applied or refused: the next tick looks again
            return
        pending = self.pending.pop(rid, None)
        if pending is None:
            return
        if self.tracing is not None:
            self.tracing.end_request(rid, reply.status.name)
        # NB: sent only after the round's changes are in shared memory (_after_ready), so
        # a client that saw its write acknowledged finds it in every later read here;
        # while a reset is built (after a restart), only once it is published.
        payload = worker_requests.encode_reply(self, pending, reply)
        if self.core.resetting and pending.request.op in worker_requests.LEADER_ONLY:
            self.held_replies.append((pending.token, payload))
        else:
            self._outbox.append((pending.token, payload))

    # -- after each round of Readys ------------------------------------------------------------

    def _on_snapshot_installed(self, meta: SnapshotMeta) -> None:
        self.log.info("snapshot installed index=%d", meta.index)
        self.core.on_snapshot_installed(meta, self.driver.stats.entry_bytes_applied)

    def view(self) -> NodeView:
        """What the node core needs of the driver and the state machine now."""
        d = self.driver
        machine = self.machine
        # The leader's client endpoint rides along: read workers hint with it (members
        # added at run time are known only to this address book).
        return NodeView(
            d.term, d.leader_id, d.role, d.commit, d.applied_index, d.applied_term,
            d.lease_until_ms, d.conf_state, machine.restored, bool(machine.changes),
            machine.addresses_changed, self.book.client_endpoint(d.leader_id),
            self.book.peer_ids(), d.stats.entry_bytes_applied,
            self.storage.last_index())

    def _after_ready(self) -> None:
        # Every peer message carries the cluster id; peers of another cluster are refused.
        self.transport.cluster_id = self.machine.state.cluster_id
        if self.tracing is not None:
            self.tracing.prune(self.driver.applied_index)
        view = self.view()
        self.machine.addresses_changed = False  # after_ready acts on it (SetPeers)
        self.carry_out(self.core.after_ready(view))

    # -- effects (concord/node/worker_effects.py) ------------------------------------------
    carry_out = worker_effects.carry_out
    _carry_out_rare = worker_effects.carry_out_rare
    _publish_changes = worker_effects.publish_changes
    _resync_shm = worker_effects.resync_shm
    _step_reset = worker_effects.step_reset
    _take_snapshot = worker_snapshots.take_snapshot
    _finish_snapshot = worker_snapshots.finish_snapshot


def run_raft_worker(
    config: NodeConfig, endpoints: WorkerEndpoints, join: bool = False
) -> None:
    """Process entry point (a supervisor child): recover, report READY, serve until SIGTERM."""
    from supervisor import notify_ready, previous_info

    if config.faults.enabled and config.faults.disk_file:
        # Test-only seam: its snapshot children's file writes (concord.storage.faults).
        disk_faults.configure(Path(config.faults.disk_file))
    try:
        worker = RaftWorker(config, endpoints, join=join, previous=previous_info())
    except (StorageError, ConfigError) as exc:
        logger.error("raft worker cannot start node=%s: %s", config.node.id, exc)
        raise SystemExit(1) from exc

    def on_term(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_term)
    peer_port = int(worker.peer_endpoint.rsplit(":", 1)[1])
    events_port = int(worker.events_endpoint.rsplit(":", 1)[1])
    ready: dict[str, str | int] = {"peer": worker.peer_endpoint, "events": worker.events_endpoint,
                                   "peer_port": peer_port, "events_port": events_port}
    if worker.direct is not None:
        ready["direct"] = worker.direct.endpoint
        ready["direct_port"] = int(worker.direct.endpoint.rsplit(":", 1)[1])
    notify_ready(ready)
    try:
        worker.run()
    except Exception as exc:  # the process's top level: log once, exit non-zero (restart)
        worker.log.exception("raft worker failed")
        raise SystemExit(1) from exc
    finally:
        worker.close()
    worker.log.info("raft worker stopped")
