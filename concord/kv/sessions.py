"""
Client sessions for exactly-once writes: per client, the last seq applied and its result.

Deterministic. Bounded by a capacity (least recently used evicted first) and by an idle
time measured in entry timestamps, never a local clock. Sessions are kept in order of
last use (`last_index`, unique and increasing along the log), so the order is a function
of the contents and snapshots and the state hash capture it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
import xxhash

_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Session:
    """One client's last applied write."""

    client_id: str
    seq: int
    result: dict[str, object]
    last_index: int
    last_ts_ms: int

    def digest(self) -> int:
        """xxh3_64 of a canonical encoding, for the state hash."""
        packed = msgpack.packb(
            [self.client_id, self.seq, self.result, self.last_index, self.last_ts_ms],
            use_bin_type=True,
        )
        return xxhash.xxh3_64_intdigest(packed)

    def to_list(self) -> list[object]:
        return [self.client_id, self.seq, self.result, self.last_index, self.last_ts_ms]


class SessionTable:
    """The sessions of one state machine."""

    def __init__(self, capacity: int, ttl_ms: int) -> None:
        self._capacity = capacity
        self._ttl_ms = ttl_ms
        self._by_client: OrderedDict[str, Session] = OrderedDict()
        self.digest = 0  # sum of session digests mod 2**64

    def __len__(self) -> int:
        return len(self._by_client)

    def __iter__(self) -> Iterator[Session]:
        return iter(self._by_client.values())

    def get(self, client_id: str) -> Session | None:
        """The session of `client_id`, if remembered."""
        return self._by_client.get(client_id)

    def record(self, session: Session) -> None:
        """Remember a client's latest write (it becomes the most recently used)."""
        old = self._by_client.pop(session.client_id, None)
        if old is not None:
            self.digest = (self.digest - old.digest()) & _MASK
        self._by_client[session.client_id] = session
        self.digest = (self.digest + session.digest()) & _MASK

    def evict(self, now_ms: int) -> None:
        """Forget sessions idle since `now_ms - ttl_ms` or beyond capacity, oldest first."""
        while self._by_client:
            client_id, oldest = next(iter(self._by_client.items()))
            if len(self._by_client) <= self._capacity and oldest.last_ts_ms + self._ttl_ms > now_ms:
                break
            del self._by_client[client_id]
            self.digest = (self.digest - oldest.digest()) & _MASK

    def clear(self) -> None:
        self._by_client.clear()
        self.digest = 0

    def load(self, sessions: list[Session]) -> None:
        """Replace the table (snapshot restore); sessions are ordered by last use."""
        self.clear()
        for session in sorted(sessions, key=lambda s: s.last_index):
            self.record(session)
