"""
Stable one-line text for entries, messages and Readys, used by logs and golden tests.

Pure. No IO, no clock, no global randomness; stdlib-only imports. Changing the output
breaks golden files: change it only on purpose.
"""

from __future__ import annotations

from concord.raft.messages import ConfChange, Entry, EntryType, Message, MessageType
from concord.raft.rawnode import Ready


def describe_entry(entry: Entry) -> str:
    """`term/index` plus the payload: `EntryNormal "data"` or `EntryConfChange v1 v2`."""
    if entry.type == EntryType.CONF_CHANGE:
        try:
            cc = ConfChange.decode(entry.data)
            body = " ".join(
                f"{c.type.name.lower()}:{c.node_id}" for c in cc.changes
            ) or "leave-joint"
        except ValueError:
            body = f"<undecodable {len(entry.data)} bytes>"
        text = f"{entry.term}/{entry.index} EntryConfChange {body}"
    else:
        text = f"{entry.term}/{entry.index} EntryNormal {entry.data!r}"
    if entry.timestamp_ms:
        text += f" ts={entry.timestamp_ms}"
    return text


def describe_message(m: Message) -> str:
    """`from->to TYPE Term:t ...` with only the fields that type uses."""
    parts = [f"{m.frm}->{m.to} {m.type.name} Term:{m.term}"]
    t = m.type
    if t in (MessageType.APPEND, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"Log:{m.log_term}/{m.index}")
    elif t in (MessageType.APPEND_RESP, MessageType.READ_INDEX_RESP, MessageType.SNAPSHOT_RESP):
        parts.append(f"Index:{m.index}")
    if t in (MessageType.APPEND, MessageType.HEARTBEAT):
        parts.append(f"Commit:{m.commit}")
    if m.reject:
        parts.append("Rejected")
        if t == MessageType.APPEND_RESP:
            parts.append(f"(Hint: {m.reject_hint}/{m.log_term})")
    if m.entries:
        parts.append("Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        meta = m.snapshot.meta
        parts.append(
            f"Snapshot:{meta.term}/{meta.index} chunk@{m.snapshot_offset}"
            f"+{len(m.snapshot.data)}{' done' if m.snapshot_done else ''}"
        )
    if t == MessageType.SNAPSHOT_RESP:
        parts.append(f"Offset:{m.snapshot_offset}")
    if m.context:
        parts.append(f"Context:{m.context!r}")
    return " ".join(parts)


def describe_ready(rd: Ready) -> str:
    """A multi-line description of every non-empty field."""
    lines = [f"Ready {rd.number}" + (" MustSync" if rd.must_sync else "") + ":"]
    if rd.soft_state is not None:
        lines.append(
            f"Lead:{rd.soft_state.leader_id} State:{rd.soft_state.role.name}"
        )
    if rd.hard_state is not None:
        hs = rd.hard_state
        lines.append(f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
    if rd.entries:
        lines.append("Entries:")
        lines.extend("  " + describe_entry(e) for e in rd.entries)
    if rd.snapshot is not None:
        meta = rd.snapshot.meta
        lines.append(f"Snapshot Index:{meta.index} Term:{meta.term} {meta.conf_state}")
    if rd.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend("  " + describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        lines.append("Messages:")
        lines.extend("  " + describe_message(m) for m in rd.messages)
    if rd.messages_after_persist:
        lines.append("MessagesAfterPersist:")
        lines.extend("  " + describe_message(m) for m in rd.messages_after_persist)
    if rd.read_states:
        lines.append("ReadStates:")
        lines.extend(f"  Index:{rs.index} Ctx:{rs.request_ctx!r}" for rs in rd.read_states)
    return "\n".join(lines)
