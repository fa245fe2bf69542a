"""
The Raft log: stable storage plus the unstable tail, with commit and apply positions
(etcd-io/raft's `raftLog`).

Pure. No IO, no clock, no global randomness; stdlib-only imports.

Invariants: applied <= applying <= committed <= last_index(); committed entries handed to
the caller are always already durable (below `unstable.offset`).
"""

from __future__ import annotations

from concord.errors import CompactedError, RaftInvariantError, StorageError
from concord.errors import UnavailableError
from concord.raft.messages import Entry, Snapshot
from concord.raft.storage import ENTRY_OVERHEAD_BYTES, MemoryStorage, Storage, limit_size
from concord.raft.unstable import Unstable


class RaftLog:
    """
    The log as the core sees it.

    Args:
        storage: durable entries and state.
        max_applying_bytes: byte budget of one batch of committed entries.
    """

    __slots__ = ("storage", "unstable", "committed", "applying", "applied", "max_applying_bytes")

    def __init__(self, storage: Storage, max_applying_bytes: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applying = first - 1
        self.applied = first - 1
        self.max_applying_bytes = max_applying_bytes

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"applying={self.applying}, unstable.offset={self.unstable.offset}, "
            f"unstable.len={len(self.unstable.entries)})"
        )

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """
        The term of entry `i`.

        Raises:
            CompactedError: i is below first_index() - 1.
            UnavailableError: i is beyond last_index().
        """
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError(f"entry index {i} is below first index {dummy + 1} (compacted)")
        if i > self.last_index():
            raise UnavailableError(f"entry index {i} is beyond last index {self.last_index()}")
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except StorageError:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except StorageError:
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, term) at least as up to date?"""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """The index of the first entry whose term differs from ours (new ones too), or 0."""
        last = self.last_index()
        for entry in entries:
            if entry.index > last or not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """
        The largest index <= `index` whose term is <= `term`, and that term (etcd's
        findConflictByTerm): the probe position after a rejected APPEND.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except StorageError:
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """
        Raft §5.3 AppendEntries receiver: append if (index, log_term) matches.

        Returns:
            The index of the last new entry, or None on a mismatch.
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise RaftInvariantError(
                    f"entry {conflict} conflicts with committed entry (committed "
                    f"{self.committed})"
                )
            self.append(entries[conflict - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise RaftInvariantError(
                f"appending after {after} is below committed {self.committed}"
            )
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if self.committed < index:
            last = self.last_index()
            if last < index:
                raise RaftInvariantError(
                    f"commit index {index} is beyond last index {last} (log lost or corrupt)"
                )
            self.committed = index

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Raft §5.4.2: commit up to max_index only if that entry is of `term`."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index < self.applied or index > self.committed:
            raise RaftInvariantError(
                f"applied index {index} is outside [{self.applied}, {self.committed}]"
            )
        self.applied = index
        if self.applying < index:
            self.applying = index

    def persisted_index(self) -> int:
        """The last index known durable (entries below the unstable tail)."""
        if self.unstable.snapshot is not None:
            return 0
        return self.unstable.offset - 1

    def next_committed_entries(self) -> list[Entry]:
        """Committed, durable entries not yet handed out, within the byte budget."""
        if self.unstable.snapshot is not None:
            return []
        lo = self.applying + 1
        hi = min(self.committed, self.unstable.offset - 1) + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi, self.max_applying_bytes)

    def has_next_committed_entries(self) -> bool:
        if self.unstable.snapshot is not None:
            return False
        return self.applying < min(self.committed, self.unstable.offset - 1)

    def entries(self, i: int, max_bytes: int | None) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        """
        Entries [lo, hi), at least one if lo < hi, within `max_bytes`.

        Raises:
            CompactedError: lo is below first_index().
        """
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"entry index {lo} is below first index {first} (compacted)")
        last = self.last_index()
        if hi > last + 1:
            raise RaftInvariantError(f"slice [{lo}, {hi}) out of bounds, last index {last}")
        offset = self.unstable.offset
        result: list[Entry] = []
        budget = max_bytes
        if lo < offset:
            stored = self.storage.entries(lo, min(hi, offset), max_bytes)
            if len(stored) < min(hi, offset) - lo or hi <= offset:
                return stored
            result = stored
            if budget is not None:
                budget -= sum(len(e.data) + ENTRY_OVERHEAD_BYTES for e in stored)
                if budget <= 0:
                    return result
        start = max(lo, offset)
        ents = self.unstable.entries
        k = start - offset
        end = hi - offset
        if budget is not None:
            total = 0
            j = k
            while j < end:
                total += len(ents[j].data) + ENTRY_OVERHEAD_BYTES
                if total > budget and (j > k or result):
                    break
                j += 1
            end = j
        tail = ents[k:end]
        if result:
            result.extend(tail)
            return result
        return tail

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.meta.index
        self.unstable.restore(snapshot)

    def last_timestamp_ms(self) -> int:
        """The timestamp of the last entry, or 0 if it is only known as a snapshot index."""
        last = self.last_index()
        try:
            entries = self.slice(last, last + 1, None)
        except StorageError:
            storage = self.storage
            # MemoryStorage keeps the compacted entry's stamp on its dummy entry.
            if isinstance(storage, MemoryStorage) and storage.last_index() == last:
                return storage.last_timestamp_ms()
            return 0
        return entries[0].timestamp_ms if entries else 0


__all__ = ["RaftLog", "limit_size"]
