"""
Client sessions for exactly-once writes with many writes in flight (Raft thesis §6.3).

Every session write carries (client_id, seq, min_seq): `min_seq` is the lowest seq of
that client whose reply the client has not received yet. The session keeps the result
of every applied seq >= its floor (the highest min_seq seen), so a retry of ANY write
still in flight is answered with its first result, not applied again; results below the
floor are forgotten, and a write below the floor is refused (its reply can reach no one:
the client already had it, or gave up on it). A request without `min_seq` counts as
`min_seq = seq`: the session then keeps only its latest result (protocol v1 behaviour).

Deterministic. Memory is bounded three ways: at most `max_results` results per session
(a write that would exceed it is refused and changes nothing), at most `capacity`
sessions (least recently used evicted first), and a session idle for `ttl_ms` of entry
time (the leader's timestamps, never a local clock) is forgotten. Sessions are kept in
order of last use (`last_index`, unique and increasing along the log), so the order is a
function of the log, and snapshots and the state hash capture it.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import msgpack
import xxhash

from concord.errors import InvalidRequestError

_MASK = (1 << 64) - 1

#: Most results one session keeps (writes in flight at once per client_id).
DEFAULT_MAX_RESULTS = 1024

Result = dict[str, object]


def _result_digest(client_id: str, seq: int, result: Mapping[str, object]) -> int:
    return xxhash.xxh3_64_intdigest(msgpack.packb([client_id, seq, result], use_bin_type=True))


@dataclass(slots=True)
class Session:
    """
    One client's session: the floor and the results of its writes at or above it.

    Invariant: every seq in `results` is >= `floor`; `_seqs` is a min-heap of the seqs
    in `results` and `_sum` the sum of their digests mod 2**64, so a write costs
    O(log n) however many results the session keeps.
    """

    client_id: str
    floor: int
    last_index: int
    last_ts_ms: int
    results: dict[int, Result] = field(default_factory=dict)
    _result_digests: dict[int, int] = field(default_factory=dict)
    _seqs: list[int] = field(default_factory=list)
    _sum: int = 0

    def digest(self) -> int:
        """The session's digest: its header plus the sum of its result digests."""
        head = xxhash.xxh3_64_intdigest(
            msgpack.packb([self.client_id, self.floor, self.last_index, self.last_ts_ms],
                          use_bin_type=True))
        return (head + self._sum) & _MASK

    def add(self, seq: int, result: Result) -> None:
        """Keep `result` for `seq` (replacing an earlier one: the heap holds each seq once)."""
        digest = _result_digest(self.client_id, seq, result)
        old = self._result_digests.get(seq)
        if old is None:
            heapq.heappush(self._seqs, seq)
        else:
            self._sum = (self._sum - old) & _MASK
        self.results[seq] = result
        self._result_digests[seq] = digest
        self._sum = (self._sum + digest) & _MASK

    def kept_from(self, floor: int) -> int:
        """How many results have a seq >= `floor`."""
        if not self._seqs or self._seqs[0] >= floor:
            return len(self.results)
        return sum(1 for s in self.results if s >= floor)

    def raise_floor(self, floor: int) -> None:
        """Forget the results of seqs below `floor` (never lowers it)."""
        if floor <= self.floor:
            return
        self.floor = floor
        while self._seqs and self._seqs[0] < floor:
            seq = heapq.heappop(self._seqs)
            del self.results[seq]
            self._sum = (self._sum - self._result_digests.pop(seq)) & _MASK

    def to_list(self) -> list[object]:
        """The snapshot row (format 2): [client_id, floor, [[seq, result], ...], last_index, last_ts_ms]."""
        rows = [[seq, self.results[seq]] for seq in sorted(self.results)]
        return [self.client_id, self.floor, rows, self.last_index, self.last_ts_ms]


class SessionTable:
    """The sessions of one state machine."""

    def __init__(self, capacity: int, ttl_ms: int, max_results: int = DEFAULT_MAX_RESULTS) -> None:
        self._capacity = capacity
        self._ttl_ms = ttl_ms
        self._max_results = max_results
        self._by_client: OrderedDict[str, Session] = OrderedDict()
        self.digest = 0  # sum of session digests mod 2**64

    def __len__(self) -> int:
        return len(self._by_client)

    def __iter__(self) -> Iterator[Session]:
        return iter(self._by_client.values())

    def get(self, client_id: str) -> Session | None:
        """The session of `client_id`, if remembered."""
        return self._by_client.get(client_id)

    def lookup(self, client_id: str, seq: int, min_seq: int) -> Result | None:
        """
        What to answer a session write without applying it, or None to apply it.

        Returns:
            The first result of a write already applied (a retry); or an error result
            for a seq below the session's floor or beyond its window. Neither changes
            anything.
        """
        session = self._by_client.get(client_id)
        if session is None:
            return None
        cached = session.results.get(seq)
        if cached is not None:
            return dict(cached)
        if seq < session.floor:
            return _error(InvalidRequestError(
                f"seq {seq} of client {client_id!r} is below its acknowledged floor"
                f" {session.floor} (a stale retry)"))
        # NB: counting is O(n), so only when the session is full before the floor moves.
        kept = len(session.results)
        if kept >= self._max_results:
            kept = session.kept_from(max(session.floor, min_seq))
        if kept >= self._max_results:
            return _error(InvalidRequestError(
                f"client {client_id!r} has {kept} unacknowledged writes, the most a session"
                f" keeps is {self._max_results}: raise min_seq"))
        return None

    def record(self, client_id: str, seq: int, min_seq: int, result: Result,
               index: int, ts: int) -> None:
        """Remember an applied write's result (its session becomes the most recently used)."""
        session = self._by_client.pop(client_id, None)
        if session is None:
            session = Session(client_id, min_seq, index, ts)
        else:
            self.digest = (self.digest - session.digest()) & _MASK
            session.last_index, session.last_ts_ms = index, ts
            session.raise_floor(min_seq)
        session.add(seq, dict(result))
        self._by_client[client_id] = session
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
            self._by_client[session.client_id] = session
            self.digest = (self.digest + session.digest()) & _MASK


def _error(exc: InvalidRequestError) -> Result:
    return {"error": exc.code, "message": exc.message}


def legacy_sessions_digest(rows: list[object]) -> int:
    """The session digest of kv snapshot format 1: the sum of xxh3_64(msgpack row)."""
    total = 0
    for row in rows:
        total += xxhash.xxh3_64_intdigest(msgpack.packb(row, use_bin_type=True))
    return total & _MASK


def session_from_row(row: object, version: int) -> Session:
    """
    A session from its snapshot row: format 1 `[client_id, seq, result, last_index,
    last_ts_ms]` (the latest result only) or format 2 `[client_id, floor, [[seq, result],
    ...], last_index, last_ts_ms]`.

    Raises:
        ValueError: a malformed row.
    """
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError("session row must be a list of 5")
    client_id, floor, results, last_index, last_ts_ms = row
    if version == 1:
        results = [[floor, results]]
    if not isinstance(client_id, str) or not isinstance(results, list):
        raise ValueError("session client_id must be str and results a list")
    for number in (floor, last_index, last_ts_ms):
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError("session numbers must be integers")
    session = Session(client_id, floor, last_index, last_ts_ms)
    for pair in results:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("session result must be [seq, result]")
        seq, result = pair
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < floor:
            raise ValueError("session result seq must be an integer >= the floor")
        if not isinstance(result, dict):
            raise ValueError("session result must be a map")
        session.add(seq, result)
    return session
