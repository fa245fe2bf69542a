"""
Proposals and membership changes (joint consensus, thesis §4; etcd ConfChangeV2).

Methods of `concord.raft.core.Raft`, kept here by concern: each function takes the node
as `r` and is bound in the class body (`Raft.<name> = <module>.<function>`).

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from concord.errors import ProposalDroppedError, RaftInvariantError
from concord.raft.confchange import Changer, ConfChangeError
from concord.raft.messages import ConfChange, ConfState, EntryType, Message, MessageType, make_entry
from concord.raft.state import Role
from concord.raft.tracker import ProgressMap, TrackerConfig

MT = MessageType

if TYPE_CHECKING:
    from concord.raft.core import Raft


def append_entries(r: Raft, items: list[tuple[EntryType, bytes]]) -> int:
    """Leader: append entries of this term stamped with cluster time; the last index."""
    index = r.log.last_index()
    stamp = r.now_ms if r.now_ms > r._last_stamp_ms else r._last_stamp_ms
    r._last_stamp_ms = stamp
    if stamp > r.max_timestamp_seen_ms:
        r.max_timestamp_seen_ms = stamp
    term = r.term
    entries = []
    for kind, data in items:
        index += 1
        entries.append(make_entry(term, index, kind, data, stamp))
    last = r.log.append(entries)
    # The leader acknowledges its own entries once they are durable: coalesce with a
    # r-acknowledgement already waiting for the same Ready.
    ack = Message(MT.APPEND_RESP, r.id, r.id, term, index=last)
    pending = r.msgs_after_persist
    if pending and pending[-1].to == r.id and pending[-1].type == MT.APPEND_RESP:
        pending[-1] = ack
    else:
        pending.append(ack)
    return last

def check_can_propose(r: Raft) -> None:
    if r.role != Role.LEADER:
        raise ProposalDroppedError(f"node {r.id} is not the leader (leader {r.lead})")
    if r.lead_transferee is not None:
        raise ProposalDroppedError(
            f"leader transfer to {r.lead_transferee} is in progress"
        )
    if r.id not in r.tracker.progress:
        raise ProposalDroppedError(f"node {r.id} was removed from the configuration")

def propose(r: Raft, data: bytes, prompt_commit: bool = False) -> tuple[int, int]:
    return r.propose_many((data,), prompt_commit)

def propose_many(r: Raft, datas: Sequence[bytes], prompt_commit: bool = False) -> tuple[int, int]:
    """Append commands, one entry each in order, in one step; (first index, term)."""
    if not datas:
        raise ValueError("propose_many needs at least one command")
    r._check_can_propose()
    last = r._append_entries([(EntryType.NORMAL, data) for data in datas])
    if prompt_commit:
        r.prompt_commit_index = last
    r.append_pending = True
    return last - len(datas) + 1, r.term

def propose_conf_change(r: Raft, cc: ConfChange) -> tuple[int, int]:
    r._check_can_propose()
    applied = r.log.applied
    if r.pending_conf_index > applied:
        raise ProposalDroppedError(
            f"conf change at index {r.pending_conf_index} is not applied yet "
            f"(applied {applied})"
        )
    joint = r.tracker.config.is_joint()
    if joint and not cc.leave_joint():
        raise ProposalDroppedError("must leave the joint config first")
    if not joint and cc.leave_joint():
        raise ProposalDroppedError("not in a joint config")
    try:
        r._compute_conf_change(cc)
    except ConfChangeError as exc:
        raise ProposalDroppedError(f"invalid conf change: {exc}") from exc
    index = r._append_entries([(EntryType.CONF_CHANGE, cc.encode())])
    r.pending_conf_index = index
    r.append_pending = True
    return index, r.term


def compute_conf_change(r: Raft, cc: ConfChange) -> tuple[TrackerConfig, ProgressMap]:
    changer = Changer(r.tracker, r.log.last_index())
    if cc.leave_joint():
        return changer.leave_joint()
    auto_leave, joint = cc.enter_joint()
    if joint:
        return changer.enter_joint(auto_leave, cc.changes)
    return changer.simple(cc.changes)

def apply_conf_change(r: Raft, cc: ConfChange) -> ConfState:
    try:
        cfg, prs = r._compute_conf_change(cc)
    except ConfChangeError as exc:
        raise RaftInvariantError(f"cannot apply committed conf change: {exc}") from exc
    return r._switch_to_config(cfg, prs)

def switch_to_config(r: Raft, cfg: TrackerConfig, prs: ProgressMap) -> ConfState:
    r.tracker.config = cfg
    r.tracker.progress = prs
    r.logger.info("switched config config=%s", cfg)
    cs = r.tracker.conf_state()
    pr = prs.get(r.id)
    if (pr is None or pr.is_learner) and r.role == Role.LEADER:
        # Thesis §4.2.2: a removed leader steps down once the change is applied; it
        # no longer counts itself in any majority.
        if r.config.step_down_on_removal:
            r.logger.info("stepping down: removed from the configuration")
            r.become_follower(r.term, None)
        return cs
    if r.role != Role.LEADER or not cs.voters:
        return cs
    committed = r.log.committed
    if r._maybe_commit():
        r._on_commit_advanced(committed)
        r._bcast_append()
    else:
        for node_id in prs:
            if node_id != r.id:
                r._maybe_send_append(node_id, send_if_empty=False)
    if r.lead_transferee is not None and r.lead_transferee not in (
        cfg.voters | cfg.voters_outgoing
    ):
        r._abort_leader_transfer()
    return cs

def maybe_auto_leave(r: Raft) -> None:
    """Leader: propose leaving a joint config with auto_leave once it is applied."""
    if (
        r.role == Role.LEADER
        and r.tracker.config.auto_leave
        and r.log.applied >= r.pending_conf_index
        and r.lead_transferee is None
    ):
        r.logger.info("leaving joint config automatically")
        try:
            r.propose_conf_change(ConfChange())
        except ProposalDroppedError as exc:
            r.logger.warning("could not leave joint config yet: %s", exc)
