"""
The committed store in shared memory: one writer (`Publisher`, in the raft worker), any
number of lock-free readers (`ShmView`), segments owned by the supervisor
(`create_store` / `unlink_store`), and the read logic over a view (`reader.Reader`: kv's
reads over shared memory, used by read workers and same-host clients). Formats:
layout.py and docs/formats/shm.md.
"""

from __future__ import annotations

from concord.shm.layout import SegmentNames, ShmStatus
from concord.shm.publisher import ArenaStats, Publisher
from concord.shm.segments import create_store, store_segments, unlink_store
from concord.shm.view import MISSING, ShmView

__all__ = [
    "MISSING",
    "ArenaStats",
    "Publisher",
    "SegmentNames",
    "ShmStatus",
    "ShmView",
    "create_store",
    "store_segments",
    "unlink_store",
]
