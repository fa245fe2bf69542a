"""
The raft worker process: consensus, apply, shared-memory publishing, the change stream.

One process per node, started (and restarted alone, rest_for_one) by concord.supervisor.
It owns its zmq.Context and runs one poll loop around `concord.node.driver.Driver` (the
code the simulator proves):

- recovery: the log writer's HELLO answer (snapshot + hard state + entries) is loaded into
  a MemoryStorage and the kv state machine; an empty data dir bootstraps the membership
  from the config's members (or from nothing with `join`, for a node added at run time);
- peers: `PeerTransport` carries raft messages encoded by `concord.codec`;
- the log writer (`LogWriterClient`) is the driver's LogSink: PERSISTED acks release the
  held messages (term and vote reach the disk before any message that depends on them),
  SNAPSHOT_WRITTEN compacts the in-memory log and becomes the InstallSnapshot source;
- the front door link (`BackendLink`, Backend.RAFT): writes, strong reads (ReadIndex, then
  served from this process's kv), status, membership, leader transfer and fault ops;
- after apply: the changes go to shared memory (`Publisher`), the header carries applied
  index, revision, term, leader, role, leader time and the read lease; the change
  stream (concord.net.events.EventStream: one message per changed user key, a retained
  history for the `events` op) publishes them on the events port.

Writes reaching a follower are answered `not_leader` with the leader's CLIENT endpoint
(never forwarded: the client follows the hint). Never unlinks shared memory.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from itertools import chain, repeat
import logging
import os
import random
import signal
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import zmq

from concord import codec
from concord.config import NodeConfig
from concord.errors import (
    ClientError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    StorageError,
)
from concord.ids import NODE_ID_RULE, NodeId, is_node_id
from concord.kv import CLIENT_WRITE_OPS, KvConfig
from concord.kv import encode_request as kv_encode_request
from concord.kv.machine import Applied
from concord.kv.record import Change, Space
from concord.net.admin import fault_reply
from concord.net.backend import BackendLink
from concord.net.events import EventStream
from concord.net.peer import PeerOptions, PeerTransport
from concord.net.ratelog import RateLimitedLog
from concord.net.wire import Backend, Request, decode_request, error_reply, ok_reply
from concord.node.driver import (
    Consistency,
    Driver,
    DriverConfig,
    Reply,
    ReplyStatus,
    load_memory_storage,
)
from concord.node.backup import BackupJobs
from concord.node.log_writer import DiskStatus, LogWriterClient, Persisted, SnapshotWritten
from concord.node.members import (
    MAGIC, Address, AddressBook, NodeStateMachine, encode_address, encode_cluster_id, new_cluster_id)
from concord.node.promotion import LeaderView, Promotions, decide_promotions
from concord.raft.config import RaftConfig
from concord.raft.messages import ConfChange, ConfState, Message, Snapshot, SnapshotMeta
from concord.raft.rawnode import RawNode
from concord.raft.state import Role
from concord.raft.storage import MemoryStorage
from concord.shm.layout import FORMAT_VERSION, SegmentNames
from concord.shm.publisher import Publisher
from concord.storage.recovery import with_snapshot_membership
from concord.storage.replica import ReplicaChecker

__all__ = ["NodeMachine", "RaftWorker", "WorkerEndpoints", "kv_config_of", "run_raft_worker"]

logger = logging.getLogger(__name__)

#: How often the leader looks for due TTLs to expire (ms of its clock).
EXPIRY_INTERVAL_MS = 100
#: Milliseconds between a leader's cluster-id proposals while none is applied.
CLUSTER_ID_RETRY_MS = 1000
#: The shared-memory arena is compacted (dead records dropped: every reader then rebuilds
#: its index from the new directory) when dead records pass SHM_COMPACT_RATIO of it,
#: looked at most every SHM_COMPACT_INTERVAL_S (and that long after the last compaction
#: switched readers over). The compaction runs incrementally: one
#: `compact_step` of SHM_COMPACT_STEP_S per loop turn, and the loop does not sleep in
#: poll while one runs.
SHM_COMPACT_INTERVAL_S = 5.0
SHM_COMPACT_RATIO = 0.5
SHM_COMPACT_STEP_S = 0.005
#: The log writer hears COMMITTED (it applies to its replica, then snapshots) once this
#: many entries were applied since the last one, on every tick, and at once when the
#: membership changed; not after every entry: each message wakes the writer, and on a
#: node short of cores that wakeup competes with the write path. Kept small, because the
#: writer then applies that many entries in one go, and a PERSIST waits behind them.
COMMITTED_EVERY_ENTRIES = 16

#: Applied indexes whose kv state hash the worker remembers for `hash_kv` (the replica
#: check compares nodes at one index; about 1 MB).
HASH_HISTORY_ENTRIES = 16384


def kv_config_of(config: NodeConfig) -> KvConfig:
    """The replicated kv settings derived from a node config (the same on every node)."""
    return KvConfig(
        max_key_bytes=config.limits.max_key_bytes,
        max_value_bytes=config.limits.max_value_bytes,
        max_items=config.limits.max_batch_items,
        compress_threshold_bytes=(
            config.compression.threshold_bytes if config.compression.enabled else 1 << 62
        ),
        compress_level=config.compression.level,
    )


@dataclass(frozen=True, slots=True)
class WorkerEndpoints:
    """Process-local endpoints and shm names the supervisor hands its children."""

    writer: str  # ipc endpoint of the log writer's PAIR
    backend: str  # ipc endpoint of the front door's backend ROUTER
    shm: SegmentNames


class _WallClock:
    """Cluster time for the driver: wall-clock ms (entries are stamped with it; TTLs)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class _MonotonicClock:
    """
    The driver's timer: CLOCK_MONOTONIC ms (lease, vote hold, deadlines). A wall-clock
    step (NTP, a wrong RTC, `faketime`) never moves it, so it cannot stretch a lease.
    """

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class NodeMachine:
    """
    The driver's state machine: the node's replicated `NodeStateMachine` (kv plus member
    addresses), observed. Collects the changes of applied entries for shared memory and
    the change stream, keeps the worker's address book current, and notices snapshot
    installs (the published state must then be replaced whole).
    """

    def __init__(self, state: NodeStateMachine, book: AddressBook) -> None:
        self.state = state
        self.kv = state.kv
        self.book = book
        self.changes: list[Change] = []
        self.restored = False
        self.addresses_changed = False
        # (applied index, kv state hash) after each applied entry, oldest first: the
        # `hash_kv` op answers from it (docs/protocol.md). A restore starts it over.
        self.hashes: collections.deque[tuple[int, int]] = collections.deque(
            [(state.applied_index, state.kv.state_hash())], maxlen=HASH_HISTORY_ENTRIES)
        self._sync_book()

    @property
    def applied_index(self) -> int:
        return self.state.applied_index

    @property
    def last_timestamp_ms(self) -> int:
        return self.state.last_timestamp_ms

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Applied:
        applied = self.state.apply(index, timestamp_ms, data)
        self.hashes.append((index, self.kv.state_hash()))
        if data.startswith(MAGIC):
            self._sync_book()
        else:
            self.changes.extend(applied.changes)
        return applied

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self.state.apply_noop(index, timestamp_ms)
        self.hashes.append((index, self.kv.state_hash()))

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, data: bytes) -> None:
        self.state.restore(data)
        self.changes.clear()
        self.hashes.clear()
        self.hashes.append((self.state.applied_index, self.kv.state_hash()))
        self.restored = True
        self._sync_book()

    def state_hash(self) -> int:
        return self.state.state_hash()

    def _sync_book(self) -> None:
        for address in self.state.addresses.values():
            if self.book.get(address.id) != address:
                self.book.set(address)
                self.addresses_changed = True


class _ConfChangeSnapshots:
    """
    The driver's SnapshotSink, used only right after a membership change: the driver then
    snapshots its state machine so that a member just added can be sent a snapshot that
    includes it (an older one, without it, would be refused). The log writer makes the
    durable snapshots itself; these only feed InstallSnapshot, so the worker hands each
    back to the driver as "written" after the Ready round (the in-memory log may then be
    compacted; the WAL keeps every entry until the writer's own snapshot covers it).
    """

    def __init__(self) -> None:
        self.taken: list[SnapshotMeta] = []

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self.taken.append(snapshot.meta)


@dataclass(slots=True)
class _Pending:
    token: int
    request: Request


class _Adapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds node, term and role to every line (STYLE §7)."""

    def __init__(self, log: logging.Logger, worker: RaftWorker) -> None:
        super().__init__(log, {})
        self._worker = worker

    def process(
        self, msg: object, kwargs: MutableMapping[str, object]
    ) -> tuple[object, MutableMapping[str, object]]:
        d = self._worker.driver
        return f"{msg} node={self._worker.node_id} term={d.term} role={d.role.name}", kwargs


def _role_name(role: Role) -> str:
    return role.name.lower()


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

    def __init__(
        self,
        config: NodeConfig,
        endpoints: WorkerEndpoints,
        join: bool = False,
        previous: Mapping[str, object] | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node.id
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.clock = _WallClock()
        self.timer = _MonotonicClock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[tuple[int, bytes]] = []
        self._internal: set[int] = set()
        self._expiry_pending: int | None = None
        self._cluster_id_pending: int | None = None  # the cluster-id proposal in flight
        self._next_cluster_id_ms = 0
        self._next_expiry_ms = 0
        self._next_shm_compact = time.monotonic() + SHM_COMPACT_INTERVAL_S
        self._promotions = Promotions()  # learner auto-promotion (concord.node.promotion)
        self._joining: set[NodeId] = set()  # added by add_member, not yet in the conf
        self._stopping = False
        self._conf_sent: ConfState | None = None
        self._last_committed_sent = 0
        self._published_status: tuple[int, str | None, Role, str | None] | None = None
        self._published_lease_ms = -2
        self.checker = ReplicaChecker()
        self._conf_snapshots = _ConfChangeSnapshots()
        self._disk = DiskStatus(None, None)  # the writer's last DISK report
        previous = previous or {}

        self.book = AddressBook(
            Address(m.id, m.host, m.client_port, m.peer_port, m.events_port)
            for m in config.members
        )
        me = config.member
        # -- log writer: recovery --------------------------------------------------------
        # One packer for the writer's PERSIST and every peer's AppendEntries: each entry
        # is packed once, however many of them carry it.
        self.packer = codec.EntryPacker()
        self.writer = LogWriterClient(endpoints.writer, self.ctx, self.packer)
        recovered = self.writer.handshake(timeout_s=config.supervisor.ready_timeout_s)
        empty = (
            recovered.snapshot is None and not recovered.entries and recovered.hard_state.is_empty
        )
        # A joining node starts from the config's other members as the voters: the log
        # it replays (from index 1, or a snapshot) then adds it as a learner; it is not a
        # voter of its own bootstrap, so it never campaigns before the leader adds it.
        voters = tuple(m.id for m in config.members if not join or m.id != self.node_id)
        bootstrap = ConfState(voters)
        recovered = with_snapshot_membership(config.node.data_dir, recovered, bootstrap)
        self.storage = MemoryStorage(bootstrap)
        started = time.monotonic()
        loaded = load_memory_storage(self.storage, recovered)
        state = NodeStateMachine(kv_config_of(config))
        if recovered.snapshot is not None and not recovered.snapshot.is_empty:
            state.restore(recovered.snapshot.data)
        self._restored_s = time.monotonic() - started
        # Start-up replay: the entries committed before this start are applied to the
        # state machine only; shared memory and the change stream get the result once,
        # in bulk (_maybe_resync_shm), when applied_index reaches this index.
        self._replay_until = loaded.commit
        self._started_s = started
        self._run_started_s = time.monotonic()  # run() sets it again
        self.machine = NodeMachine(state, self.book)
        self.backups = BackupJobs(config.node.data_dir / "backup", state.snapshot, state.state_hash)
        hard_state, conf_state = self.storage.initial_state()
        raft = config.raft
        self.raw = raw = RawNode(
            RaftConfig(
                id=self.node_id,
                election_ticks=raft.election_ticks,
                heartbeat_ticks=raft.heartbeat_ticks,
                max_inflight_msgs=raft.max_inflight_msgs,
                max_size_per_msg=raft.max_batch_bytes,
                pre_vote=raft.pre_vote,
                check_quorum=raft.check_quorum,
                snapshot_chunk_bytes=raft.snapshot_chunk_bytes,
                logger=logging.getLogger("concord.raft"),
            ),
            self.storage,
            random.Random(),
        )
        # -- peers -----------------------------------------------------------------------
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
                faults_enabled=config.faults.enabled,
            ),
        )
        self.peer_endpoint = self.transport.endpoint
        # -- the driver --------------------------------------------------------------------
        self.driver = Driver(
            self.node_id,
            raw,
            self.storage,
            self,
            self.writer,
            self.clock,
            self.machine,
            self._on_reply,
            DriverConfig(
                tick_ms=raft.tick_ms,
                election_ticks=raft.election_ticks,
                heartbeat_ticks=raft.heartbeat_ticks,
                read_timeout_ms=max(1000, 3 * raft.election_ticks * raft.tick_ms),
                unknown_grace_ms=raft.election_ticks * raft.tick_ms,
                # Only after membership changes (_ConfChangeSnapshots); the periodic
                # durable snapshots are the log writer's.
                snapshot_every_entries=1 << 62,
            ),
            conf_state,
            hard_state,
            snapshot_sink=self._conf_snapshots,
            snapshot_observer=self._on_snapshot_installed,
            timer=self.timer,
        )
        self.log = _Adapter(logger, self)
        # Anyone who can reach the peer port can send as a member (no CURVE yet): what we
        # drop is logged, but at most once per reason per interval.
        self._peer_drop_log = RateLimitedLog(self.log, self.transport.options.drop_log_interval_s)
        # -- change stream -----------------------------------------------------------------
        events_port = me.events_port or int(str(previous.get("events_port", 0)))
        # NB: a bind failure raises ConfigError("cannot bind events endpoint ...").
        self.events = EventStream(
            self.ctx,
            me.endpoint(events_port),
            history_entries=config.events.history_entries,
            history_bytes=config.events.history_bytes,
            send_values=config.events.send_values,
            start_revision=self.machine.kv.revision,
        )
        self.events_endpoint = self.events.endpoint
        # -- shared memory -----------------------------------------------------------------
        self.shm_names = endpoints.shm
        self.publisher = Publisher.attach(endpoints.shm)
        # Never go backwards: after a restart of this worker alone, shm may hold a later
        # state than the recovered one; it is replaced only once we have caught up.
        self._shm_synced = False
        self._maybe_resync_shm()
        # -- front door --------------------------------------------------------------------
        self.link = BackendLink(self.ctx, endpoints.backend, Backend.RAFT, f"raft-{self.node_id}",
                                heartbeat_interval_s=0.1)
        self.poller = zmq.Poller()
        self.transport.register(self.poller)
        self.link.register(self.poller)
        self.poller.register(self.events.socket, zmq.POLLIN)
        self.poller.register(self.writer.socket, zmq.POLLIN)
        self.log.info(
            "raft worker started empty=%s snapshot_index=%d entries=%d commit=%d peer=%s",
            empty,
            recovered.snapshot.meta.index if recovered.snapshot else 0,
            len(recovered.entries),
            hard_state.commit,
            self.peer_endpoint,
        )

    # -- Transport (the driver's) ----------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.transport.send(msg.to, codec.encode_message(msg, self.packer))

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        tick_s = self.config.raft.tick_ms / 1000.0
        next_tick = self._run_started_s = time.monotonic()
        next_tick += tick_s
        self._after_ready()
        while not self._stopping:
            now = time.monotonic()
            deadline = min(next_tick, self.transport.next_deadline(), self.link.next_deadline(),
                           self.events.next_deadline())
            if self.publisher.compacting:
                deadline = now  # shm compaction steps to take: look for input, no sleep
            events = dict(self.poller.poll(max(0, int((deadline - now) * 1000)) + 1))
            now = time.monotonic()
            self.transport.service_timers(now)
            self.link.service_timers(now)
            # NB: zmq polling is level-triggered, so a socket left unread (nothing was
            # reported on it, or more than one drain's worth waits) is reported again by
            # the next poll; skipping it saves a raising non-blocking receive.
            self.events.service(now, self.events.socket in events)
            if self.writer.socket in events:
                self._on_writer_events()
            if self.transport.router in events:
                self._drain_peers()
            if self.link.socket in events:
                self._drain_requests()
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
                self._send_committed(force=True)
            self.driver.process_ready()
            self._after_ready()
            if self._conf_snapshots.taken:
                for meta in self._conf_snapshots.taken:
                    self.driver.on_snapshot_written(meta)
                self._conf_snapshots.taken.clear()
            if self.publisher.compacting or now >= self._next_shm_compact:
                self._compact_shm_step(now)

    def close(self) -> None:
        self.backups.close()
        for closer in (self.link.close, self.transport.close, self.writer.close):
            try:
                closer()
            except (zmq.ZMQError, StorageError, ProtocolError):
                pass
        self.events.close()
        self.publisher.set_lease(0)
        self.publisher.close()
        self.ctx.term()

    # -- inputs -----------------------------------------------------------------------------

    def _on_writer_events(self) -> None:
        for event in self.writer.recv():
            if isinstance(event, Persisted):
                self.driver.on_persisted(event.number)
            elif isinstance(event, SnapshotWritten):
                self.checker.check(event.index, event.state_hash)
                meta = SnapshotMeta(event.index, event.term, event.conf_state)
                try:
                    data = event.load().data
                except StorageError as exc:
                    self.log.warning("cannot load written snapshot index=%d error=%s",
                                     event.index, exc)
                    continue
                self.driver.on_snapshot_written(meta, data)
                self.log.info("snapshot written index=%d first_index=%d", event.index,
                              self.storage.first_index())
            elif isinstance(event, DiskStatus):
                self._on_disk(event)

    def _on_disk(self, disk: DiskStatus) -> None:
        """
        The writer's disk health changed. While the WAL fails, this node refuses writes
        (storage_unavailable) and, if it leads, hands leadership to the most caught-up
        other voter: it cannot count itself toward a quorum until its WAL works again.
        """
        was_failing = self._disk.wal_error is not None
        self._disk = disk
        if disk.wal_error is not None and not was_failing:
            self.log.warning("storage failing: refusing writes until the wal recovers error=%s",
                             disk.wal_error)
            target = self._best_other_voter()
            if self.driver.role is Role.LEADER and target is not None:
                self.driver.transfer_leader(target)
                self.log.info("leadership transfer requested to=%s reason=storage_failing", target)
        elif disk.wal_error is None and was_failing:
            self.log.info("storage recovered: accepting writes again")
        if disk.snapshot_error is not None:
            self.log.warning("snapshot writes failing: the wal grows until one succeeds error=%s",
                             disk.snapshot_error)

    def _best_other_voter(self) -> NodeId | None:
        """The other voter with the longest matched log (None: this node is alone)."""
        voters = [v for v in self.driver.conf_state.voters if v != self.node_id]
        status = self.raw.status()
        ranked = sorted(voters, key=lambda v: -status.progress[v].match if v in status.progress else 0)
        return ranked[0] if ranked else None

    def _storage_unavailable(self, request: Request) -> bytes | None:
        """The refusal of a write while this node's WAL fails, None while it works."""
        if self._disk.wal_error is None:
            return None
        return error_reply(request.id, "storage_unavailable",
                           f"node {self.node_id} cannot persist writes ({self._disk.wal_error}); "
                           "nothing was applied; retry (another node may lead)")

    def _drain_peers(self) -> None:
        for _ in range(1000):
            got = self.transport.recv()
            if got is None:
                return
            sender, payload = got
            try:
                msg = codec.decode_message(payload)
            except ProtocolError as exc:
                self._peer_drop_log.warning("bad", "bad peer message from=%s error=%s", sender, exc)
                continue
            if msg.frm != sender or msg.to != self.node_id:
                self._peer_drop_log.warning("misaddressed",
                                            "misaddressed peer message from=%s frm=%s to=%s",
                                            sender, msg.frm, msg.to)
                continue
            self.driver.on_message(msg)

    def _on_tick(self) -> None:
        self.driver.on_tick()
        for peer in self.transport.unreachable():
            self.raw.report_unreachable(peer)
        self._maybe_promote_learners()
        if self.driver.role is not Role.LEADER:
            return
        self._maybe_mint_cluster_id()
        now = self.clock.now_ms()
        if self._expiry_pending is None and now >= self._next_expiry_ms:
            self._next_expiry_ms = now + EXPIRY_INTERVAL_MS
            command = self.machine.kv.expiry_command(now)
            if command is not None:
                rid = next(self._ids)
                self._internal.add(rid)
                self._expiry_pending = rid
                self.driver.submit_write(rid, command)

    def _maybe_mint_cluster_id(self) -> None:
        """
        A leader whose state has no cluster id (a new cluster, or one of an older release)
        proposes one through Raft; the first applied wins (concord.node.members), so a
        proposal racing another leader's is harmless. One in flight at a time.
        """
        if self.machine.state.cluster_id is not None or self._cluster_id_pending in self._internal:
            return
        now = self.clock.now_ms()
        if now < self._next_cluster_id_ms:  # a refused proposal is retried, not every tick
            return
        self._next_cluster_id_ms = now + CLUSTER_ID_RETRY_MS
        cluster_id = new_cluster_id()
        self._cluster_id_pending = self._internal_id()
        self.log.info("proposing cluster id cluster_id=%s", cluster_id)
        self.driver.submit_write(self._cluster_id_pending, encode_cluster_id(cluster_id))

    def _compact_shm_step(self, now: float) -> None:
        """Start a shm compaction when due, or advance the one running by one step."""
        publisher = self.publisher
        if not publisher.compacting:
            self._next_shm_compact = now + SHM_COMPACT_INTERVAL_S
            publisher.maybe_begin_compaction(min_dead_ratio=SHM_COMPACT_RATIO)
        elif publisher.compact_step(SHM_COMPACT_STEP_S):
            # The interval runs from the switch: readers rebuild after each one, and two
            # switches closer than a rebuild would make them start over.
            self._next_shm_compact = now + SHM_COMPACT_INTERVAL_S
            stats = publisher.stats()
            self.log.info("shm compacted used_bytes=%d generation=%d", stats.used_bytes,
                          stats.generation)

    def _maybe_promote_learners(self) -> None:
        """Carry out concord.node.promotion's decision for this tick (every role)."""
        driver = self.driver
        if driver.role is Role.LEADER:
            status = self.raw.status()
            view = LeaderView(driver.term, True, status.conf_state, status.committed,
                              {member: pr.match for member, pr in status.progress.items()})
        else:
            view = LeaderView(driver.term, False, driver.conf_state, driver.commit, {})
        self._promotions, due = decide_promotions(self._promotions, view)
        for learner in due:
            rid = self._internal_id()
            # Recorded before the proposal: a refused one is answered at once.
            self._promotions = self._promotions.proposed(rid, learner)
            self.log.info("promoting learner member=%s match=%d", learner, view.match[learner])
            self.driver.submit_conf_change(rid, ConfChange.add_voter(learner))

    # -- requests ----------------------------------------------------------------------------

    def _drain_requests(self) -> None:
        for _ in range(1000):
            req = self.link.recv()
            if req is None:
                return
            try:
                request = decode_request(req.payload, max_bytes=1 << 30)
            except InvalidRequestError as exc:
                self.link.reply(req.token, error_reply(exc.request_id, exc.code, exc.message))
                continue
            reply = self._handle(req.token, request)
            if reply is not None:
                self.link.reply(req.token, reply)

    def _hint(self) -> str | None:
        leader = self.driver.leader_id
        if leader is None or leader == self.node_id:
            return None
        return self.book.client_endpoint(leader)

    def _not_leader(self, request: Request) -> bytes:
        leader = self.driver.leader_id
        if leader is None or leader == self.node_id:
            return error_reply(request.id, "no_leader", "no leader is known; retry shortly")
        return error_reply(request.id, "not_leader", f"node {self.node_id} is not the leader; "
                           f"the leader is {leader}", self._hint())

    def _handle(self, token: int, request: Request) -> bytes | None:
        op = request.op
        try:
            if op in CLIENT_WRITE_OPS:
                return self._write(token, request)
            if op == "status":
                return ok_reply(request.id, self.status())
            if op == "members":
                return ok_reply(request.id, {"members": self._members()})
            if op == "hash_kv":
                return ok_reply(request.id, self.hash_kv(request))
            if op == "backup":
                return ok_reply(request.id, self.backup(request))
            if op == "fault":
                return fault_reply(self.transport, request)
            if op in ("add_member", "remove_member", "promote_member"):
                return self._membership(token, request)
            if op == "transfer_leader":
                return self._transfer(request)
            if op == "events":
                return self.events.handle(request)
            return self._read(token, request)
        except ClientError as exc:
            return error_reply(request.id, exc.code, exc.message)

    def _write(self, token: int, request: Request) -> bytes | None:
        if self.driver.role is not Role.LEADER:
            return self._not_leader(request)
        refused = self._storage_unavailable(request)
        if refused is not None:
            return refused
        body: dict[str, object] = {"op": request.op, **request.args}
        if request.client_id is not None:
            body["client_id"] = request.client_id
            body["seq"] = request.seq
            if request.min_seq is not None:
                body["min_seq"] = request.min_seq
        command = kv_encode_request(body, self.machine.kv.config)
        rid = next(self._ids)
        self._pending[rid] = _Pending(token, request)
        self.driver.submit_write(rid, command)
        return None

    def _read(self, token: int, request: Request) -> bytes | None:
        consistency = Consistency(request.consistency)
        rid = next(self._ids)
        self._pending[rid] = _Pending(token, request)
        self.driver.submit_read(rid, str(request.args.get("key", "")), consistency)
        return None

    def _membership(self, token: int, request: Request) -> bytes | None:
        if self.driver.role is not Role.LEADER:
            return self._not_leader(request)
        refused = self._storage_unavailable(request)
        if refused is not None:
            return refused
        args = request.args
        member = NodeId(str(args["member_id"]))
        if not is_node_id(member):
            raise InvalidRequestError(f"member_id must be {NODE_ID_RULE}, got {member!r}")
        conf = self.driver.conf_state
        if request.op == "add_member":
            address = Address(
                member, str(args["host"]), int(str(args["client_port"])),
                int(str(args["peer_port"])), int(str(args["events_port"])),
            )
            if address.peer is None:
                raise InvalidRequestError("add_member needs a non-zero peer_port")
            # Replicate the address first (an ordinary entry), then change the membership.
            self.driver.submit_write(self._internal_id(), encode_address(address))
            self.book.set(address)
            self._joining.add(member)
            self._sync_peers()
            learner = args.get("learner")
            self._promotions = self._promotions.added(
                member, learner if isinstance(learner, bool) else None, self.driver.term)
            change = ConfChange.add_learner(member)
            if learner is False:
                change = ConfChange.add_voter(member)
        elif request.op == "remove_member":
            if member not in conf.voters and member not in conf.learners:
                raise InvalidRequestError(f"{member} is not a member")
            change = ConfChange.remove(member)
        else:
            if member not in conf.learners:
                raise InvalidRequestError(f"{member} is not a learner")
            change = ConfChange.add_voter(member)
        rid = next(self._ids)
        self._pending[rid] = _Pending(token, request)
        if request.op == "promote_member":
            self._promotions = self._promotions.proposed(rid, member)
        self.driver.submit_conf_change(rid, change)
        return None

    def _transfer(self, request: Request) -> bytes:
        if self.driver.role is not Role.LEADER:
            return self._not_leader(request)
        target = request.args.get("member_id")
        voters = [v for v in self.driver.conf_state.voters if v != self.node_id]
        if target is None:
            target = self._best_other_voter()
            if target is None:
                raise InvalidRequestError("no other voter to transfer leadership to")
        if target not in voters:
            raise InvalidRequestError(f"{target} is not another voter")
        self.driver.transfer_leader(NodeId(str(target)))
        self.log.info("leadership transfer requested to=%s", target)
        return ok_reply(request.id, {"transferring_to": target})

    def _internal_id(self) -> int:
        rid = next(self._ids)
        self._internal.add(rid)
        return rid

    # -- replies -------------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        rid = reply.request_id
        self._promotions = self._promotions.answered(rid)
        if rid in self._internal:
            self._internal.discard(rid)
            if rid == self._expiry_pending:
                self._expiry_pending = None
            return
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        # NB: sent only after the round's changes are in shared memory (_after_ready), so
        # a client that saw its write acknowledged finds it in every later read here.
        self._outbox.append((pending.token, self._encode_reply(pending.request, reply)))

    def _encode_reply(self, request: Request, reply: Reply) -> bytes:
        rid = request.id
        status = reply.status
        if status is ReplyStatus.OK:
            if request.op in CLIENT_WRITE_OPS:
                result = reply.result
                if isinstance(result, dict):
                    if "error" in result:
                        return error_reply(rid, str(result["error"]),
                                           str(result.get("message", "")))
                    return ok_reply(rid, result)
                return ok_reply(rid, {})
            if isinstance(reply.result, ConfState):
                return ok_reply(rid, {"members": self._members(reply.result)})
            args = {k: v for k, v in request.args.items() if k != "consistency"}
            body = {"op": request.op, **args}
            # Cluster time, not this host's wall clock (shm layout.py, "Cluster time").
            result = self.machine.kv.read_request(body, self.publisher.cluster_now_ms())
            if "error" in result:
                return error_reply(rid, str(result["error"]), str(result.get("message", "")))
            return ok_reply(rid, result)
        if status is ReplyStatus.NOT_LEADER:
            return self._not_leader(request)
        if status is ReplyStatus.DROPPED:
            return error_reply(rid, "not_leader", "the proposal was dropped (leadership changed); "
                               "nothing was applied", self._hint())
        if status is ReplyStatus.TIMEOUT:
            return error_reply(rid, "timeout", "the read could not be confirmed in time")
        return error_reply(rid, "timeout", "leadership changed: the outcome is unknown",
                           self._hint())

    # -- after each round of Readys ------------------------------------------------------------

    def _on_snapshot_installed(self, meta: SnapshotMeta) -> None:
        self.log.info("snapshot installed index=%d", meta.index)

    def _maybe_resync_shm(self) -> None:
        """
        Publish the whole state to shared memory in one reset, and restart the change
        stream's history at its revision, once the state machine has caught up with
        both what shared memory already holds (this worker restarted alone: never go
        backwards) and what was committed when this worker started (start-up replay:
        one bulk publish instead of one per replayed change, and no replayed events; a
        subscriber asking for an earlier revision gets `compacted`, never a gap).
        """
        machine = self.machine
        kv = machine.kv
        if kv.applied_index < max(self.publisher.applied_index, self._replay_until):
            machine.changes.clear()  # the reset publishes them
            return
        started = time.monotonic()
        records = chain(zip(repeat(Space.USER), kv.records()),
                        zip(repeat(Space.SYSTEM), kv.system_records()))
        self.publisher.reset(records, kv.applied_index, kv.revision, kv.last_ts_ms)
        machine.changes.clear()
        machine.restored = False
        self.events.reset(kv.revision)
        if not self._shm_synced:
            done = time.monotonic()
            self.log.info(
                "start-up state published applied=%d keys=%d restore_s=%.3f replay_s=%.3f "
                "shm_publish_s=%.3f total_s=%.3f",
                kv.applied_index, len(kv), self._restored_s,
                started - self._run_started_s,
                done - started, done - self._started_s,
            )
        self._shm_synced = True

    def _after_ready(self) -> None:
        machine = self.machine
        kv = machine.kv
        if machine.restored or not self._shm_synced:
            self._maybe_resync_shm()
        elif machine.changes or kv.applied_index > self.publisher.applied_index:
            changes, machine.changes = machine.changes, []
            self.publisher.publish(changes, kv.applied_index, kv.revision, kv.last_ts_ms)
            self.events.publish(changes)
        driver = self.driver
        # The leader's client endpoint rides along: read workers hint with it (members
        # added at run time are known only to this address book).
        status = (driver.term, driver.leader_id, driver.role,
                  self.book.client_endpoint(driver.leader_id))
        if status != self._published_status:
            if status[:3] != (self._published_status or (None, None, None))[:3]:
                self.log.info("raft status changed leader=%s", driver.leader_id)
            self._published_status = status
            self.publisher.set_status(*status)
        lease_ms = driver.lease_until_ms
        if driver.applied_term != driver.term or driver.applied_index < driver.commit:
            # Read workers serve leader reads from shm: only once everything committed
            # (earlier terms' entries included) is applied and published.
            lease_ms = -1
        if lease_ms != self._published_lease_ms:
            self._published_lease_ms = lease_ms
            # NB: the driver's lease is on the monotonic timer already (the read
            # workers compare it with time.monotonic_ns() too): never on the wall clock.
            self.publisher.set_lease(0 if lease_ms < 0 else lease_ms * 1_000_000)
        for token, payload in self._outbox:
            self.link.reply(token, payload)
        self._outbox.clear()
        if machine.addresses_changed:
            machine.addresses_changed = False
            self._sync_peers()
        conf = driver.conf_state
        applied = driver.applied_index
        if conf != self._conf_sent:
            self._conf_sent = conf
            self._sync_peers()
            self.writer.committed(applied, conf)
            self.checker.record(applied, machine.state_hash())
            self._last_committed_sent = applied
        else:
            self._send_committed(force=False)

    def _send_committed(self, force: bool) -> None:
        """Tell the writer what is applied: if `force`, anything new, else in batches."""
        applied = self.driver.applied_index
        if self._conf_sent is None:
            return  # the first COMMITTED carries the membership (_after_ready sends it)
        due = self._last_committed_sent + (1 if force else COMMITTED_EVERY_ENTRIES)
        if applied >= due:
            self.writer.committed(applied)
            self.checker.record(applied, self.machine.state_hash())
            self._last_committed_sent = applied

    def _sync_peers(self) -> None:
        conf = self.driver.conf_state
        wanted = set(conf.voters) | set(conf.learners) | set(conf.voters_outgoing)
        wanted |= set(conf.learners_next)
        self._joining -= wanted
        wanted |= self._joining
        if self.node_id not in wanted:
            # Not (yet, or no longer) a member: keep links to everyone we know, so the
            # leader that adds us gets answers.
            wanted |= set(self.book.peer_endpoints())
        self.transport.set_peers(
            {p: e for p, e in self.book.peer_endpoints().items() if p in wanted})

    # -- status -------------------------------------------------------------------------------

    def _members(self, conf: ConfState | None = None) -> list[dict[str, object]]:
        conf = conf or self.driver.conf_state
        out: list[dict[str, object]] = []
        for role, ids in (("voter", conf.voters), ("learner", conf.learners)):
            for member in ids:
                address = self.book.get(member)
                entry: dict[str, object] = {"id": member, "role": role,
                                            "client": None, "peer": None, "events": None}
                if address is not None:
                    entry.update(address.as_map())
                if member == self.node_id:
                    entry["peer"] = self.peer_endpoint
                    entry["events"] = self.events_endpoint
                out.append(entry)
        return out

    def backup(self, request: Request) -> dict[str, object]:
        """
        The `backup` op's result (docs/protocol.md): without `index`, start a
        point-in-time image at the applied index (concord.node.backup) and answer
        `{index, term, state: "pending"}`; with `index`, `{state: "pending"}` while it is
        written, then `{state: "ready", index, term, size, offset, data}` chunk by chunk.
        """
        index = request.args.get("index")
        if not isinstance(index, int):
            d = self.driver
            meta = self.backups.start(SnapshotMeta(d.applied_index, d.applied_term, d.conf_state))
            return {"node": self.node_id, "index": meta.index, "term": meta.term, "state": "pending"}
        offset = request.args.get("offset")
        got = self.backups.read(index, offset if isinstance(offset, int) else 0)
        if got is None:
            return {"node": self.node_id, "index": index, "state": "pending"}
        meta, size, chunk = got
        return {"node": self.node_id, "index": meta.index, "term": meta.term, "state": "ready",
                "size": size, "offset": offset or 0, "data": chunk}

    def hash_kv(self, request: Request) -> dict[str, object]:
        """
        The `hash_kv` op's result (docs/protocol.md): the kv state hash this node had
        right after applying log index `index` (default: its applied index now), with
        `hash: nil` while it has not applied that far yet.

        Raises:
            NotFoundError: `index` is older than the hashes this node remembers.
        """
        hashes = self.machine.hashes
        applied = self.driver.applied_index
        index = request.args.get("index")
        if not isinstance(index, int):
            index = applied
        result: dict[str, object] = {"node": self.node_id, "applied": applied,
                                     "index": index, "hash": None}
        if index > applied:
            return result
        if index == applied:
            result["hash"] = self.machine.kv.state_hash()
            return result
        position = bisect.bisect_left(hashes, (index, -1))
        if position < len(hashes) and hashes[position][0] == index:
            result["hash"] = hashes[position][1]
            return result
        oldest = hashes[0][0] if hashes else applied
        raise NotFoundError(f"node {self.node_id} holds no state hash at index {index} "
                            f"(it remembers {oldest}..{applied})")

    def status(self) -> dict[str, object]:
        """The `status` op's result (docs/node.md)."""
        d = self.driver
        kv = self.machine.kv
        leader = d.leader_id
        return {
            "node": self.node_id,
            "cluster_id": self.machine.state.cluster_id,
            "pid": os.getpid(),
            "role": _role_name(d.role),
            "term": d.term,
            "leader": leader,
            "leader_client": self.book.client_endpoint(leader),
            "commit": d.commit,
            "applied": d.applied_index,
            "revision": kv.revision,
            "state_hash": kv.state_hash(),
            "data_hash": kv.data_hash(),
            "keys": len(kv),
            "db_bytes": _tree_bytes(self.config.node.data_dir),
            "lease": d.lease_valid,
            "first_index": self.storage.first_index(),
            "last_index": self.storage.last_index(),
            "members": self._members(),
            "storage": {"ok": self._disk.ok, "wal_error": self._disk.wal_error,
                        "snapshot_error": self._disk.snapshot_error},
            "shm": {"version": FORMAT_VERSION, "base": self.shm_names.base, "ctl": self.shm_names.ctl,
                    "node": self.shm_names.node, "token": self.shm_names.token},
        }


def _tree_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (WAL segments and snapshots: the `db_bytes` status field)."""
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue  # removed while we looked (a pruned segment or snapshot)
    return total


def run_raft_worker(
    config: NodeConfig, endpoints: WorkerEndpoints, join: bool = False
) -> None:
    """Process entry point (a supervisor child): recover, report READY, serve until SIGTERM."""
    from supervisor import notify_ready, previous_info

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
    notify_ready({"peer": worker.peer_endpoint, "events": worker.events_endpoint,
                  "peer_port": peer_port, "events_port": events_port})
    try:
        worker.run()
    except Exception as exc:  # the process's top level: log once, exit non-zero (restart)
        worker.log.exception("raft worker failed")
        raise SystemExit(1) from exc
    finally:
        worker.close()
    worker.log.info("raft worker stopped")

