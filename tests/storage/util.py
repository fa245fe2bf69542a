"""Shared builders for the storage tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path

from concord.node import log_writer as lw
from concord.raft.messages import Entry
from concord.storage.recovery import wal_dir
from concord.storage.wal import WAL, WalOptions
from concord.storage.walread import read_wal


def make_entries(first: int, count: int, term: int = 1, size: int = 16) -> list[Entry]:
    """`count` consecutive entries from index `first`, with data naming index and term."""
    return [
        Entry(term, i, data=f"{i}:{term}:".encode().ljust(size, b"x"), timestamp_ms=1000 + i)
        for i in range(first, first + count)
    ]


def open_wal(data_dir: Path, segment_bytes: int = 1 << 20, fsync: bool = True) -> WAL:
    """Replay (with repair) and open the WAL of `data_dir` for appending."""
    return WAL(wal_dir(data_dir), WalOptions(segment_bytes, fsync), read_wal(wal_dir(data_dir)))


@contextmanager
def writer_process(data_dir: Path, endpoint: str, settings: lw.WriterSettings) -> Iterator[BaseProcess]:
    """Run the writer in a spawned process; SIGKILL it by pid on exit if still alive."""
    proc = get_context("spawn").Process(target=lw.run_log_writer, args=(str(data_dir), endpoint, settings))
    proc.start()
    assert proc.pid is not None
    try:
        yield proc
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert not proc.is_alive()
