"""
The pure consensus core (etcd-io/raft style). Use `RawNode`; see rawnode.py.

Pure. No IO, no clock, no global randomness, no threads; stdlib-only imports (checked by
tests/raft/test_purity.py).
"""

from __future__ import annotations

from concord.raft.config import RaftConfig, Rng
from concord.raft.messages import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from concord.raft.rawnode import ProgressStatus, RawNode, Ready, Status
from concord.raft.state import HardState, ReadState, Role, SoftState
from concord.raft.storage import MemoryStorage, Storage

__all__ = [
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressStatus",
    "RaftConfig",
    "RawNode",
    "ReadState",
    "Ready",
    "Rng",
    "Role",
    "SnapshotMeta",
    "Snapshot",
    "SoftState",
    "Status",
    "Storage",
]
