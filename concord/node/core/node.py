"""
The raft worker's decisions, as a pure function from events to effects.

`NodeCore` is the part of the raft worker (concord.node.raft_worker) that decides but
does not act: the driver (concord.node.driver) runs the consensus core; this decides
what the rest of the node does about it. The worker and the simulator (concord.sim.node)
feed it the same events and carry out the effects it returns (concord.node.core.effects):

    after_ready(view)        after every round of Readys: publish to shared memory (or
                             resync it whole), the raft status, the read lease, the
                             replies, the peer links, a durable snapshot when due
    on_reset_published()     the reset a ResyncShm began (built in steps) is published
    on_tick(view, leader, now_ms, has_cluster_id)
                             every tick: learner auto-promotion, the cluster-id and
                             expiry proposals of a leader
    on_snapshot_done(view, ok) / on_snapshot_installed(meta, applied_bytes)
                             the snapshot TakeSnapshot started is durable (ok) or failed;
                             a snapshot from the leader replaced the state
    on_reply(request_id)     a request the core proposed itself was answered
    add_member / remove_member / promote_member
                             a membership request: the checks, then the address entry
                             before the configuration change
    on_disk(wal_error, ...)  the log writer's disk health changed
    new_request_id()         ids of every request (the owner's and the core's share one space)

Invariants enforced here:

- shared memory never goes backwards: after a restart of the worker alone it holds a
  later state than the recovered one and is replaced only once the state machine
  caught up with it (and with the start-up replay: one bulk publish);
- a reset (ResyncShm) is built in steps while the node votes, replicates and serves
  from its state machine: until it is published nothing else is (the changes applied
  meanwhile follow it in one PublishChanges), and shared memory keeps the state before;
- replies leave only after the changes of their round are published (SendReplies comes
  after PublishChanges / ResyncShm), so a client that saw its write acknowledged finds
  it in every later read of this node; while a reset is built the replies of writes
  wait for it (SendReplies.shm_current);
- read workers get a lease only while everything committed (earlier terms' entries
  included) is applied and published, and no reset is being built;
- one durable snapshot at a time, when the schedule (concord.node.core.snapshots) says
  it is due and no reset is being built, at the applied index with the membership in
  force there; a failed one is retried later, never fatal;
- a member's address entry is proposed before the configuration change that adds it.

Pure. No IO, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from concord.errors import InvalidRequestError
from concord.ids import NodeId
from concord.node.core.effects import (
    DropChanges,
    Effect,
    MintClusterId,
    ProposeConfChange,
    ProposeAddress,
    ProposeExpiry,
    PublishChanges,
    PublishStatus,
    ResyncShm,
    SendReplies,
    SetLease,
    SetPeers,
    TakeSnapshot,
    TransferLeader,
)
from concord.node.core.snapshots import AppliedPoint, SnapshotSchedule
from concord.node.promotion import LeaderView, Promotions, decide_promotions
from concord.raft.messages import ConfChange, ConfState, Snapshot, SnapshotMeta
from concord.raft.state import Role

__all__ = [
    "CLUSTER_ID_RETRY_MS",
    "ConfChangeSnapshots",
    "EXPIRY_INTERVAL_MS",
    "NodeCore",
    "NodeView",
    "conf_members",
]

#: How often the leader looks for due TTLs to expire (ms of cluster time).
EXPIRY_INTERVAL_MS = 100
#: Milliseconds between a leader's cluster-id proposals while none is applied.
CLUSTER_ID_RETRY_MS = 1000
_SEND_REPLIES = SendReplies()
_SEND_REPLIES_RESETTING = SendReplies(shm_current=False)


@dataclass(frozen=True, slots=True)
class NodeView:
    """
    What the core needs of the driver and the state machine, read after a Ready round.

    Attributes:
        term, leader_id, role, commit: the driver's.
        applied_index, applied_term: the last entry applied to the state machine.
        lease_until_ms: the driver's lease end on its timer (-1: none).
        conf_state: the membership in force.
        restored: a snapshot from the leader replaced the state since the last publish.
        has_changes: applied entries left changes to publish.
        addresses_changed: the address book changed since the last round.
        leader_client: the leader's client endpoint (None: unknown).
        known_peers: every member id the address book knows.
        applied_bytes: bytes of entry data applied in this life (the snapshot size trigger).
        durable_index: the last index of the log known persisted (0: none).
    """

    term: int
    leader_id: NodeId | None
    role: Role
    commit: int
    applied_index: int
    applied_term: int
    lease_until_ms: int
    conf_state: ConfState
    restored: bool = False
    has_changes: bool = False
    addresses_changed: bool = False
    leader_client: str | None = None
    known_peers: frozenset[NodeId] = frozenset()
    applied_bytes: int = 0
    durable_index: int = 0


def conf_members(conf: ConfState) -> frozenset[NodeId]:
    """Every member of `conf`, voter or learner, incoming or outgoing."""
    return (frozenset(conf.voters) | frozenset(conf.learners) | frozenset(conf.voters_outgoing)
            | frozenset(conf.learners_next))


class ConfChangeSnapshots:
    """
    The driver's SnapshotSink, used only right after a membership change: the driver then
    snapshots its state machine so that a member just added can be sent a snapshot that
    includes it (an older one, without it, would be refused). The log writer makes the
    durable snapshots itself; these only feed InstallSnapshot, so the owner hands each
    back to the driver as "written" after the Ready round (the in-memory log may then be
    compacted; the WAL keeps every entry until the writer's own snapshot covers it).
    """

    def __init__(self) -> None:
        self.taken: list[SnapshotMeta] = []

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self.taken.append(snapshot.meta)

    def drain(self) -> list[SnapshotMeta]:
        """The snapshots taken since the last call (to hand back as written)."""
        taken, self.taken = self.taken, []
        return taken


class NodeCore:
    """
    The raft worker's decision state. Not thread-safe: one owner feeds every event.

    Args:
        node_id: this node's id.
        new_id: the source of request ids (unique among everything the driver is given).
        shm_applied: the applied index shared memory holds at start (a worker restarted
            alone finds its predecessor's state there; 0 when fresh).
        replay_until: the commit index recovered at start: entries up to it are replayed
            into the state machine and published once, in bulk.
        snapshots: when durable snapshots are due (None: never).
    """

    def __init__(self, node_id: NodeId, new_id: Callable[[], int], shm_applied: int = 0,
                 replay_until: int = 0, snapshots: SnapshotSchedule | None = None) -> None:
        self.node_id = node_id
        self.new_request_id = new_id
        self.shm_applied = shm_applied
        self.replay_until = replay_until
        self.shm_synced = False
        self.resetting = False  # a ResyncShm's reset is built, not yet published
        self.promotions = Promotions()
        self.joining: set[NodeId] = set()  # added by add_member, not yet in the conf
        self.internal: set[int] = set()  # ids of the core's own proposals
        self.expiry_pending: int | None = None
        self.cluster_id_pending: int | None = None
        self.next_cluster_id_ms = 0
        self.next_expiry_ms = 0
        self.conf_sent: ConfState | None = None
        self.snapshots = snapshots
        self.snapshot_running: TakeSnapshot | None = None
        self.published_status: tuple[int, NodeId | None, Role, str | None] | None = None
        self.published_lease_ms = -2
        self.wal_failing = False

    # -- start and after every round of Readys ------------------------------------------------

    def on_start(self, view: NodeView) -> list[Effect]:
        """The owner attached shared memory: publish the recovered state if it may."""
        return [self._resync(view)]

    def after_ready(self, view: NodeView) -> list[Effect]:
        """The effects of one round: publish, status, lease, replies, peers, snapshot."""
        effects: list[Effect] = []
        if view.restored or not self.shm_synced:
            effects.append(self._resync(view))
        elif self.resetting:
            pass  # the changes applied meanwhile are published after the reset
        elif view.has_changes or view.applied_index > self.shm_applied:
            self.shm_applied = view.applied_index
            effects.append(PublishChanges(view.applied_index))
        status = (view.term, view.leader_id, view.role, view.leader_client)
        if status != self.published_status:
            before = self.published_status
            changed = before is None or status[:3] != before[:3]
            self.published_status = status
            effects.append(PublishStatus(view.term, view.leader_id, view.role,
                                         view.leader_client, changed))
        lease_ms = self._lease_ms(view)
        if lease_ms != self.published_lease_ms:
            self.published_lease_ms = lease_ms
            effects.append(SetLease(lease_ms))
        effects.append(_SEND_REPLIES_RESETTING if self.resetting else _SEND_REPLIES)
        if view.addresses_changed:
            effects.append(self._peers(view))
        if view.conf_state != self.conf_sent:
            self.conf_sent = view.conf_state
            effects.append(self._peers(view))
        effects.extend(self._snapshot(view))
        return effects

    def on_reset_published(self) -> None:
        """
        The owner published the reset of the last ResyncShm (readers see it): the
        changes applied since are published by the next round's `after_ready`.
        """
        self.resetting = False

    # -- durable snapshots ------------------------------------------------------------------

    def _snapshot(self, view: NodeView) -> list[Effect]:
        """TakeSnapshot if one is due and none runs."""
        schedule = self.snapshots
        if schedule is None:
            return []
        if self.snapshot_running is not None or self.resetting:
            # NB: not while a reset is built: the fork's child would compete with it for
            # the CPU (and copy the pages it touches) when the node is busiest.
            return []
        meta = schedule.due(self._point(view))
        if meta is None:
            return []
        self.snapshot_running = TakeSnapshot(meta, view.applied_bytes)
        return [self.snapshot_running]

    def on_snapshot_done(self, view: NodeView, ok: bool) -> None:
        """
        The snapshot of the running TakeSnapshot is durable (`ok`), or could not be
        started, or its child failed or died: retried later.
        """
        running, self.snapshot_running = self.snapshot_running, None
        if running is None or self.snapshots is None:
            return
        if ok:
            self.snapshots.on_written(running.meta, running.applied_bytes)
        else:
            self.snapshots.on_failed(self._point(view))

    def on_snapshot_installed(self, meta: SnapshotMeta, applied_bytes: int) -> None:
        """A snapshot from the leader replaced the state (the log writer makes it durable)."""
        if self.snapshots is not None:
            self.snapshots.on_installed(meta, applied_bytes)

    @staticmethod
    def _point(view: NodeView) -> AppliedPoint:
        return AppliedPoint(view.applied_index, view.applied_term, view.conf_state,
                            view.applied_bytes, view.durable_index)

    def _lease_ms(self, view: NodeView) -> int:
        """
        The lease read workers may use: the driver's, once everything committed is
        applied, and published (no reset being built).
        """
        if self.resetting:
            return -1  # shared memory holds an older state until the reset is published
        if view.applied_term != view.term or view.applied_index < view.commit:
            # Read workers serve leader reads from shm: only once everything committed
            # (earlier terms' entries included) is applied and published.
            return -1
        return view.lease_until_ms

    def _resync(self, view: NodeView) -> Effect:
        """
        Publish the whole state in one reset once the state machine caught up with both
        what shared memory holds (never go backwards) and the start-up replay; until
        then drop the collected changes (the reset publishes their result).
        """
        if view.applied_index < max(self.shm_applied, self.replay_until):
            return DropChanges()
        first = not self.shm_synced
        self.shm_synced = True
        self.resetting = True
        self.shm_applied = view.applied_index
        return ResyncShm(view.applied_index, first)

    def _peers(self, view: NodeView) -> SetPeers:
        wanted = conf_members(view.conf_state)
        self.joining -= wanted
        wanted |= self.joining
        if self.node_id not in wanted:
            # Not (yet, or no longer) a member: keep links to everyone we know, so the
            # leader that adds us gets answers.
            wanted |= view.known_peers
        return SetPeers(wanted)

    # -- every tick ---------------------------------------------------------------------------

    def on_tick(self, view: NodeView, leader: LeaderView, now_ms: int,
                has_cluster_id: bool = True) -> list[Effect]:
        """
        One tick: learner promotions (every role: a follower's clears the state), then
        a leader's cluster-id and expiry proposals.

        Args:
            leader: the promotion decision's view of the core (its progress if leader).
            now_ms: cluster time (the expiry interval is measured on it).
            has_cluster_id: the replicated state holds a cluster id.
        """
        effects: list[Effect] = []
        self.promotions, due = decide_promotions(self.promotions, leader)
        for learner in due:
            rid = self._internal_id()
            # Recorded before the proposal: a refused one is answered at once.
            self.promotions = self.promotions.proposed(rid, learner)
            effects.append(ProposeConfChange(rid, ConfChange.add_voter(learner), "promote"))
        if view.role is Role.LEADER:
            effects.extend(self._leader_tick(now_ms, has_cluster_id))
        return effects

    def _leader_tick(self, now_ms: int, has_cluster_id: bool) -> list[Effect]:
        effects: list[Effect] = []
        # A leader whose state has no cluster id proposes one; the first applied wins
        # (concord.node.members), so racing another leader's is harmless. One in flight,
        # and a refused one is retried every CLUSTER_ID_RETRY_MS, not every tick.
        if (not has_cluster_id and self.cluster_id_pending not in self.internal
                and now_ms >= self.next_cluster_id_ms):
            self.next_cluster_id_ms = now_ms + CLUSTER_ID_RETRY_MS
            self.cluster_id_pending = self._internal_id()
            effects.append(MintClusterId(self.cluster_id_pending))
        if self.expiry_pending is None and now_ms >= self.next_expiry_ms:
            self.next_expiry_ms = now_ms + EXPIRY_INTERVAL_MS
            self.expiry_pending = self._internal_id()
            effects.append(ProposeExpiry(self.expiry_pending, now_ms))
        return effects

    # -- replies ------------------------------------------------------------------------------

    def on_reply(self, request_id: int) -> bool:
        """
        A request was answered. Returns True if it was one of the core's own proposals
        (nobody else waits for its reply).
        """
        self.promotions = self.promotions.answered(request_id)
        if request_id not in self.internal:
            return False
        self.internal.discard(request_id)
        if request_id == self.expiry_pending:
            self.expiry_pending = None
        return True

    def _internal_id(self) -> int:
        rid = self.new_request_id()
        self.internal.add(rid)
        return rid

    # -- membership requests --------------------------------------------------------------

    def add_member(self, view: NodeView, member: NodeId, learner: bool | None,
                   request_id: int) -> list[Effect]:
        """
        `add_member` at the leader (the caller put the address in its book): replicate
        the address first (an ordinary entry), keep links to the member, then change
        the membership. `learner` None: a learner promoted once caught up; True: a
        learner that stays one; False: a voter at once.
        """
        self.joining.add(member)
        effects: list[Effect] = [ProposeAddress(self._internal_id(), member), self._peers(view)]
        self.promotions = self.promotions.added(member, learner, view.term)
        change = ConfChange.add_voter(member) if learner is False else ConfChange.add_learner(member)
        effects.append(ProposeConfChange(request_id, change, "add_member"))
        return effects

    def remove_member(self, conf: ConfState, member: NodeId, request_id: int) -> list[Effect]:
        """`remove_member` at the leader. Raises InvalidRequestError: not a member."""
        if member not in conf.voters and member not in conf.learners:
            raise InvalidRequestError(f"{member} is not a member")
        return [ProposeConfChange(request_id, ConfChange.remove(member), "remove_member")]

    def promote_member(self, conf: ConfState, member: NodeId, request_id: int) -> list[Effect]:
        """`promote_member` at the leader. Raises InvalidRequestError: not a learner."""
        if member not in conf.learners:
            raise InvalidRequestError(f"{member} is not a learner")
        self.promotions = self.promotions.proposed(request_id, member)
        return [ProposeConfChange(request_id, ConfChange.add_voter(member), "promote_member")]

    # -- the disk -------------------------------------------------------------------------------

    def on_disk(self, wal_error: str | None, role: Role,
                best_other_voter: NodeId | None) -> list[Effect]:
        """
        The writer's disk health changed. While the WAL fails this node refuses writes
        (`refuses_writes`) and, if it leads, hands leadership to the most caught-up other
        voter: it cannot count itself toward a quorum until its WAL works again.
        """
        was_failing, self.wal_failing = self.wal_failing, wal_error is not None
        if self.wal_failing and not was_failing and role is Role.LEADER:
            if best_other_voter is not None:
                return [TransferLeader(best_other_voter, "storage_failing")]
        return []

    @property
    def refuses_writes(self) -> bool:
        """Writes (and membership changes) are refused: the WAL is failing."""
        return self.wal_failing
