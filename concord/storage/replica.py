"""
The writer's replica of the state machine, and the checks that keep it honest.

The log writer keeps its own copy of the state machine, applying committed entries with
`apply_entry` -- the same function the raft worker uses -- so it can serialize snapshots
without ever stopping the raft worker. The raft worker compares its state hash with the
writer's at the snapshot index (`check_replica_hash`); a mismatch means the two copies
diverged (non-determinism in apply(), or a bug) and is logged as an ERROR.

No IO here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from concord.raft.messages import Entry, EntryType
from concord.raft.statemachine import StateMachine

if TYPE_CHECKING:
    from concord.kv.machine import KvStateMachine

logger = logging.getLogger(__name__)


StateMachineFactory = Callable[[], StateMachine]


@runtime_checkable
class SteppedRestore(Protocol):
    """A state machine that can also restore in bounded steps (concord.kv can)."""

    def restore_steps(self, data: bytes) -> Iterator[None]: ...


def restore_steps(sm: StateMachine, data: bytes) -> Iterator[None]:
    """
    `sm.restore(data)` as an iterator of bounded steps when `sm` supports it, else as
    one step. The state machine must not be used until the iterator is exhausted.
    """
    if isinstance(sm, SteppedRestore):
        yield from sm.restore_steps(data)
    else:
        sm.restore(data)


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


def check_replica_hash(
    index: int, own_hash: int, writer_hash: int, log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None
) -> bool:
    """
    Compare the raft worker's state hash at `index` with the writer's at the same index.

    Returns:
        True if they agree; False (after logging an ERROR with both hashes) if not.
    """
    if own_hash == writer_hash:
        return True
    (log or logger).error(
        "replica state hash mismatch: the writer's state machine diverged from the raft worker's "
        "index=%d worker_hash=%#018x writer_hash=%#018x",
        index,
        own_hash,
        writer_hash,
    )
    return False


class ReplicaChecker:
    """
    The raft worker's side of the replica check: remember its own state hash at the
    indexes it reported to the writer (COMMITTED), compare when the writer reports a
    snapshot at one of them.

    Args:
        capacity: how many recent (index, hash) pairs to keep.
    """

    def __init__(self, capacity: int = 4096, log: logging.Logger | None = None) -> None:
        self._hashes: dict[int, int] = {}
        self._capacity = capacity
        self._log = log or logger
        self.mismatches = 0

    def record(self, index: int, own_hash: int) -> None:
        """Remember the worker's state hash after applying up to `index`."""
        self._hashes[index] = own_hash
        if len(self._hashes) > self._capacity:
            for old in sorted(self._hashes)[: len(self._hashes) - self._capacity]:
                del self._hashes[old]

    def check(self, index: int, writer_hash: int) -> bool | None:
        """
        Returns:
            True/False as `check_replica_hash`; None if the worker's hash at `index` is not
            known (too old, or never recorded) -- nothing to compare.
        """
        own = self._hashes.get(index)
        if own is None:
            return None
        for old in [i for i in self._hashes if i <= index]:
            del self._hashes[old]
        ok = check_replica_hash(index, own, writer_hash, self._log)
        if not ok:
            self.mismatches += 1
        return ok


def load_factory(spec: str) -> StateMachineFactory:
    """
    Resolve "package.module:callable" to a state-machine factory.

    Raises:
        ValueError: the spec is malformed or names nothing callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"state machine spec {spec!r} is not 'module:callable'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load state machine {spec!r}: {exc}") from exc
    if not callable(target):
        raise ValueError(f"state machine {spec!r} is not callable")
    factory: StateMachineFactory = target
    return factory


def _conforms(machine: KvStateMachine) -> StateMachine:
    """Static check (mypy): the kv machine implements the StateMachine Protocol."""
    return machine
