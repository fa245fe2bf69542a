"""
When a node makes a durable snapshot of its own state machine, and at which point.

The raft worker snapshots its state machine in a forked child (concord.node.snapshot_fork:
a copy-on-write view at the applied index, with the membership in force there); the
simulator's nodes do the same over their fake disk (concord.sim.node). Both ask this
schedule and feed it the same events:

    due(point)                   the snapshot to start now at `point`, if any
    on_written(meta, applied_bytes)  the snapshot at `meta` is durable
    on_failed(point)             it could not be started, or its child failed or died
    on_installed(meta, applied_bytes)  a snapshot from the leader replaced the state

`SnapshotPolicy` (the [storage] snapshot_entries / snapshot_bytes triggers) is the one
place the triggers are decided: `SnapshotPolicy.snapshot_due`.

Invariants enforced here:

- a snapshot is taken only at an index the node's own log holds durably (`durable_index`):
  the writer then compacts the WAL below it, and never below what it wrote;
- one snapshot at a time (the caller asks only with none running);
- a failed or killed snapshot is retried once a quarter of either trigger has passed,
  never fatal.

Pure. No IO, no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.raft.messages import ConfState, SnapshotMeta

__all__ = ["AppliedPoint", "SnapshotPolicy", "SnapshotSchedule"]


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """
    Attributes:
        every_entries: a snapshot every this many applied entries (0: no entry trigger).
        every_bytes: ... or this many bytes of applied entry data (0: no size trigger).
    """

    every_entries: int
    every_bytes: int

    @property
    def enabled(self) -> bool:
        return self.every_entries > 0 or self.every_bytes > 0

    def snapshot_due(self, applied: int, snapshot_index: int, applied_bytes: int,
                     bytes_mark: int) -> bool:
        """
        Whether the triggers say a snapshot is due.

        Args:
            applied: the applied index.
            snapshot_index: the index of the last snapshot (written or installed).
            applied_bytes: bytes of entry data applied so far (a running count).
            bytes_mark: that count when the last snapshot was taken.
        """
        every, every_bytes = self.every_entries, self.every_bytes
        due_entries = every > 0 and applied - snapshot_index >= every
        due_bytes = (
            every_bytes > 0
            and applied > snapshot_index
            and applied_bytes - bytes_mark >= every_bytes
        )
        return due_entries or due_bytes


@dataclass(frozen=True, slots=True)
class AppliedPoint:
    """
    Where the state machine is now.

    Attributes:
        index, term: of the last applied entry.
        conf_state: the membership in force after it.
        applied_bytes: bytes of entry data applied in this life (a running count).
        durable_index: the last index of the node's log known durable (persisted).
    """

    index: int
    term: int
    conf_state: ConfState
    applied_bytes: int
    durable_index: int


class SnapshotSchedule:
    """
    The snapshot decisions of one node's life. Not thread-safe.

    Args:
        policy: the triggers.
        snapshot: the meta of the snapshot the node started from, if any.
    """

    def __init__(self, policy: SnapshotPolicy, snapshot: SnapshotMeta | None) -> None:
        self.policy = policy
        self.snapshot_index = snapshot.index if snapshot is not None else 0
        self.bytes_mark = 0
        self.next_attempt_index = 0
        self.next_attempt_bytes = 0
        self.failures = 0

    def due(self, point: AppliedPoint) -> SnapshotMeta | None:
        """The snapshot to start now (the caller has none running), or None."""
        if not self.policy.enabled or point.index > point.durable_index:
            return None  # NB: the WAL is compacted below the snapshot: it must hold it
        if not self.policy.snapshot_due(point.index, self.snapshot_index, point.applied_bytes,
                                        self.bytes_mark):
            return None
        if point.index < self.next_attempt_index and point.applied_bytes < self.next_attempt_bytes:
            return None
        return SnapshotMeta(point.index, point.term, point.conf_state)

    def on_failed(self, point: AppliedPoint) -> None:
        """A snapshot could not be started or failed: retry after a quarter of a trigger."""
        every, every_bytes = self.policy.every_entries, self.policy.every_bytes
        self.failures += 1
        self.next_attempt_index = point.index + max(1, every // 4 if every else 1 << 62)
        self.next_attempt_bytes = point.applied_bytes + max(
            1, every_bytes // 4 if every_bytes else 1 << 62)

    def on_written(self, meta: SnapshotMeta, applied_bytes: int) -> None:
        """The snapshot at `meta` is durable; `applied_bytes`: the count when it started."""
        self.snapshot_index = max(self.snapshot_index, meta.index)
        self.bytes_mark = max(self.bytes_mark, applied_bytes)
        self.next_attempt_index = self.next_attempt_bytes = 0

    def on_installed(self, meta: SnapshotMeta, applied_bytes: int) -> None:
        """A snapshot from the leader replaced the state (it is durable: the writer wrote it)."""
        self.on_written(meta, applied_bytes)
