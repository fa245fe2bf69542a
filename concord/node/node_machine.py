"""
The raft worker's state machine and the parts of its world that are not sockets: the
replicated kv settings of a config, the endpoints the supervisor hands its children,
the clocks, and `NodeMachine` (the node's replicated `NodeStateMachine`, observed for
shared memory, the change stream, the address book and `hash_kv`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from concord.config import NodeConfig
from concord.kv import KvConfig
from concord.kv.machine import Applied, HashPoint
from concord.kv.record import Change
from concord.node.members import MAGIC, AddressBook, NodeStateMachine
from concord.shm.layout import SegmentNames

__all__ = ["HASH_HISTORY_ENTRIES", "MonotonicClock", "NodeMachine", "WallClock",
           "WorkerEndpoints", "kv_config_of"]

#: Applied indexes whose kv state hash the worker remembers for `hash_kv` (the replica
#: check compares nodes at one index; about 1 MB).
HASH_HISTORY_ENTRIES = 16384


def kv_config_of(config: NodeConfig) -> KvConfig:
    """The replicated kv settings derived from a node config (the same on every node)."""
    return KvConfig(
        max_key_bytes=config.limits.max_key_bytes,
        max_value_bytes=config.limits.max_value_bytes,
        max_items=config.limits.max_batch_items,
        compress_threshold_bytes=(
            config.compression.threshold_bytes if config.compression.enabled else 1 << 62
        ),
        compress_level=config.compression.level,
    )


@dataclass(frozen=True, slots=True)
class WorkerEndpoints:
    """Process-local endpoints and shm names the supervisor hands its children."""

    writer: str  # ipc endpoint of the log writer's PAIR
    backend: str  # ipc endpoint of the front door's backend ROUTER
    shm: SegmentNames


class WallClock:
    """Cluster time for the driver: wall-clock ms (entries are stamped with it; TTLs)."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class MonotonicClock:
    """
    The driver's timer: CLOCK_MONOTONIC ms (lease, vote hold, deadlines). A wall-clock
    step (NTP, a wrong RTC, `faketime`) never moves it, so it cannot stretch a lease.
    """

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class NodeMachine:
    """
    The driver's state machine: the node's replicated `NodeStateMachine` (kv plus member
    addresses), observed. Collects the changes of applied entries for shared memory and
    the change stream, keeps the worker's address book current, and notices snapshot
    installs (the published state must then be replaced whole).
    """

    def __init__(self, state: NodeStateMachine, book: AddressBook) -> None:
        self.state = state
        self.kv = state.kv
        self.book = book
        self.changes: list[Change] = []
        self.restored = False
        self.addresses_changed = False
        # The kv state hash's inputs after each applied entry (applied index first),
        # oldest first: the `hash_kv` op answers from it (docs/protocol.md), digesting
        # the one it is asked for (`hash_of_point`); keeping the inputs costs half of
        # hashing every entry. A restore starts it over.
        self.hashes: collections.deque[HashPoint] = collections.deque(
            [state.kv.hash_point()], maxlen=HASH_HISTORY_ENTRIES)
        self._sync_book()

    @property
    def applied_index(self) -> int:
        return self.state.applied_index

    @property
    def last_timestamp_ms(self) -> int:
        return self.state.last_timestamp_ms

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Applied:
        applied = self.state.apply(index, timestamp_ms, data)
        self.hashes.append(self.kv.hash_point())
        if data.startswith(MAGIC):
            self._sync_book()
        else:
            self.changes.extend(applied.changes)
        return applied

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self.state.apply_noop(index, timestamp_ms)
        self.hashes.append(self.kv.hash_point())

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, data: bytes) -> None:
        self.state.restore(data)
        self.changes.clear()
        self.hashes.clear()
        self.hashes.append(self.kv.hash_point())
        self.restored = True
        self._sync_book()

    def state_hash(self) -> int:
        return self.state.state_hash()

    def _sync_book(self) -> None:
        for address in self.state.addresses.values():
            if self.book.get(address.id) != address:
                self.book.set(address)
                self.addresses_changed = True
