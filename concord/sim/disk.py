"""
A fake disk per simulated node, and the log writer (LogSink) over it.

Pure: no files. Time and randomness come from the simulator.

The disk holds a durable state (snapshot, hard state, log entries) and a queue of
written-but-unsynced records. `crash()` loses every unsynced record except, maybe, a
prefix of them with the last one torn at a record boundary (as a real WAL recovers a
torn tail): never more than was written, and never a synced record. Snapshots are
written atomically (temp file, fsync, rename), so a crash keeps the old or the new one.

The writer does group commit: writes that arrive while an fsync runs wait for the next
one, then one fsync acknowledges them all with the highest Ready number.

Like the production log writer, it decides the membership a durable snapshot carries
with `concord.storage.membership.SnapshotMembership`, fed by the node with the reports
the raft worker sends (`committed`); a snapshot at an index where that membership is
not known exactly is not made durable (the production writer waits for such an index).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from concord.raft.messages import ConfState, Entry, Snapshot
from concord.raft.state import HardState
from concord.storage.membership import SnapshotMembership
from concord.sim.buggify import buggify
from concord.sim.loop import EventLoop
from concord.sim.rng import SimRandom

__all__ = ["DiskState", "FakeDisk", "RecoveredState", "SimLogWriter"]


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What recovery returns (the shape of concord.storage.recovery.RecoveredState)."""

    snapshot: Snapshot | None
    hard_state: HardState
    entries: list[Entry]


@dataclass(slots=True)
class DiskState:
    snapshot: Snapshot | None = None
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)

    def snapshot_index(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.meta.index

    def holds(self, index: int, term: int) -> bool:
        """Whether the durable log has entry `index` of `term` (or a snapshot past it)."""
        if index <= self.snapshot_index():
            return True
        if not self.entries:
            return False
        k = index - self.entries[0].index
        return 0 <= k < len(self.entries) and self.entries[k].term == term

    def write_entries(self, entries: Sequence[Entry]) -> None:
        """Append; an entry at index i replaces everything from i on (WAL truncation)."""
        base = self.snapshot_index()
        ents = [e for e in entries if e.index > base]
        if not ents:
            return
        first = ents[0].index
        if self.entries:
            keep = first - self.entries[0].index
            if keep < 0:
                self.entries = []
            elif keep <= len(self.entries):
                del self.entries[keep:]
            else:
                raise AssertionError(
                    f"disk log gap: last index {self.entries[-1].index}, appending {first}"
                )
        elif first != base + 1:
            raise AssertionError(f"disk log gap: snapshot index {base}, appending {first}")
        self.entries.extend(ents)

    def install_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.meta.index <= self.snapshot_index():
            return
        index = snapshot.meta.index
        # Keep the entries after the snapshot only if the log agrees at its index.
        tail: list[Entry] = []
        for i, e in enumerate(self.entries):
            if e.index == index and e.term == snapshot.meta.term:
                tail = self.entries[i + 1 :]
                break
        self.snapshot = snapshot
        self.entries = tail


@dataclass(slots=True)
class _Record:
    entries: tuple[Entry, ...]
    hard_state: HardState | None
    snapshot: Snapshot | None


class FakeDisk:
    """One node's disk. Survives the node's crashes (it is the only thing that does)."""

    def __init__(self) -> None:
        self.durable = DiskState()
        self._unsynced: list[_Record] = []
        self.syncs = 0
        self.crashes = 0
        #: A stalled disk (virtual ms): no fsync completes before this time.
        self.stalled_until = 0

    def write(
        self, entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> int:
        """Queue a write (not durable until `sync`). Returns a position for `sync`."""
        self._unsynced.append(_Record(tuple(entries), hard_state, snapshot))
        return len(self._unsynced)

    def sync(self, upto: int) -> None:
        """Make the first `upto` queued writes durable."""
        for record in self._unsynced[:upto]:
            self._apply(record)
        del self._unsynced[:upto]
        self.syncs += 1

    def write_snapshot_atomically(self, snapshot: Snapshot) -> None:
        self.durable.install_snapshot(snapshot)

    def crash(self, rng: SimRandom, tear_p: float = 0.5) -> None:
        """Lose unsynced writes; maybe keep a prefix of them with the last one torn."""
        self.crashes += 1
        pending, self._unsynced = self._unsynced, []
        if not pending or not rng.chance(tear_p):
            return
        survivors = rng.randint(0, len(pending))
        for i, record in enumerate(pending[:survivors]):
            if i == survivors - 1 and record.entries:
                # Torn at a record boundary: a prefix of the entries, no hard state.
                cut = rng.randint(0, len(record.entries))
                record = _Record(record.entries[:cut], None, None)
            self._apply(record)

    def _apply(self, record: _Record) -> None:
        if record.snapshot is not None:
            # A snapshot received from the leader replaces the log.
            if record.snapshot.meta.index > self.durable.snapshot_index():
                self.durable.snapshot = record.snapshot
                self.durable.entries = []
        if record.entries:
            self.durable.write_entries(record.entries)
        if record.hard_state is not None:
            self.durable.hard_state = record.hard_state

    def recover(self) -> RecoveredState:
        d = self.durable
        return RecoveredState(d.snapshot, d.hard_state, list(d.entries))


class SimLogWriter:
    """
    The LogSink and SnapshotSink of one node incarnation, over its FakeDisk.

    Args:
        loop: virtual time.
        disk: the node's disk.
        rng: the writer's stream (fsync latencies).
        on_persisted: called with the highest Ready number made durable.
        on_snapshot: called once a snapshot is durable (with the durable meta).
        fsync_ms: (min, max) fsync latency.
        membership: the membership bookkeeping of this incarnation (see the module).
    """

    def __init__(
        self,
        loop: EventLoop,
        disk: FakeDisk,
        rng: SimRandom,
        on_persisted: Callable[[int], None],
        on_snapshot: Callable[[Snapshot], None],
        fsync_ms: tuple[int, int] = (1, 4),
        membership: SnapshotMembership | None = None,
    ) -> None:
        self._loop = loop
        self._disk = disk
        self._rng = rng
        self._on_persisted = on_persisted
        self._on_snapshot = on_snapshot
        self._fsync_ms = fsync_ms
        self._queued_number = 0
        self._queued_count = 0
        self._syncing = False
        self.dead = False
        recovered = disk.durable
        self.membership = membership or SnapshotMembership(
            recovered.snapshot.meta if recovered.snapshot is not None else None,
            max(recovered.hard_state.commit, recovered.snapshot_index()))
        #: Snapshots not made durable: the membership at their index was not known.
        self.skipped_snapshots = 0

    def committed(self, index: int, conf_state: ConfState | None) -> None:
        """The raft worker's COMMITTED report (concord.node.log_writer)."""
        self.membership.committed(index, conf_state)

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None:
        if snapshot is not None:
            self.membership.installed(snapshot.meta)
        self._queued_count = self._disk.write(entries, hard_state, snapshot)
        self._queued_number = number
        if not self._syncing:
            self._start_sync()

    def _start_sync(self) -> None:
        self._syncing = True
        upto, number = self._queued_count, self._queued_number
        lo, hi = self._fsync_ms
        delay = self._rng.randint(lo, hi)
        if buggify("disk.slow_fsync"):
            delay += self._rng.randint(20, 200)
        delay = max(delay, self._disk.stalled_until - self._loop.now)
        self._loop.after(delay, lambda: self._synced(upto, number))

    def _synced(self, upto: int, number: int) -> None:
        if self.dead:
            return
        self._disk.sync(upto)
        self._queued_count -= upto
        self._syncing = False
        if self._queued_count > 0:
            self._start_sync()
        self._on_persisted(number)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        conf_state = self.membership.at(snapshot.meta.index)
        if conf_state is None:
            self.skipped_snapshots += 1
            return
        snapshot = Snapshot(replace(snapshot.meta, conf_state=conf_state), snapshot.data)
        lo, hi = self._fsync_ms
        delay = self._rng.randint(lo, hi) * 2

        def done() -> None:
            if self.dead:
                return
            self._disk.write_snapshot_atomically(snapshot)
            self._on_snapshot(snapshot)

        self._loop.after(delay, done)
