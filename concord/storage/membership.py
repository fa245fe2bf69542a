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

    __slots__ = ("commit", "_conf_state", "_index", "_known")

    def __init__(self, snapshot: SnapshotMeta | None, commit: int) -> None:
        #: The highest index known committed: the replica applies up to it.
        self.commit = commit
        self._conf_state = snapshot.conf_state if snapshot is not None else ConfState()
        self._index = snapshot.index if snapshot is not None else 0
        self._known = False  # a report with a conf_state arrived in this life

    def committed(self, index: int, conf_state: ConfState | None) -> None:
        """The worker applied the entries up to `index`; `conf_state`: see the class."""
        if conf_state is not None:
            self._known = True
        if index >= self.commit:
            self.commit = index
            if conf_state is not None:
                self._conf_state = conf_state
            self._index = index

    def installed(self, meta: SnapshotMeta) -> None:
        """A snapshot received from the leader replaced the log up to `meta.index`."""
        self._conf_state = meta.conf_state
        self._index = meta.index
        self.commit = max(self.commit, meta.index)
        self._known = True

    def at(self, index: int) -> ConfState | None:
        """The membership in force at `index`, or None where it is not known exactly."""
        if not self._known or index != self._index:
            return None
        return self._conf_state
