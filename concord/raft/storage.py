"""
The read side of the log's stable storage, and an in-memory implementation.

Pure. No IO, no clock, no global randomness; stdlib-only imports.

`MemoryStorage` keeps a dummy entry at the snapshot's index (as etcd-io/raft does), so
`term(first_index() - 1)` answers the snapshot's term. A new cluster is bootstrapped by
giving `MemoryStorage` the initial membership: it plays the role of a snapshot at index 0
(`MemoryStorage(ConfState(voters=(...)))`). After a restart the caller loads the
recovered snapshot (apply_snapshot), hard state (set_hard_state) and entries (append),
and re-applies committed CONF_CHANGE entries past the snapshot with apply_conf_change.
"""

from __future__ import annotations

from typing import Protocol

from concord.errors import CompactedError, RaftInvariantError, SnapshotOutOfDateError
from concord.errors import UnavailableError
from concord.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from concord.raft.state import HardState

#: Bytes counted per entry on top of its data, for size budgets.
ENTRY_OVERHEAD_BYTES = 16


def entry_size(entry: Entry) -> int:
    """The size an entry counts for in byte budgets."""
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` within `max_bytes`, but at least one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry.data) + ENTRY_OVERHEAD_BYTES
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries


class Storage(Protocol):
    """The core's read-only view of stable storage (entries and state already durable)."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership of the latest snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """
        Entries [lo, hi), at least one, within `max_bytes`.

        Raises:
            CompactedError: lo is at or below the snapshot's index.
            UnavailableError: hi is beyond last_index() + 1.
        """
        ...

    def term(self, i: int) -> int:
        """
        The term of entry `i`, for first_index() - 1 <= i <= last_index().

        Raises:
            CompactedError, UnavailableError: i outside that range.
        """
        ...

    def first_index(self) -> int:
        ...

    def last_index(self) -> int:
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (UnavailableError if it is being produced)."""
        ...


class MemoryStorage:
    """
    A `Storage` held in memory; the caller writes persisted Ready contents into it.

    Args:
        conf_state: the bootstrap membership, used while no snapshot was applied.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(conf_state=conf_state or ConfState()))
        # Invariant: _ents[0] is a dummy entry at the snapshot's index and term.
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"entry index {lo} is at or below snapshot index {offset}")
        last = offset + len(self._ents) - 1
        if hi > last + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last index is {last}")
        start, end = lo - offset, hi - offset
        if max_bytes is not None:
            # Walk to the budget first: never copy more than is returned.
            ents = self._ents
            total = 0
            for k in range(start, end):
                total += len(ents[k].data) + ENTRY_OVERHEAD_BYTES
                if total > max_bytes and k > start:
                    end = k
                    break
        return self._ents[start:end]

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError(f"entry index {i} is below first index {offset + 1}")
        if i - offset >= len(self._ents):
            raise UnavailableError(f"entry index {i} is beyond last index")
        return self._ents[i - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def last_timestamp_ms(self) -> int:
        """The timestamp of the last entry (kept on the dummy across compaction)."""
        return self._ents[-1].timestamp_ms

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """
        Replace the contents with `snapshot` (entries are dropped).

        Raises:
            SnapshotOutOfDateError: it is not newer than the snapshot held.
        """
        if snapshot.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot index {snapshot.meta.index} is not newer than "
                f"{self._snapshot.meta.index}"
            )
        self._snapshot = snapshot
        self._ents = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)]

    def create_snapshot(
        self, index: int, conf_state: ConfState | None, data: bytes
    ) -> Snapshot:
        """
        Record a snapshot of the state machine at `index` (entries stay until compact).

        Raises:
            SnapshotOutOfDateError: index is not beyond the current snapshot.
            UnavailableError: index is beyond the last entry.
        """
        offset = self._ents[0].index
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot index {index} is not newer than {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} is beyond last index")
        meta = SnapshotMeta(
            index=index,
            term=self._ents[index - offset].term,
            conf_state=conf_state if conf_state is not None else self._snapshot.meta.conf_state,
        )
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """
        Drop entries up to and including `compact_index` (it becomes the dummy).

        Raises:
            CompactedError: already compacted to that index.
            UnavailableError: compact_index is beyond the last entry.
        """
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} is already compacted")
        if compact_index > self.last_index():
            raise UnavailableError(f"compact index {compact_index} is beyond last index")
        i = compact_index - offset
        kept = self._ents[i]
        dummy = Entry(term=kept.term, index=kept.index, timestamp_ms=kept.timestamp_ms)
        self._ents = [dummy] + self._ents[i + 1 :]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """
        Append entries; an entry at index i replaces everything from i on.

        Raises:
            RaftInvariantError: the entries leave a gap after the last index.
        """
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return
        ents = list(entries)
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self._ents[0].index
        if len(self._ents) > offset:
            del self._ents[offset:]
            self._ents.extend(ents)
        elif len(self._ents) == offset:
            self._ents.extend(ents)
        else:
            raise RaftInvariantError(
                f"missing log entry: last index {self.last_index()}, appending {ents[0].index}"
            )
