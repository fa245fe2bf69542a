"""
The log writer's settings: `WriterSettings` (fsync, WAL segment size, snapshot
triggers and mode, the replica's state machine, batch size; checked on construction)
and their defaults. concord.node.logwriter.state re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.storage.wal import DEFAULT_SEGMENT_BYTES

#: Default of WriterSettings.snapshot_bytes (and of the config's storage.snapshot_bytes):
#: it bounds the log a restart replays (docs/operations.md "Recovery"; 16 MiB of bulk
#: writes of 100-byte values is about 145,000 keys, about 1 s of replay per member here).
DEFAULT_SNAPSHOT_BYTES = 16 * 1024 * 1024

#: The default state machine the writer replicates: concord.kv, the same one the raft
#: worker applies (tests inject their own through WriterSettings.state_machine).
DEFAULT_STATE_MACHINE: str | None = "concord.kv.machine:KvStateMachine"


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """
    Attributes:
        fsync: False disables every fdatasync (tests/benchmarks only; logged as WARNING).
        segment_bytes: WAL segment size at which a new segment starts.
        snapshot_entries: write a snapshot every this many applied entries (0: never).
        snapshot_bytes: ... or once this many bytes of entry data were applied since the
            last snapshot, whichever comes first (0: no size trigger). Entries alone
            miss bulk writes: 1,000,000 keys put 500 at a time are only 2,000 entries.
        keep_snapshots: snapshot files kept (the newest ones; at least 2 is safest).
        snapshot_mode: "fork" serializes the replica in a forked child (copy-on-write
            view; the WAL path only pays for fork()); "thread" serializes on the writer's
            loop and compresses/writes/fsyncs in a thread.
        snapshot_compress_level: zlib level of snapshot bodies.
        state_machine: "module:callable" building the replica; None uses
            DEFAULT_STATE_MACHINE; if both are None there is no replica (no snapshots).
        replica: False runs without a replica (WAL only: no apply, no snapshots).
        max_batch_requests: most requests drained into one group commit.
    """

    fsync: bool = True
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    snapshot_entries: int = 10_000
    snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES
    keep_snapshots: int = 2
    snapshot_mode: str = "fork"
    snapshot_compress_level: int = 6
    state_machine: str | None = None
    replica: bool = True
    max_batch_requests: int = 4096

    def __post_init__(self) -> None:
        if self.snapshot_mode not in ("fork", "thread"):
            raise ValueError(f"snapshot_mode must be 'fork' or 'thread', got {self.snapshot_mode!r}")
        if (self.snapshot_entries < 0 or self.snapshot_bytes < 0 or self.keep_snapshots < 1
                or self.max_batch_requests < 1):
            raise ValueError("snapshot_entries >= 0, snapshot_bytes >= 0, keep_snapshots >= 1, "
                             "max_batch_requests >= 1")
