"""
The membership a node's durable snapshots carry.

The log writer snapshots a replica of the state machine that it applies itself, so it
cannot see the membership: the raft worker tells it with its COMMITTED reports
(concord.node.log_writer). `SnapshotMembership` is the writer's bookkeeping of those
reports: the membership in force at the one index where it is known exactly. The
simulator's nodes make their durable snapshots through the same class
(concord.sim.disk.SimLogWriter), so a wrong decision here is a failing seed.

Pure. No IO, no clock.
"""

from __future__ import annotations

from concord.raft.messages import ConfState, SnapshotMeta

__all__ = ["SnapshotMembership"]


class SnapshotMembership:
    """
    Which membership a snapshot of the writer's replica at an index carries.

    Fed, in order, with what the raft worker reports: `committed(index, conf_state)`
    (entries <= index are committed and applied by the worker; `conf_state` is the
    membership after them, None if unchanged since the previous report) and
    `installed(meta)` (a snapshot from the leader replaced the log).

    Args:
        snapshot: the meta of the snapshot recovered at start, if any.
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
