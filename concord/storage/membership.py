"""
The membership a node's durable snapshots carry.

The log writer snapshots a replica of the state machine that it applies itself, so it
cannot see the membership: the raft worker tells it with its COMMITTED reports
(concord.node.log_writer). `SnapshotMembership` is the writer's bookkeeping of those
reports: the membership in force at the one index where it is known exactly. The
simulator's nodes make their durable snapshots through the same class
(concord.sim.disk.SimLogWriter), so a wrong decision here is a failing seed.

`membership_from_log` recovers the membership of a snapshot written without one (issue
12: writers before the fix could write an empty voter list) from the node's bootstrap
membership and its log (docs/operations.md, "Snapshots without a membership").

Pure. No IO, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from concord.raft.confchange import ConfChangeError, conf_state_after
from concord.raft.messages import ConfChange, ConfState, Entry, EntryType, SnapshotMeta

__all__ = ["SnapshotMembership", "has_membership", "membership_from_log"]


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


class SnapshotMembership:
    """
    Which membership a snapshot of the writer's replica at an index carries.

    Fed, in order, with what the raft worker reports: `committed(index, conf_state)`
    (entries <= index are committed and applied by the worker; `conf_state` is the
    membership after them, None if unchanged since the previous report) and
    `installed(meta)` (a snapshot from the leader replaced the log).

    Args:
        snapshot: the meta of the snapshot recovered at start, if any. NB: its membership
            is not taken as known: only the worker's reports of this life say what is in
            force (the log after the snapshot may change it; a snapshot written by an
            older writer may have none).
        commit: the recovered commit index (>= the snapshot's index).
    """

    __slots__ = ("commit", "_reported", "_conf_state", "_index")

    def __init__(self, snapshot: SnapshotMeta | None, commit: int) -> None:
        #: The highest index known committed: the replica applies up to it.
        self.commit = commit
        # The membership of the latest report of this life (None before the first). NB:
        # not the recovered snapshot's: the worker's log after it may change it.
        self._reported: ConfState | None = None
        # The membership at `_index`, the one index where it is known exactly.
        self._conf_state: ConfState | None = None
        self._index = snapshot.index if snapshot is not None else 0

    def committed(self, index: int, conf_state: ConfState | None) -> None:
        """The worker applied the entries up to `index`; `conf_state`: see the class."""
        # Invariant: reports arrive in log order, so the latest membership reported is
        # the one in force at every later report until the next one carrying a change.
        # NB: a report below `commit` (a restarted worker's first report carries the
        # membership at its recovered snapshot, before it replays the committed log)
        # still counts: dropping it left the membership of an earlier life in force,
        # or none at all, and the next snapshot carried it (a cluster restarted from
        # snapshots with no voters never elects a leader).
        if conf_state is not None:
            self._reported = conf_state
        if index >= self.commit:
            self.commit = index
            self._conf_state = self._reported
            self._index = index

    def installed(self, meta: SnapshotMeta) -> None:
        """A snapshot received from the leader replaced the log up to `meta.index`."""
        self._reported = self._conf_state = meta.conf_state
        self._index = meta.index
        self.commit = max(self.commit, meta.index)

    def at(self, index: int) -> ConfState | None:
        """The membership in force at `index`, or None where it is not known exactly."""
        return self._conf_state if index == self._index else None
