"""
ReadIndex at the leader (thesis §6.4) and leader transfer (thesis §3.10).

Methods of `concord.raft.core.Raft`, kept here by concern: each function takes the node
as `r` and is bound in the class body (`Raft.<name> = <module>.<function>`).

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.ids import NodeId
from concord.raft.messages import Message, MessageType
from concord.raft.state import ReadState

MT = MessageType

if TYPE_CHECKING:
    from concord.raft.core import Raft


def leader_read_index(r: Raft, m: Message) -> None:
    # Thesis §6.4 step 1: the leader must have committed an entry of its term, so its
    # commit index is at least that of any earlier leader.
    if not r._committed_entry_in_current_term():
        r.pending_read_index_messages.append(m)
        return
    if r.tracker.is_singleton() and r.id in r.tracker.config.voters:
        r._respond_read_index(m, r.log.committed)
        return
    r.read_only.add_request(r.log.committed, m)

def release_pending_read_index_messages(r: Raft) -> None:
    if not r.pending_read_index_messages:
        return
    if not r._committed_entry_in_current_term():
        return
    pending = r.pending_read_index_messages
    r.pending_read_index_messages = []
    for m in pending:
        r._leader_read_index(m)

def respond_read_index(r: Raft, request: Message, index: int) -> None:
    if request.frm == r.id:
        r.read_states.append(ReadState(index, request.context))
        return
    # The answer carries the commit index as a heartbeat would (capped at the peer's
    # match), so the reader need not wait for the next heartbeat to learn it. If its
    # match is still below the read index, the round's heartbeat response made the
    # leader send it an APPEND, which carries the commit (core._step_leader).
    pr = r.tracker.progress.get(request.frm)
    match = pr.match if pr is not None else 0
    r._send(
        Message(
            MT.READ_INDEX_RESP,
            request.frm,
            r.id,
            r.term,
            index=index,
            commit=min(match, r.log.committed),
            context=request.context,
        )
    )

def leader_transfer(r: Raft, transferee: NodeId) -> None:
    pr = r.tracker.progress.get(transferee)
    if pr is None or pr.is_learner:
        r.logger.info("ignored leader transfer to non-voter to=%s", transferee)
        return
    if r.lead_transferee is not None:
        if r.lead_transferee == transferee:
            return
        r._abort_leader_transfer()
    if transferee == r.id:
        return
    # Thesis §3.10: stop proposals, catch the target up, then TIMEOUT_NOW; give up
    # after an election timeout.
    r.election_elapsed = 0
    r.lead_transferee = transferee
    r.logger.info("starting leader transfer to=%s match=%d", transferee, pr.match)
    if pr.match == r.log.last_index():
        r._send_timeout_now(transferee)
    else:
        r._maybe_send_append(transferee)

def send_timeout_now(r: Raft, to: NodeId) -> None:
    # The commit index first, by heartbeat (capped at the transferee's match, which is
    # the last index here): commit news rides on the next append or heartbeat, and a
    # transferee promoted moments ago must know its promotion committed to campaign
    # (it then waits to apply it: follower.step_follower, TIMEOUT_NOW).
    r._send_heartbeat(to, b"")
    r.msgs.append(Message(MT.TIMEOUT_NOW, to, r.id, r.term))

def abort_leader_transfer(r: Raft) -> None:
    r.lead_transferee = None
