"""
Applying one committed entry to a state machine: `apply_entry`, the rule tests and tools
that rebuild a state from a log use (the same one the driver follows).

The log writer kept a replica of the state machine with it until durable snapshots
became the raft worker's own (concord.node.snapshot_fork); a snapshot file now records
the state hash it was taken with, and the raft worker compares it with the restored
state's at start-up (non-determinism in snapshot/restore shows there).

No IO here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concord.raft.messages import Entry, EntryType
from concord.raft.statemachine import StateMachine

if TYPE_CHECKING:
    from concord.kv.machine import KvStateMachine

__all__ = ["apply_entry"]


def apply_entry(sm: StateMachine, entry: Entry) -> object:
    """
    Apply one committed entry: a NORMAL entry with data goes to apply(); the leader's
    empty no-op and CONF_CHANGE entries (interpreted by the raft core, not the state
    machine) only move the applied index and cluster time through apply_noop().

    Returns:
        apply()'s result, or None for a no-op.
    """
    if entry.type is EntryType.NORMAL and entry.data:
        return sm.apply(entry.index, entry.timestamp_ms, entry.data)
    sm.apply_noop(entry.index, entry.timestamp_ms)
    return None


def _conforms(machine: KvStateMachine) -> StateMachine:
    """Static check (mypy): the kv machine implements the StateMachine Protocol."""
    return machine
