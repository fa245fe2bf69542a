"""A small deterministic state machine standing in for concord.kv in storage tests."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import xxhash


@dataclass(frozen=True, slots=True)
class Put:
    """What apply() returns (concord.raft.statemachine.Applied): the reply body."""

    result: object


class DictMachine:
    """Entries are b"key=value" puts; snapshot() is msgpack of the sorted items."""

    def __init__(self) -> None:
        self.items: dict[bytes, bytes] = {}
        self.applied_index = 0
        self.last_timestamp_ms = 0

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> Put:
        key, _, value = data.partition(b"=")
        self.items[key] = value
        self.applied_index = index
        self.last_timestamp_ms = timestamp_ms
        return Put({"revision": index})

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self.applied_index = index
        self.last_timestamp_ms = timestamp_ms

    def snapshot(self) -> bytes:
        body: bytes = msgpack.packb([self.applied_index, self.last_timestamp_ms,
                                     sorted(self.items.items())], use_bin_type=True)
        return body

    def restore(self, data: bytes) -> None:
        applied, ts, items = msgpack.unpackb(data)
        self.applied_index, self.last_timestamp_ms = applied, ts
        self.items = {k: v for k, v in items}

    def state_hash(self) -> int:
        return xxhash.xxh3_64_intdigest(self.snapshot())
