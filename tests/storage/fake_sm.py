"""A small deterministic state machine standing in for concord.kv in storage tests."""

from __future__ import annotations

import msgpack
import xxhash


class DictMachine:
    """Entries are b"key=value" puts; snapshot() is msgpack of the sorted items."""

    def __init__(self) -> None:
        self.items: dict[bytes, bytes] = {}
        self.applied_index = 0
        self.last_ts = 0

    def apply(self, index: int, timestamp_ms: int, data: bytes) -> object:
        key, _, value = data.partition(b"=")
        self.items[key] = value
        self.applied_index = index
        self.last_ts = timestamp_ms
        return {"revision": index}

    def apply_noop(self, index: int, timestamp_ms: int) -> None:
        self.applied_index = index
        self.last_ts = timestamp_ms

    def snapshot(self) -> bytes:
        return msgpack.packb([self.applied_index, self.last_ts, sorted(self.items.items())], use_bin_type=True)  # type: ignore[no-any-return]

    def restore(self, data: bytes) -> None:
        applied, ts, items = msgpack.unpackb(data)
        self.applied_index, self.last_ts = applied, ts
        self.items = {k: v for k, v in items}

    def state_hash(self) -> int:
        return xxhash.xxh3_64_intdigest(self.snapshot())
