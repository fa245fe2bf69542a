"""Shared builders for the storage tests."""

from __future__ import annotations

from pathlib import Path

from concord.raft.messages import Entry
from concord.storage.recovery import wal_dir
from concord.storage.wal import WAL, WalOptions, read_wal


def make_entries(first: int, count: int, term: int = 1, size: int = 16) -> list[Entry]:
    """`count` consecutive entries from index `first`, with data naming index and term."""
    return [
        Entry(term, i, data=f"{i}:{term}:".encode().ljust(size, b"x"), timestamp_ms=1000 + i)
        for i in range(first, first + count)
    ]


def open_wal(data_dir: Path, segment_bytes: int = 1 << 20, fsync: bool = True) -> WAL:
    """Replay (with repair) and open the WAL of `data_dir` for appending."""
    return WAL(wal_dir(data_dir), WalOptions(segment_bytes, fsync), read_wal(wal_dir(data_dir)))
