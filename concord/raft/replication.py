"""
Sending: AppendEntries and heartbeats, InstallSnapshot in chunks, the per-Ready flush (Raft §5.3, §7).

Methods of `concord.raft.core.Raft`, kept here by concern: each function takes the node
as `r` and is bound in the class body (`Raft.<name> = <module>.<function>`).

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.errors import CompactedError, RaftInvariantError, UnavailableError
from concord.ids import NodeId
from concord.raft.messages import Entry, Message, MessageType
from concord.raft.progress import Progress, ProgressState
from concord.raft.snapshot_transfer import snapshot_chunks
from concord.raft.state import Role

MT = MessageType

#: Message types that depend on state persisted in the same Ready (Raft §5: respond only
#: after updating stable storage).
_AFTER_PERSIST_TYPES = frozenset({MT.APPEND_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP})

if TYPE_CHECKING:
    from concord.raft.core import Raft


def send(r: Raft, m: Message) -> None:
    if m.type in _AFTER_PERSIST_TYPES:
        r.msgs_after_persist.append(m)
    else:
        r.msgs.append(m)

def maybe_send_append(r: Raft, to: NodeId, send_if_empty: bool = True) -> bool:
    """Send an APPEND to `to` if flow control allows (Raft §5.3); True if sent."""
    pr = r.tracker.progress[to]
    if pr.is_paused():
        return False
    log = r.log
    prev_index = pr.next - 1
    try:
        prev_term = log.term(prev_index)
    except CompactedError:
        return r._maybe_send_snapshot(to, pr)
    except UnavailableError as exc:
        raise RaftInvariantError(
            f"next index {pr.next} of {to} is beyond last index {log.last_index()}"
        ) from exc
    entries: list[Entry] = []
    if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
        try:
            entries = log.entries(pr.next, r.config.max_size_per_msg)
        except CompactedError:
            return r._maybe_send_snapshot(to, pr)
    if not entries and not send_if_empty:
        return False
    r.msgs.append(
        Message(
            MT.APPEND,
            to,
            r.id,
            r.term,
            log_term=prev_term,
            index=prev_index,
            entries=tuple(entries),
            commit=log.committed,
        )
    )
    pr.sent_entries(len(entries))
    return True

def maybe_send_snapshot(r: Raft, to: NodeId, pr: Progress) -> bool:
    """Start an InstallSnapshot transfer to a follower behind our first index."""
    if not pr.recent_active:
        r.logger.debug("not sending snapshot to inactive peer to=%s", to)
        return False
    try:
        snapshot = r.log.snapshot()
    except UnavailableError:
        r.logger.debug("snapshot temporarily unavailable to=%s", to)
        return False
    if snapshot.is_empty:
        raise RaftInvariantError(f"entries for {to} are compacted but the snapshot is empty")
    cs = snapshot.meta.conf_state
    if to not in cs.voters + cs.learners + cs.voters_outgoing:
        # A member added after the snapshot would ignore it (it restores only a
        # configuration that includes it): wait for the application's next snapshot
        # instead of shipping this one over and over.
        r.logger.debug(
            "snapshot does not include peer to=%s snapshot_index=%d",
            to,
            snapshot.meta.index,
        )
        return False
    r.logger.info(
        "sending snapshot to=%s snapshot_index=%d snapshot_term=%d bytes=%d",
        to,
        snapshot.meta.index,
        snapshot.meta.term,
        len(snapshot.data),
    )
    pr.become_snapshot(snapshot.meta.index)
    r._outgoing_snapshots[to] = snapshot
    r._send_snapshot_chunks(to)
    return True

def send_snapshot_chunks(r: Raft, to: NodeId) -> None:
    """Send the chunks of the transfer to `to` that its window allows."""
    pr = r.tracker.progress[to]
    snapshot = r._outgoing_snapshots.get(to)
    if pr.state != ProgressState.SNAPSHOT or snapshot is None:
        return
    r.msgs.extend(
        snapshot_chunks(
            snapshot,
            pr,
            to,
            r.id,
            r.term,
            r.config.snapshot_chunk_bytes,
            r.config.snapshot_inflight_chunks,
        )
    )

def bcast_append(r: Raft) -> None:
    """
    Send new entries to every peer, as many APPENDs as the window allows.

    An empty APPEND goes only to a peer being probed. A new commit index never gets an
    APPEND of its own (etcd-io/raft's bcastAppend on commit sends one): it rides on the
    next APPEND with entries or the next heartbeat, so a follower learns it within one
    heartbeat interval.
    """
    for node_id, pr in r.tracker.progress.items():
        if node_id == r.id:
            continue
        send_if_empty = pr.state != ProgressState.REPLICATE
        if r._maybe_send_append(node_id, send_if_empty):
            while pr.state == ProgressState.REPLICATE and r._maybe_send_append(
                node_id, send_if_empty=False
            ):
                pass

def bcast_heartbeat(r: Raft, ctx: bytes) -> None:
    for node_id in r.tracker.progress:
        if node_id != r.id:
            r._send_heartbeat(node_id, ctx)

def send_heartbeat(r: Raft, to: NodeId, ctx: bytes) -> None:
    """
    A HEARTBEAT carrying the commit index, capped at the peer's match: the peer's log is
    known to hold the leader's entries only up to there (etcd `sendHeartbeat`).
    """
    commit = min(r.tracker.progress[to].match, r.log.committed)
    r.msgs.append(Message(MT.HEARTBEAT, to, r.id, r.term, commit=commit, context=ctx))

def flush(r: Raft) -> None:
    """
    Broadcast proposals appended and start a ReadIndex round if none is in flight
    (before a Ready; concord.raft.readonly: requests meanwhile wait for the next one).
    """
    if r.role != Role.LEADER:
        return
    if r.append_pending:
        r.append_pending = False
        r._bcast_append()
    if r.read_only.can_start_round():
        ctx = r.read_only.take_round(r.id)
        assert ctx is not None
        r._bcast_heartbeat(ctx)

def has_flush_work(r: Raft) -> bool:
    return r.role == Role.LEADER and (r.append_pending or r.read_only.can_start_round())
