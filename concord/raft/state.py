"""
Persisted and volatile consensus state.

Pure. No IO, no clock, no global randomness; stdlib-only imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from concord.ids import NodeId


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class HardState:
    """
    State that must reach the disk before any message that depends on it leaves the node.

    `vote` is None when no vote was cast in `term`.
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0

    @property
    def is_empty(self) -> bool:
        return self.term == 0 and self.vote is None and self.commit == 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state, not persisted: who leads and what this node is."""

    leader_id: NodeId | None = None
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the applied index reaches `index`."""

    index: int
    request_ctx: bytes
