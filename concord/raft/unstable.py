"""
Entries and a snapshot not yet known to be durable (etcd-io/raft's `unstable`).

Pure. No IO, no clock, no global randomness; stdlib-only imports.

Entries at `offset` and above, and `snapshot`, are not yet persisted. Those below
`offset_in_progress` were handed to the caller in a Ready and are being written; they are
not handed out again. Invariant: offset <= offset_in_progress <= offset + len(entries).
"""

from __future__ import annotations

from concord.errors import RaftInvariantError
from concord.raft.messages import Entry, Snapshot


class Unstable:
    """The unpersisted tail of the log (and a snapshot received from the leader)."""

    __slots__ = ("snapshot", "entries", "offset", "offset_in_progress", "snapshot_in_progress")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset
        self.offset_in_progress = offset
        self.snapshot_in_progress = False

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        k = i - self.offset
        if k < len(self.entries):
            return self.entries[k].term
        return None

    def next_entries(self) -> list[Entry]:
        """Entries not yet handed to the caller."""
        k = self.offset_in_progress - self.offset
        if k >= len(self.entries):
            return []
        return self.entries[k:]

    def has_next_entries(self) -> bool:
        return self.offset_in_progress < self.offset + len(self.entries)

    def next_snapshot(self) -> Snapshot | None:
        if self.snapshot is None or self.snapshot_in_progress:
            return None
        return self.snapshot

    def accept_in_progress(self) -> None:
        """Everything pending was handed to the caller in a Ready."""
        if self.entries:
            self.offset_in_progress = self.offset + len(self.entries)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` are durable, if entry `index` still has `term`."""
        got = self.maybe_term(index)
        if got is None or got != term or index < self.offset:
            # NB: a later Ready replaced the entry (different term) or it is already
            # stable or inside the snapshot: nothing to do.
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        if self.offset_in_progress < self.offset:
            self.offset_in_progress = self.offset

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        self.offset = snapshot.meta.index + 1
        self.offset_in_progress = self.offset
        self.entries = []
        self.snapshot = snapshot
        self.snapshot_in_progress = False

    def truncate_and_append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append `entries`, replacing any existing entries from their first index on."""
        first = entries[0].index
        end = self.offset + len(self.entries)
        if first == end:
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replace everything: the caller's storage truncates too when it appends.
            self.offset = first
            self.offset_in_progress = first
            self.entries = list(entries)
        elif first < end:
            del self.entries[first - self.offset :]
            self.entries.extend(entries)
            if self.offset_in_progress > first:
                self.offset_in_progress = first
        else:
            raise RaftInvariantError(f"appending entry {first} leaves a gap after {end - 1}")

    def slice(self, lo: int, hi: int) -> list[Entry]:
        if lo < self.offset or hi > self.offset + len(self.entries) or lo > hi:
            raise RaftInvariantError(
                f"unstable slice [{lo}, {hi}) out of bounds "
                f"[{self.offset}, {self.offset + len(self.entries)})"
            )
        return self.entries[lo - self.offset : hi - self.offset]
