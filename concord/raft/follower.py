"""
The follower: stepping messages, appending (Raft §5.3), heartbeats, snapshots (§7).

Methods of `concord.raft.core.Raft`, kept here by concern: each function takes the node
as `r` and is bound in the class body (`Raft.<name> = <module>.<function>`).

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.errors import RaftInvariantError
from concord.ids import NodeId
from concord.raft.confchange import Changer
from concord.raft.messages import Message, MessageType, Snapshot
from concord.raft.state import ReadState, Role
from concord.raft.tracker import ProgressTracker

MT = MessageType

if TYPE_CHECKING:
    from concord.raft.core import Raft


def step_follower(r: Raft, m: Message) -> None:
    t = m.type
    if t == MT.APPEND:
        r.election_elapsed = 0
        r.lead = m.frm
        r._handle_append(m)
    elif t == MT.HEARTBEAT:
        r.election_elapsed = 0
        r.lead = m.frm
        r._handle_heartbeat(m)
    elif t == MT.SNAPSHOT:
        r.election_elapsed = 0
        r.lead = m.frm
        r._handle_snapshot_chunk(m)
    elif t == MT.TRANSFER_LEADER:
        if r.lead is None or m.frm != r.id:
            r.logger.info("dropped leader transfer: no leader")
            return
        r.msgs.append(
            Message(MT.TRANSFER_LEADER, r.lead, r.id, r.term, context=m.context)
        )
    elif t == MT.TIMEOUT_NOW:
        r.logger.info("received timeout-now from=%s", m.frm)
        if r._has_unapplied_conf_changes():
            # A transferee promoted moments ago may know the promotion committed but not
            # have applied it: campaign once it is (election.campaign_deferred_transfer),
            # within an election timeout, as a TIMEOUT_NOW delayed that long would.
            r.deferred_transfer_ticks = r.config.election_ticks
            r.logger.info("timeout-now deferred: conf changes committed but not applied")
            return
        # Thesis §3.10: campaign at once, past pre-vote and leader stickiness.
        r._hup(transfer=True)
    elif t == MT.READ_INDEX:
        if r.lead is None or m.frm != r.id:
            r.logger.debug("dropped read index: no leader")
            return
        r.msgs.append(
            Message(MT.READ_INDEX, r.lead, r.id, r.term, context=m.context)
        )
    elif t == MT.READ_INDEX_RESP:
        # The commit index rides along, capped at our match like a heartbeat's.
        r.log.commit_to(m.commit)
        r.read_states.append(ReadState(m.index, m.context))

def handle_append(r: Raft, m: Message) -> None:
    log = r.log
    if m.index < log.committed:
        r._send(Message(MT.APPEND_RESP, m.frm, r.id, r.term, index=log.committed))
        return
    last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last_new is not None:
        if m.entries:
            stamp = m.entries[-1].timestamp_ms
            if stamp > r.max_timestamp_seen_ms:
                r.max_timestamp_seen_ms = stamp
        r._send(Message(MT.APPEND_RESP, m.frm, r.id, r.term, index=last_new))
        return
    hint_index = min(m.index, log.last_index())
    hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
    r.logger.debug(
        "rejected append from=%s index=%d log_term=%d hint=%d hint_term=%d",
        m.frm,
        m.index,
        m.log_term,
        hint_index,
        hint_term,
    )
    r._send(
        Message(
            MT.APPEND_RESP,
            m.frm,
            r.id,
            r.term,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )
    )

def handle_heartbeat(r: Raft, m: Message) -> None:
    r.log.commit_to(m.commit)
    r.msgs.append(Message(MT.HEARTBEAT_RESP, m.frm, r.id, r.term, context=m.context))

def handle_snapshot_chunk(r: Raft, m: Message) -> None:
    chunk = m.snapshot
    if chunk is None:
        raise RaftInvariantError(f"snapshot message from {m.frm} has no snapshot")
    result = r._snapshot_recv.receive(m, chunk)
    if result.ack_offset is not None:
        r.msgs.append(
            Message(
                MT.SNAPSHOT_RESP,
                m.frm,
                r.id,
                r.term,
                index=chunk.meta.index,
                snapshot_offset=result.ack_offset,
                reject=result.reject,
            )
        )
    if result.snapshot is not None:
        r._handle_snapshot(m.frm, result.snapshot)

def handle_snapshot(r: Raft, frm: NodeId, snapshot: Snapshot) -> None:
    if r._restore(snapshot):
        r.logger.info(
            "restored snapshot snapshot_index=%d snapshot_term=%d",
            snapshot.meta.index,
            snapshot.meta.term,
        )
        r._send(Message(MT.APPEND_RESP, frm, r.id, r.term, index=r.log.last_index()))
    else:
        r.logger.info("ignored snapshot snapshot_index=%d", snapshot.meta.index)
        r._send(Message(MT.APPEND_RESP, frm, r.id, r.term, index=r.log.committed))

def restore(r: Raft, snapshot: Snapshot) -> bool:
    meta = snapshot.meta
    if meta.index <= r.log.committed:
        return False
    if r.role != Role.FOLLOWER:
        r.logger.warning("non-follower attempted to restore snapshot")
        r.become_follower(r.term + 1, None)
        return False
    cs = meta.conf_state
    if r.id not in cs.voters + cs.learners + cs.voters_outgoing:
        r.logger.warning("ignored snapshot: not in its configuration")
        return False
    if r.log.match_term(meta.index, meta.term):
        # Thesis §5.1: our log already holds it; keep the entries after it.
        r.log.commit_to(meta.index)
        return False
    r.log.restore(snapshot)
    r.tracker = ProgressTracker(r.config.max_inflight_msgs)
    cfg, prs = Changer(r.tracker, r.log.last_index()).restore(cs)
    restored = r._switch_to_config(cfg, prs)
    if restored != cs:
        raise RaftInvariantError(f"restored {restored}, expected {cs}")
    return True
