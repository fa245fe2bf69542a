"""
The log writer's settings: `WriterSettings` (fsync, WAL segment size, snapshot files
kept, batch size; checked on construction) and their defaults.
concord.node.logwriter.state re-exports every name here.

When a durable snapshot is due is not the writer's setting: the raft worker decides
(concord.node.core.snapshots, from [storage] snapshot_entries / snapshot_bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.storage import snapshot as snapfile
from concord.storage.wal import DEFAULT_SEGMENT_BYTES


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """
    Attributes:
        fsync: False disables every fdatasync (tests/benchmarks only; logged as WARNING).
        segment_bytes: WAL segment size at which a new segment starts.
        keep_snapshots: snapshot files kept (the newest ones; at least 2 is safest).
        snapshot_compress_level: zlib level of the snapshot bodies the writer writes
            (those installed from the leader).
        max_batch_requests: most requests drained into one group commit.
    """

    fsync: bool = True
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    keep_snapshots: int = 2
    snapshot_compress_level: int = snapfile.DEFAULT_LEVEL
    max_batch_requests: int = 4096

    def __post_init__(self) -> None:
        if self.keep_snapshots < 1 or self.max_batch_requests < 1:
            raise ValueError("keep_snapshots >= 1, max_batch_requests >= 1")
