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

It runs the production log writer's decisions (concord.node.core.writer.WriterCore):
when PERSISTED goes out, so a wrong decision there is a failing seed. Durable snapshots
are the node's own (concord.sim.node carries out the node core's TakeSnapshot, as the
raft worker forks a child); `write_snapshot` here is that child's work on the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from concord.node.core.writer import ReportPersisted, WriterCore
from concord.raft.messages import Entry, Snapshot
from concord.raft.state import HardState
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
    The LogSink of one node incarnation, over its FakeDisk, around the production writer
    core (concord.node.core.writer.WriterCore): it decides when PERSISTED goes out.

    Args:
        loop: virtual time.
        disk: the node's disk.
        rng: the writer's stream (fsync latencies).
        on_persisted: called with the highest Ready number made durable.
        fsync_ms: (min, max) fsync latency.
    """

    def __init__(
        self,
        loop: EventLoop,
        disk: FakeDisk,
        rng: SimRandom,
        on_persisted: Callable[[int], None],
        fsync_ms: tuple[int, int] = (1, 4),
    ) -> None:
        self._loop = loop
        self._disk = disk
        self._rng = rng
        self._on_persisted = on_persisted
        self._fsync_ms = fsync_ms
        self._queued_number = 0
        self._queued_count = 0
        self._syncing = False
        self.dead = False
        recovered = disk.durable
        self.core = WriterCore(recovered.snapshot.meta if recovered.snapshot is not None else None)
        self.core.on_hello()  # this incarnation's worker connected

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None:
        self.core.on_persist(number)
        if snapshot is not None:
            self.core.on_snapshot(snapshot.meta)
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
        self.core.on_batch(number)
        effects, _ = self.core.on_flushed(self._loop.now / 1000)
        for effect in effects:
            if isinstance(effect, ReportPersisted):
                self._on_persisted(effect.number)

    def write_snapshot(self, snapshot: Snapshot, done: Callable[[bool], None]) -> None:
        """
        The node's forked snapshot child: write `snapshot` atomically after a while, then
        (as SNAPSHOT_TAKEN) compact the log below it; `done(ok)`. Buggify kills the
        child instead: nothing is written and `done(False)` (the node retries later).
        """
        lo, hi = self._fsync_ms
        delay = self._rng.randint(lo, hi) * 2
        killed = buggify("disk.snapshot_child_killed")

        def finish() -> None:
            if self.dead:
                return
            if killed:
                done(False)
                return
            self._disk.write_snapshot_atomically(snapshot)
            self.core.on_snapshot(snapshot.meta)
            done(True)

        self._loop.after(delay, finish)
