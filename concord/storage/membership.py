"""
The membership a node's durable snapshots carry.

The raft worker snapshots its own state machine, with the membership in force at the
applied index (concord.node.core.snapshots), so a snapshot always carries one.

`membership_from_log` recovers the membership of a snapshot written without one (issue
12: writers before the fix could write an empty voter list) from the node's bootstrap
membership and its log (docs/operations.md, "Snapshots without a membership").

Pure. No IO, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from concord.raft.confchange import ConfChangeError, conf_state_after
from concord.raft.messages import ConfChange, ConfState, Entry, EntryType, SnapshotMeta

__all__ = ["has_membership", "membership_from_log"]


def has_membership(conf_state: ConfState) -> bool:
    """False for the empty voter list no running cluster ever has (Raft keeps a voter)."""
    return bool(conf_state.voters or conf_state.voters_outgoing)


def membership_from_log(
    bootstrap: ConfState, entries: Sequence[Entry], meta: SnapshotMeta
) -> ConfState | None:
    """
    The membership at `meta.index`: `bootstrap` changed by every membership change in
    the log up to that index, exactly what the node computes when it starts without a
    snapshot and replays the log from index 1.

    Args:
        bootstrap: the membership the node starts from without a snapshot.
        entries: the node's log, consecutive; it must start at index 1 and reach
            `meta.index` with term `meta.term` (the same log the snapshot covers).

    Returns:
        None if the log does not hold every entry from 1 to `meta.index`, does not agree
        with the snapshot's term there, or holds a change that cannot apply.
    """
    if meta.index < 1 or not entries or entries[0].index != 1 or entries[-1].index < meta.index:
        return None
    covered = entries[: meta.index]
    if covered[-1].index != meta.index or covered[-1].term != meta.term:
        return None
    conf_state = bootstrap
    for entry in covered:
        if entry.type is EntryType.CONF_CHANGE:
            try:
                conf_state = conf_state_after(conf_state, ConfChange.decode(entry.data))
            except (ConfChangeError, ValueError):
                return None
    return conf_state if has_membership(conf_state) else None
