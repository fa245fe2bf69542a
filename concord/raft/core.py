"""
The Raft consensus state machine (etcd-io/raft's `raft`): elections, replication,
commitment, snapshots, membership, leader transfer and ReadIndex.

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports. Inputs are
`step(message)`, `tick()`, proposals and acknowledgements; outputs accumulate in `msgs`,
`msgs_after_persist`, `read_states` and the log's unstable tail, and RawNode turns them
into a Ready. Use RawNode, not this class, from outside the package.

The class is split by concern: role changes, ticks, stepping and the leader's handling
of responses are here; campaigns, votes and the candidate in election.py, sending and the
per-Ready flush in replication.py, ReadIndex and leader transfer in reads.py, the
follower in follower.py, proposals and membership in membership.py (functions bound as
methods in the class body).

Divergences from etcd-io/raft, on purpose:
  - Messages a node sends to itself (its vote, the leader's append acknowledgement) sit
    in `msgs_after_persist` and are stepped by RawNode when the Ready holding them is
    persisted; they never leave the node.
  - Proposals append at once but are broadcast when the next Ready is built (`flush`), so
    proposals made between two Readys share APPENDs.
  - ReadIndex rounds are started at `flush` too: one heartbeat round per Ready confirms
    every read that arrived before it (thesis §6.4, batched). A BEAT starts the round of
    the reads waiting then with its own heartbeats (etcd sends a plain heartbeat and
    the round's apart).
  - InstallSnapshot is chunked: SNAPSHOT carries one chunk, the follower acknowledges with
    SNAPSHOT_RESP and assembles the chunks before restoring.
  - A new commit index gets no APPEND of its own (etcd sends one at once): it rides on
    the next APPEND with entries or the next heartbeat, so followers learn it within one
    heartbeat interval. An APPEND goes at once only for a committed configuration
    change, term no-op or entry proposed with `prompt_commit` (`_on_commit_advanced`);
    a follower's ReadIndex answer carries the commit (reads.respond_read_index).
  - The leader stamps entries with cluster time (`now_ms`, from set_time) so timestamps
    never go backwards along the log.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from concord.errors import RaftInvariantError
from concord.ids import NodeId
from concord.raft import election, follower, membership, reads, replication
from concord.raft.confchange import Changer
from concord.raft.config import RaftConfig, Rng
from concord.raft.log import RaftLog
from concord.raft.messages import CAMPAIGN_TRANSFER, EntryType, Message, MessageType, Snapshot
from concord.raft.progress import Progress, ProgressState
from concord.raft.quorum import VoteResult
from concord.raft.readonly import ReadOnly
from concord.raft.snapshot_transfer import SnapshotReceiver
from concord.raft.state import HardState, ReadState, Role, SoftState
from concord.raft.storage import Storage
from concord.raft.tracker import ProgressTracker

_module_logger = logging.getLogger(__name__)

MT = MessageType


if TYPE_CHECKING:
    _AdapterBase = logging.LoggerAdapter[logging.Logger]
else:
    _AdapterBase = logging.LoggerAdapter


class RaftLogger(_AdapterBase):
    """Appends `node=… term=… role=…` to every line (docs/contributing.md, logging)."""

    def __init__(self, logger: logging.Logger, raft: Raft) -> None:
        super().__init__(logger, {})
        self._raft = raft

    def process(
        self, msg: object, kwargs: MutableMapping[str, object]
    ) -> tuple[object, MutableMapping[str, object]]:
        r = self._raft
        return f"{msg} node={r.id} term={r.term} role={r.role.name.lower()}", kwargs


class Raft:
    """
    One node's consensus state.

    Args:
        config: validated here.
        storage: durable state; read at start and for entries no longer unstable.
        rng: election-timeout jitter.

    Raises:
        ConfigError: invalid config.
        RaftInvariantError: the stored hard state contradicts the stored log.
    """

    def __init__(self, config: RaftConfig, storage: Storage, rng: Rng) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.rng = rng
        self.term = 0
        self.vote: NodeId | None = None
        self.lead: NodeId | None = None
        self.role = Role.FOLLOWER
        self.logger = RaftLogger(config.logger or _module_logger, self)
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.tracker = ProgressTracker(config.max_inflight_msgs)
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.lead_transferee: NodeId | None = None
        self.deferred_transfer_ticks = 0  # election.campaign_deferred_transfer
        self.pending_conf_index = 0
        self.prompt_commit_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.append_pending = False
        self.now_ms = 0
        self.max_timestamp_seen_ms = self.log.last_timestamp_ms()
        self._last_stamp_ms = 0
        self._snapshot_recv = SnapshotReceiver(4 * config.snapshot_inflight_chunks)
        self._outgoing_snapshots: dict[NodeId, Snapshot] = {}

        hard_state, conf_state = storage.initial_state()
        cfg, prs = Changer(self.tracker, self.log.last_index()).restore(conf_state)
        restored = self._switch_to_config(cfg, prs)
        if restored != conf_state:
            raise RaftInvariantError(f"restored {restored}, expected {conf_state}")
        if not hard_state.is_empty:
            self._load_state(hard_state)
        self.become_follower(self.term, None)
        self.logger.info(
            "started first_index=%d last_index=%d commit=%d applied=%d config=%s",
            self.log.first_index(),
            self.log.last_index(),
            self.log.committed,
            self.log.applied,
            self.tracker.config,
        )

    # ----------------------------------------------------------------- state views

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise RaftInvariantError(
                f"hard state commit {hs.commit} is beyond last index {self.log.last_index()}"
            )
        # NB: the hard state's commit may lag the snapshot (the state machine snapshots
        # what it applied while the commit index was still being persisted); a snapshot
        # is committed by definition.
        if hs.commit > self.log.committed:
            self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        """May this node campaign: a voter, with no snapshot pending to persist."""
        pr = self.tracker.progress.get(self.id)
        return pr is not None and not pr.is_learner and self.log.unstable.snapshot is None

    # -- replication (concord/raft/replication.py) --
    _send = replication.send
    _maybe_send_append = replication.maybe_send_append
    _maybe_send_snapshot = replication.maybe_send_snapshot
    _send_snapshot_chunks = replication.send_snapshot_chunks
    _bcast_append = replication.bcast_append
    _bcast_heartbeat = replication.bcast_heartbeat
    _send_heartbeat = replication.send_heartbeat
    flush = replication.flush
    has_flush_work = replication.has_flush_work

    # ----------------------------------------------------------------- role changes

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.deferred_transfer_ticks = 0
        self.tracker.reset_votes()
        last = self.log.last_index()
        persisted = self.log.persisted_index()
        inflight = self.config.max_inflight_msgs
        progress = self.tracker.progress
        for node_id in list(progress):
            fresh = Progress(0, last + 1, inflight, progress[node_id].is_learner)
            if node_id == self.id:
                fresh.match = min(persisted, last)
            progress[node_id] = fresh
        self.pending_conf_index = 0
        self.prompt_commit_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []
        self.append_pending = False
        self._outgoing_snapshots.clear()

    def _reset_randomized_election_timeout(self) -> None:
        ticks = self.config.election_ticks
        self.randomized_election_timeout = self.rng.randint(ticks, 2 * ticks - 1)

    def become_follower(self, term: int, lead: NodeId | None) -> None:
        changed = self.role != Role.FOLLOWER or term != self.term
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        if changed:
            self.logger.info("became follower leader=%s", lead)

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RaftInvariantError("invalid transition leader -> pre-candidate")
        # Thesis §9.6: a pre-candidate keeps its term and vote.
        self.tracker.reset_votes()
        self.lead = None
        self.role = Role.PRE_CANDIDATE
        self.logger.info("became pre-candidate")

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise RaftInvariantError("invalid transition leader -> candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.logger.info("became candidate")

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise RaftInvariantError("invalid transition follower -> leader")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        pr = self.tracker.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        last_stamp = self.log.last_timestamp_ms()
        self._last_stamp_ms = max(last_stamp, self.max_timestamp_seen_ms)
        # Raft §8: a no-op of the new term lets earlier entries commit (§5.4.2).
        no_op_index = self._append_entries([(EntryType.NORMAL, b"")])
        # Thesis §4.1 (the single-server change bug, Ongaro 2015): no conf change until
        # an entry of this term is applied, so pending_conf_index is the no-op.
        self.pending_conf_index = no_op_index
        self.logger.info("became leader last_index=%d", self.log.last_index())

    # ----------------------------------------------------------------- ticks

    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.campaign_deferred_transfer(tick=True)
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, self.id, self.id))
            if self.role == Role.LEADER and self.lead_transferee is not None:
                self.logger.info("aborted leader transfer to=%s", self.lead_transferee)
                self._abort_leader_transfer()
        if self.role != Role.LEADER:
            return
        for node_id, pr in self.tracker.progress.items():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_idle_ticks += 1
                if pr.snapshot_idle_ticks >= self.config.election_ticks:
                    # Chunks or their acknowledgements were lost: resend from the last
                    # acknowledged offset (the follower asks for 0 if it lost the rest).
                    pr.snapshot_idle_ticks = 0
                    pr.snapshot_sent_offset = pr.snapshot_acked_offset
                    self.logger.warning(
                        "resending snapshot to=%s offset=%d", node_id, pr.snapshot_acked_offset
                    )
                    self._send_snapshot_chunks(node_id)
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, self.id, self.id))

    # ----------------------------------------------------------------- step

    def step(self, m: Message) -> None:
        """Process one message (from a peer, or local)."""
        if m.term == 0:
            pass
        elif m.term > self.term:
            if m.type == MT.VOTE or m.type == MT.PRE_VOTE:
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.config.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.config.election_ticks
                )
                if not force and in_lease:
                    # Thesis §4.2.3: ignore votes while a leader is heard from.
                    self.logger.debug(
                        "ignored vote request within lease from=%s msg_term=%d", m.frm, m.term
                    )
                    return
            if m.type == MT.PRE_VOTE:
                pass  # thesis §9.6: never change term because of a pre-vote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # granted pre-votes carry the future term
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APPEND,
            ):
                # A stale leader learns our term and steps down (etcd: otherwise a node
                # partitioned with pre-vote could never rejoin).
                self._send(Message(MT.APPEND_RESP, m.frm, self.id, self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return

        t = m.type
        if t == MT.HUP:
            self._hup(transfer=False)
        elif t == MT.VOTE or t == MT.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # ----------------------------------------------------------------- leader

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            # ReadIndex requests waiting for a round (the driver's lease probe, made just
            # before its tick) ride on this heartbeat: one heartbeat per peer, not two.
            ctx = self.read_only.take_round(self.id)
            self._bcast_heartbeat(b"" if ctx is None else ctx)
            return
        if t == MT.CHECK_QUORUM:
            if not self.tracker.quorum_active():
                self.logger.warning("stepped down: no quorum active within an election timeout")
                self.become_follower(self.term, None)
            for node_id, other in self.tracker.progress.items():
                if node_id != self.id:
                    other.recent_active = False
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return
        if t == MT.TRANSFER_LEADER:
            self._leader_transfer(NodeId(m.context.decode("utf-8")))
            return
        pr = self.tracker.progress.get(m.frm)
        if pr is None:
            self.logger.debug("no progress for peer from=%s type=%s", m.frm, t.name)
            return
        if t == MT.APPEND_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.state != ProgressState.SNAPSHOT and (
                pr.match < self.log.last_index() or pr.state == ProgressState.PROBE
            ):
                self._maybe_send_append(m.frm)
            if m.context:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is not None and self.tracker.vote_result(acks) == VoteResult.WON:
                    for status in self.read_only.advance(m.context):
                        self._respond_read_index(status.request, status.index)
        elif t == MT.SNAPSHOT_RESP:
            pr.recent_active = True
            if pr.state != ProgressState.SNAPSHOT or m.index != pr.pending_snapshot:
                return
            pr.snapshot_idle_ticks = 0
            if m.reject:
                # The follower expects another offset (lost chunks, or it lost the
                # partial snapshot: offset 0 restarts the transfer).
                pr.snapshot_acked_offset = m.snapshot_offset
                pr.snapshot_sent_offset = m.snapshot_offset
            elif m.snapshot_offset > pr.snapshot_acked_offset:
                pr.snapshot_acked_offset = m.snapshot_offset
                if pr.snapshot_sent_offset < m.snapshot_offset:
                    pr.snapshot_sent_offset = m.snapshot_offset
            self._send_snapshot_chunks(m.frm)
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            self.logger.debug("peer unreachable to=%s", m.frm)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            self._handle_append_reject(m, pr)
            return
        updated = pr.maybe_update(m.index)
        if pr.state == ProgressState.SNAPSHOT:
            if not self._maybe_end_snapshot(m, pr):
                return
        elif pr.state == ProgressState.PROBE:
            if not updated and pr.match != m.index:
                return
            pr.become_replicate()
        else:
            if not updated:
                return
            pr.inflights.free_le(m.index)
        committed = self.log.committed
        if self._maybe_commit():
            self._on_commit_advanced(committed)
        if m.frm != self.id:
            while self._maybe_send_append(m.frm, send_if_empty=False):
                pass
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self.logger.info("sending timeout-now to transferee to=%s", m.frm)
                self._send_timeout_now(m.frm)

    def _handle_append_reject(self, m: Message, pr: Progress) -> None:
        # Fast backtracking: skip the follower's conflicting term at once (Raft §5.3,
        # "the follower can include the term of the conflicting entry").
        next_probe = m.reject_hint
        if m.log_term > 0:
            next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
        if pr.maybe_decr_to(m.index, next_probe):
            self.logger.debug(
                "append rejected from=%s index=%d next=%d", m.frm, m.index, pr.next
            )
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            self._maybe_send_append(m.frm)

    def _maybe_end_snapshot(self, m: Message, pr: Progress) -> bool:
        """
        An append response from a peer in SNAPSHOT state: True if its snapshot transfer
        is over (installed, or not needed) and it replicates again; False while the
        transfer goes on, or when it starts over from a probe.
        """
        first = self.log.first_index()
        if pr.match + 1 < first and pr.match < pr.pending_snapshot:
            outgoing = self._outgoing_snapshots.get(m.frm)
            if (
                outgoing is None
                or pr.snapshot_sent_offset <= len(outgoing.data)
                or m.index >= pr.pending_snapshot
            ):
                return False  # the transfer goes on
            # Every chunk went out and the follower answers below the snapshot: it
            # assembled the snapshot and did not restore it. Start over from a probe
            # (and, if still needed, the newest snapshot) instead of resending this one.
            self.logger.info(
                "snapshot not restored by peer from=%s snapshot_index=%d index=%d",
                m.frm,
                pr.pending_snapshot,
                m.index,
            )
            self._outgoing_snapshots.pop(m.frm, None)
            pr.become_probe()
            pr.next = pr.match + 1
            self._maybe_send_append(m.frm)
            return False
        # Installed (or not needed: the follower already had it committed).
        self._outgoing_snapshots.pop(m.frm, None)
        pr.become_probe()
        if pr.match + 1 >= first:
            pr.become_replicate()
        return True

    def _maybe_commit(self) -> bool:
        """Raft §5.4.2: advance commit to the quorum's match if it is of our term."""
        return self.log.maybe_commit(self.tracker.committed(), self.term)

    def _on_commit_advanced(self, old_commit: int) -> None:
        """
        The leader's commit index moved up from `old_commit`.

        No APPEND is sent for the news: the next APPEND with entries or the next
        heartbeat carries it (replication.bcast_append). Except when the range holds a
        configuration change or the term's no-op (`pending_conf_index`), or while an
        entry proposed with `prompt_commit` (`prompt_commit_index`, the highest such)
        is not yet announced: then every member gets an APPEND at once (an empty one
        if nothing else is due), as etcd does for every commit. A leader that removed
        itself steps down when it applies the change and would tell nobody; a new
        term's first commit is what followers' reads after an election wait on; a
        prompt entry (an auth change) decides what the other members admit. All are
        rare.
        """
        self._release_pending_read_index_messages()
        committed = self.log.committed
        conf_change = old_commit < self.pending_conf_index <= committed
        if conf_change or old_commit < self.prompt_commit_index:
            for node_id in self.tracker.progress:
                if node_id != self.id:
                    self._maybe_send_append(node_id)

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    # -- reads (concord/raft/reads.py) --
    _leader_read_index = reads.leader_read_index
    _release_pending_read_index_messages = reads.release_pending_read_index_messages
    _respond_read_index = reads.respond_read_index
    _leader_transfer = reads.leader_transfer
    _send_timeout_now = reads.send_timeout_now
    _abort_leader_transfer = reads.abort_leader_transfer

    # -- elections and the candidate (concord/raft/election.py) --
    _hup = election.hup
    advance_election = election.advance_election
    campaign_deferred_transfer = election.campaign_deferred_transfer
    _has_unapplied_conf_changes = election.has_unapplied_conf_changes
    _campaign = election.campaign
    _handle_vote_request = election.handle_vote_request
    _poll = election.poll
    _step_candidate = election.step_candidate

    # -- follower (concord/raft/follower.py) --
    _step_follower = follower.step_follower
    _handle_append = follower.handle_append
    _handle_heartbeat = follower.handle_heartbeat
    _handle_snapshot_chunk = follower.handle_snapshot_chunk
    _handle_snapshot = follower.handle_snapshot
    _restore = follower.restore

    # -- membership (concord/raft/membership.py) --
    _append_entries = membership.append_entries
    _check_can_propose = membership.check_can_propose
    propose = membership.propose
    propose_many = membership.propose_many
    propose_conf_change = membership.propose_conf_change
    _compute_conf_change = membership.compute_conf_change
    apply_conf_change = membership.apply_conf_change
    _switch_to_config = membership.switch_to_config
    maybe_auto_leave = membership.maybe_auto_leave
