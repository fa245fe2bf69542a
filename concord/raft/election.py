"""
Elections: campaigning (pre-vote and vote, Raft §5.2 and thesis §9.6), answering vote
requests (§5.4.1), counting votes and stepping as a candidate.

Methods of `concord.raft.core.Raft`, kept here by concern: each function takes the node
as `r` and is bound in the class body (`Raft.<name> = <module>.<function>`).

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.errors import StorageError
from concord.ids import NodeId
from concord.raft.messages import CAMPAIGN_TRANSFER, EntryType, Message, MessageType
from concord.raft.quorum import VoteResult
from concord.raft.state import Role

MT = MessageType

if TYPE_CHECKING:
    from concord.raft.core import Raft


def hup(r: Raft, transfer: bool) -> None:
    if r.role == Role.LEADER:
        return
    if not r.promotable():
        r.logger.warning("cannot campaign: not a voter of the configuration")
        return
    if r._has_unapplied_conf_changes():
        r.logger.warning("cannot campaign: conf changes committed but not applied")
        return
    r.logger.info("starting election transfer=%s", transfer)
    r._campaign(pre=r.config.pre_vote and not transfer, transfer=transfer)


def advance_election(r: Raft, ticks: int) -> None:
    """
    Count `ticks` missed ticks toward the election timeout of a follower that knows no
    leader (etcd's initial election tick advance): a node whose owner was busy starting
    up (recovering its log) campaigns as soon as it would have, had it ticked meanwhile.
    The elapsed count stops at `election_ticks - 1`, so the wait left stays randomised
    (1..election_ticks ticks) and members that finish starting together do not campaign
    together. Safety does not depend on it: only timing changes.
    """
    if ticks <= 0 or r.role != Role.FOLLOWER or r.lead is not None:
        return
    cap = r.config.election_ticks - 1
    if r.election_elapsed < cap:
        r.election_elapsed = min(r.election_elapsed + ticks, cap)


def campaign_deferred_transfer(r: Raft, tick: bool) -> None:
    """
    A TIMEOUT_NOW that came while conf changes were committed but not applied
    (follower.step_follower): campaign for the transfer now they are; drop it when an
    election timeout passes first (`tick`: called from a tick, which counts it down).
    """
    if r.deferred_transfer_ticks <= 0 or r.role != Role.FOLLOWER:
        return
    if not r._has_unapplied_conf_changes():
        r.deferred_transfer_ticks = 0
        r._hup(transfer=True)
        return
    if tick:
        r.deferred_transfer_ticks -= 1
        if r.deferred_transfer_ticks == 0:
            r.logger.info("deferred timeout-now dropped: conf changes still not applied")


def has_unapplied_conf_changes(r: Raft) -> bool:
    log = r.log
    lo = log.applied + 1
    hi = min(log.committed, log.last_index()) + 1
    while lo < hi:
        try:
            page = log.slice(lo, hi, 1 << 20)
        except StorageError:
            return False
        for entry in page:
            if entry.type == EntryType.CONF_CHANGE:
                return True
        lo += len(page)
    return False


def campaign(r: Raft, pre: bool, transfer: bool) -> None:
    if pre:
        r.become_pre_candidate()
        vote_type, resp_type, term = MT.PRE_VOTE, MT.PRE_VOTE_RESP, r.term + 1
    else:
        r.become_candidate()
        vote_type, resp_type, term = MT.VOTE, MT.VOTE_RESP, r.term
    last_index = r.log.last_index()
    last_term = r.log.last_term()
    ctx = CAMPAIGN_TRANSFER if transfer else b""
    for node_id in sorted(r.tracker.voter_ids()):
        if node_id == r.id:
            # Our own vote counts once it is durable: it waits for the Ready.
            r._send(Message(resp_type, r.id, r.id, term))
            continue
        r._send(
            Message(
                vote_type,
                node_id,
                r.id,
                term,
                log_term=last_term,
                index=last_index,
                context=ctx,
            )
        )


def handle_vote_request(r: Raft, m: Message) -> None:
    resp_type = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
    can_vote = (
        r.vote == m.frm
        or (r.vote is None and r.lead is None)
        or (m.type == MT.PRE_VOTE and m.term > r.term)
    )
    # Raft §5.4.1: grant only to a candidate whose log is at least as up to date.
    if can_vote and r.log.is_up_to_date(m.index, m.log_term):
        r.logger.info(
            "granted %s to=%s msg_term=%d", m.type.name.lower(), m.frm, m.term
        )
        r._send(Message(resp_type, m.frm, r.id, m.term))
        if m.type == MT.VOTE:
            r.election_elapsed = 0
            r.vote = m.frm
    else:
        r.logger.info(
            "rejected %s to=%s msg_term=%d", m.type.name.lower(), m.frm, m.term
        )
        r._send(Message(resp_type, m.frm, r.id, r.term, reject=True))


def poll(r: Raft, node_id: NodeId, granted: bool) -> VoteResult:
    r.tracker.record_vote(node_id, granted)
    _, _, result = r.tracker.tally_votes()
    return result


def step_candidate(r: Raft, m: Message) -> None:
    t = m.type
    my_resp = MT.PRE_VOTE_RESP if r.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
    if t == MT.APPEND:
        r.become_follower(m.term, m.frm)
        r._handle_append(m)
    elif t == MT.HEARTBEAT:
        r.become_follower(m.term, m.frm)
        r._handle_heartbeat(m)
    elif t == MT.SNAPSHOT:
        r.become_follower(m.term, m.frm)
        r._handle_snapshot_chunk(m)
    elif t == my_resp:
        result = r._poll(m.frm, not m.reject)
        if result == VoteResult.WON:
            if r.role == Role.PRE_CANDIDATE:
                r._campaign(pre=False, transfer=False)
            else:
                r.become_leader()
                r._bcast_append()
        elif result == VoteResult.LOST:
            r.become_follower(r.term, None)
