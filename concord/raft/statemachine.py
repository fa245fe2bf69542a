"""
The state machine a Raft log is applied to: the one Protocol every applier uses.

Pure. No IO. The driver (concord.node.driver), tools rebuilding a state from a log
(concord.storage.replica) and the simulator (concord.sim.machine) apply committed entries
to a `StateMachine`; `concord.kv.KvStateMachine` (wrapped by
`concord.node.members.NodeStateMachine`) is the real one, the simulator's register
machine another.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Applied", "StateMachine"]


class Applied(Protocol):
    """What the state machine returns from apply(): the client's reply body."""

    @property
    def result(self) -> object: ...


class StateMachine(Protocol):
    """The deterministic state machine (concord.kv provides the real one)."""

    @property
    def applied_index(self) -> int: ...

    @property
    def last_timestamp_ms(self) -> int:
        """The timestamp of the last applied entry (also after a restore)."""
        ...

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Applied: ...

    def apply_noop(self, index: int, timestamp_ms: int) -> None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def state_hash(self) -> int: ...
