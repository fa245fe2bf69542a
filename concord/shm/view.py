"""
A reader's view of the shared-memory store: lock-free lookups for read workers and
same-host clients.

The view keeps process-local structures current from the change ring, per keyspace: a
dict `key -> locator` (where the value's bytes lie in the mapping, one int) for plain
keys, the same for keys with a TTL or a compressed value ("special" keys, with their
expiry times and the set of compressed ones), a dict `key -> bytes` holding the values of
plain keys up to INLINE_MAX bytes (copied once, as the change is ingested), and, built
on first use, a sorted key index (sortedcontainers). A lookup checks one header word (the
status `seq`) and, for a plain key with a small value, is then one dict probe; a larger
value is one more probe and one slice of the mapping. `NodeView` (the node's front door
and read workers) holds neither values nor a Python object per plain key: its plain keys
are in an `OffsetTable` (concord.shm.offsettable), and every lookup slices the mapping.
Only when `seq` changed does the view catch up (concord/shm/catchup.py), replaying ring
slots (each record's checksum is verified as it is ingested). Records are immutable, so a
value can never be torn. A view that fell behind the ring, or that sees a new lineage
(compaction, reset), rebuilds: from the generation's directory when it has one (C-speed
bulk loads), else from a scan; a grown generation is simply re-mapped (same offsets).

Never writes to shared memory, never unlinks anything, never registers a segment with
the resource tracker: a read worker may exit or crash at any time.
"""

from __future__ import annotations

import mmap
import time
import zlib
from collections.abc import Callable, Iterable, Iterator

import msgpack
from sortedcontainers import SortedList

from concord.kv.record import MISSING, KeyRecord, Missing, Space
from concord.raft.state import Role
from concord.shm.catchup import CatchUp, ChangeListener as ChangeListener
from concord.shm.keyindex import (  # the index names re-exported: their old home
    INLINE_MAX as INLINE_MAX,
    LOC_SHIFT as LOC_SHIFT,
    LOC_STOP as LOC_STOP,
    KeyIndex as KeyIndex,
    Locator as Locator,
    _unpackb,
)
from concord.shm.layout import (
    CTL_MAGIC,
    FORMAT_VERSION,
    RECORD_HEAD,
    RECORD_HEAD_SIZE,
    RECORD_FLAGS_FROM_VALUE,
    S_APPLIED,
    S_RING_HEAD,
    S_ROLE,
    W_LEASE_UNTIL_NS,
    W_SEQ,
    W_VERSION,
    SegmentNames,
    ShmStatus,
    open_segment,
    status_from_words,
)
from concord.shm.offsettable import OffsetTable

# NB: keyword arguments cost as much as the decode itself (a kwargs dict per call), so
# the hot paths call unpackb bare (raw=False is the default) and fall back to
# strict_map_key=False only for maps with non-string keys, which raise ValueError.
_unpackb_fast = msgpack.unpackb


def decode_value(data: bytes) -> object:
    """Decode stored msgpack bytes (maps may have non-string keys)."""
    try:
        return _unpackb_fast(data)
    except ValueError:
        return _unpackb(data)


_decompress = zlib.decompress
_LEADER = int(Role.LEADER)
# NB: literal word index in the hot path (a global lookup costs more than the compare).
assert W_SEQ == 2


#: `ShmView.keep_up` catches up once the writer is this fraction of the ring ahead (with
#: the default ring of 2^18 slots: 16,384 changes, about 35 ms of replay)...
KEEP_UP_FRACTION = 16
#: ... looking at most this often (seconds).
KEEP_UP_EVERY_S = 0.01


class ShmView(CatchUp):
    """
    One process's read-only view of a node's store. Not thread-safe (one per thread).

    Use `ShmView.attach(names)`; `close()` when done. Every lookup first catches up with
    the writer if the status changed (concord.shm.catchup), so a value read is never older
    than the status seen by the same call, and a bulk change is seen whole or not at all.
    """

    def __init__(
        self,
        names: SegmentNames,
        ctl: mmap.mmap,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._mono_ns = mono_ns
        w = memoryview(ctl).cast("Q")
        if bytes(ctl[0:8]) != CTL_MAGIC or w[W_VERSION] != FORMAT_VERSION:
            w.release()
            raise ValueError(
                f"segment {names.ctl} is not a concord store version {FORMAT_VERSION}"
            )
        super().__init__(names, ctl, w)
        # The latest cluster time this view answered (now_ms never goes backwards).
        self._last_now = 0
        self._next_keep_up = 0.0
        try:
            self._catch_up()
        except BaseException:
            self._release()
            raise

    @classmethod
    def attach(cls, names: SegmentNames, mono_ns: Callable[[], int] | None = None) -> ShmView:
        """
        Map a store read-only and build the local index (from the directory or a scan).

        `mono_ns` is this host's CLOCK_MONOTONIC (ns), the clock cluster time is
        extrapolated with (`now_ms`); tests inject a fake one (a constant 0: the entries'
        leader time alone).

        Raises:
            FileNotFoundError: the store does not exist.
            ValueError: not a concord store of this version.
            CorruptionError: a record failed its checksum.
        """
        ctl = open_segment(names.ctl)
        try:
            return cls(names, ctl) if mono_ns is None else cls(names, ctl, mono_ns)
        except BaseException:
            ctl.close()
            raise

    @property
    def names(self) -> SegmentNames:
        return self._names

    def close(self) -> None:
        """Unmap the store (never unlinks it)."""
        self._release()
        self._ctl.close()

    def _release(self) -> None:
        self._mv.release()
        self._mm.close()
        self._w.release()

    def __enter__(self) -> ShmView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status -------------------------------------------------------------------

    def sync(self) -> None:
        """Catch up with the writer now (lookups do this themselves)."""
        if self._w[2] != self._seq:
            self._catch_up()

    def keep_up(self) -> bool:
        """
        Catch up if the writer is `KEEP_UP_FRACTION` of the ring ahead; for the loops of
        processes that hold a view but may go a long time without a read (the front
        door, a read worker, while only writes arrive). A view that falls off the ring
        rebuilds from a scan of the whole store at its next lookup (about 2.7 s of CPU at
        1,000,000 keys, on that lookup's request); catching up in slices does the same
        per-change work (about 2 µs a change) spread over the writes. Cheap when there
        is nothing to do: checked at most every `KEEP_UP_EVERY_S`.

        Returns:
            True if it caught up.
        """
        now = time.monotonic()
        if now < self._next_keep_up or self._w[2] == self._seq:
            return False
        self._next_keep_up = now + KEEP_UP_EVERY_S
        if self._read_status()[1][S_RING_HEAD] - self._seen < self._cap // KEEP_UP_FRACTION:
            return False
        self._catch_up()
        return True

    def status(self) -> ShmStatus:
        """The status the view is synced to (after catching up)."""
        if self._w[2] != self._seq:
            self._catch_up()
        return status_from_words(self._seq, self._st)

    def synced_status(self) -> ShmStatus:
        """The status the local state matches now, without catching up."""
        return status_from_words(self._seq, self._st)

    @property
    def published(self) -> bool:
        """
        Whether the synced state is a published one: False until the writer's first
        status (a store is created empty; the raft worker publishes its state, built in
        steps at start-up, before anything else). Not a catch-up.
        """
        return self._seq != 0

    def synced_applied_index(self) -> int:
        """`synced_status().applied_index` without decoding the rest of the status."""
        return self._st[S_APPLIED]

    def current_status(self) -> ShmStatus:
        """The status published now, without catching up (cheap; for waiting loops)."""
        return status_from_words(*self._read_status())

    def applied_index_now(self) -> int:
        """The applied index published now (one consistent status read, no catch-up)."""
        return self._read_status()[1][S_APPLIED]

    def lease_until_ns(self) -> int:
        """The writer's leader read lease end (CLOCK_MONOTONIC ns; 0: no lease)."""
        return int(self._w[W_LEASE_UNTIL_NS])

    def holds_leader_lease(self) -> bool:
        """
        Whether this store's node is the leader and its read lease runs now.

        The one rule for serving a `leader` read from shared memory (read workers and
        same-host clients). Check it AFTER reading: a lease running now covers the state
        the read saw. The raft worker grants the lease only while everything committed is
        applied and published, so such a read is as fresh as the leader's.

        NB: the role word is this node's own role (LEADER means this node leads), so no
        id is compared: the segment names carry only a sanitised form of the id.
        """
        if time.monotonic_ns() >= self._w[W_LEASE_UNTIL_NS]:
            return False
        # NB: a role change is a status publish (seq changes): while seq is the synced
        # one, the synced status holds the role published now, without a status read.
        if self._w[2] == self._seq:
            return self._st[S_ROLE] == _LEADER
        return bool(self._read_status()[1][S_ROLE] == _LEADER)

    @property
    def leader_time_ms(self) -> int:
        """Leader timestamp of the last entry in the synced status."""
        return self._leader_time

    def now_ms(self) -> int:
        """
        Cluster time reads are evaluated at: keys with expires_at_ms <= it are hidden.

        The leader time of the synced status extrapolated with this host's monotonic
        clock from the status's clock origin, the rule of the raft worker's reads
        (Publisher.cluster_now_ms; layout.py, "Cluster time"). Never this host's wall
        clock: a node whose clock is ahead would hide keys early. An idle store still
        expires keys on time, and the answer never decreases within this view (a key
        once hidden stays hidden).
        """
        elapsed = self._mono_ns() - self._clock_origin
        now = self._leader_time + (elapsed // 1_000_000 if elapsed > 0 else 0)
        if now > self._last_now:
            self._last_now = now
        return self._last_now

    # -- lookups (USER keyspace, catching up first) -----------------------------------

    def get_encoded(self, key: str) -> bytes | None:
        """The msgpack bytes of a USER key's value (decompressed), or None if absent."""
        if self._w[2] != self._seq:
            self._catch_up()
        # NB: a subscript is a specialized opcode, .get a method call: 20-40% more lookups
        # per second; a miss (absent, big or special value) pays for the exception.
        try:
            return self._user_small[key]
        except KeyError:
            return self._other_encoded(self._user, key)

    def get_value(self, key: str) -> object:
        """The decoded value of a USER key, or `MISSING`."""
        if self._w[2] != self._seq:
            self._catch_up()
        try:
            raw: bytes | None = self._user_small[key]
        except KeyError:
            raw = self._other_encoded(self._user, key)
            if raw is None:
                return MISSING
        try:
            return _unpackb_fast(raw)
        except ValueError:
            return _unpackb(raw)

    def get_many_encoded(self, keys: Iterable[str]) -> list[bytes | None]:
        """`get_encoded` for many USER keys, all from one synced state."""
        if self._w[2] != self._seq:
            self._catch_up()
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        # Small plain values at C speed (map over dict.get), then the rest one by one.
        out: list[bytes | None] = list(map(self._user_small.get, keys))
        if None in out:
            other = self._other_encoded
            user = self._user
            for i, raw in enumerate(out):
                if raw is None:
                    out[i] = other(user, keys[i])
        return out

    def get_many_values(self, keys: Iterable[str]) -> list[object]:
        """`get_value` for many USER keys (`MISSING` where absent), from one synced state."""
        decode = decode_value
        return [
            MISSING if raw is None else decode(raw) for raw in self.get_many_encoded(keys)
        ]

    # -- lookups in any keyspace ---------------------------------------------------------

    def get_encoded_in(self, space: Space, key: str) -> bytes | None:
        """`get_encoded` in any keyspace."""
        if self._w[2] != self._seq:
            self._catch_up()
        idx = self._spaces[space]
        raw = idx.small.get(key)
        if raw is not None:
            return raw
        return self._other_encoded(idx, key)

    def record(self, key: str, space: Space = Space.USER) -> KeyRecord | None:
        """
        The key's full record as stored (value still compressed if flagged), or None if
        absent or expired at the synced leader time.
        """
        if self._w[2] != self._seq:
            self._catch_up()
        idx = self._spaces[space]
        loc = idx.get(key)
        if loc is None:
            return None
        exp = idx.exps.get(key, 0)
        if exp and exp <= self.now_ms():
            return None
        return self.record_at(loc, key)

    # -- access to the synced state (no catch-up: call sync() once, then these) ---------

    def locator(self, key: str, space: Space = Space.USER) -> Locator | None:
        """Where the key's value bytes lie in the mapping, expired or not."""
        return self._spaces[space].get(key)

    def expires_at_ms(self, key: str, space: Space = Space.USER) -> int:
        """The key's expiry (0: none), expired or not."""
        return self._spaces[space].exps.get(key, 0)

    def encoded_at(self, loc: Locator) -> bytes:
        """The msgpack bytes (decompressed) of the value at a locator."""
        start = loc >> LOC_SHIFT
        data = self._mm[start : loc & LOC_STOP]
        if self._mm[start - RECORD_FLAGS_FROM_VALUE] & 1:
            return _decompress(data)
        return data

    def record_at(self, loc: Locator, key: str) -> KeyRecord:
        """The record whose value is at a locator."""
        start = loc >> LOC_SHIFT
        _, _, _, flags, _, cr, mr, ver, exp, _ = RECORD_HEAD.unpack_from(
            self._mm, start - RECORD_HEAD_SIZE
        )
        return KeyRecord(key, self._mm[start : loc & LOC_STOP], flags, cr, mr, ver, exp)

    def is_live(self, key: str, space: Space = Space.USER) -> bool:
        """Present and not expired at the synced leader time."""
        idx = self._spaces[space]
        if key in idx.fast:
            return True
        if key not in idx.special:
            return False
        exp = idx.exps.get(key, 0)
        return not (exp and exp <= self.now_ms())

    def items(self, space: Space = Space.USER) -> Iterator[tuple[str, Locator]]:
        """(key, locator) of every key of a keyspace, expired ones included, unordered."""
        return self._spaces[space].items()

    def keys(self, space: Space = Space.USER) -> list[str]:
        """All keys of a keyspace, expired ones included, unordered."""
        return list(self._spaces[space].keys())

    def __len__(self) -> int:
        return len(self._user)

    def sorted_keys(self, space: Space = Space.USER) -> SortedList:
        """
        The sorted key index of a keyspace (expired keys included), built on first use and
        then kept current. Never mutate it.
        """
        return self._spaces[space].sorted_keys()

    def iter_live(self, space: Space = Space.USER) -> Iterator[tuple[str, Locator]]:
        """(key, locator) of every unexpired key, in key order."""
        idx = self._spaces[space]
        now = self.now_ms()
        for key in idx.sorted_keys():
            loc = idx.fast.get(key)
            if loc is None:
                loc = idx.special[key]
                exp = idx.exps.get(key, 0)
                if exp and exp <= now:
                    continue
            yield key, loc

    def subscribe(self, on_change: ChangeListener, on_reset: Callable[[], None]) -> None:
        """
        Be told of every key change the view ingests, and of every rebuild (after which
        the listener must rebuild from `items`). Listeners run inside catch-up.
        """
        self._listeners.append(on_change)
        self._reset_listeners.append(on_reset)

    # -- internals ------------------------------------------------------------------

    def _other_encoded(self, idx: KeyIndex, key: str) -> bytes | None:
        """A value not in `small`: a big plain one, a special one, or absent."""
        loc = idx.fast.get(key)
        if loc is not None:
            return self._mm[loc >> LOC_SHIFT : loc & LOC_STOP]
        loc = idx.special.get(key)
        if loc is None:
            return None
        exp = idx.exps.get(key, 0)
        if exp and exp <= self.now_ms():
            return None
        data = self._mm[loc >> LOC_SHIFT : loc & LOC_STOP]
        return _decompress(data) if key in idx.zipped else data


class NodeView(ShmView):
    """
    A view that holds no copies of values and no Python object per plain key: the front
    door's and the read workers' (one of each per node, on every node). Its plain keys
    are in an `OffsetTable` (8-byte slots; keys compared against the records), and every
    lookup slices the value from the mapping: about 0.7 µs more than a client's inline
    probe, against a request that costs tens of µs in those processes, for ~300 B per
    key and process less at 100-byte values. Same-host clients keep `ShmView` (values
    up to INLINE_MAX inline: one probe, their hot path). docs/benchmarks.md "Memory per
    key".
    """

    INLINE_MAX = -1
    COMPACT = True

    def _set_spaces(self, spaces: list[KeyIndex]) -> None:
        super()._set_spaces(spaces)
        assert isinstance(self._user.fast, OffsetTable)
        self._user_table = self._user.fast

    def get_encoded(self, key: str) -> bytes | None:
        if self._w[2] != self._seq:
            self._catch_up()
        raw = self._user_table.value_bytes(key)
        if raw is not None or not self._user.special:
            return raw  # (absent, unless it is a TTL or compressed key)
        return self._other_encoded(self._user, key)

    def get_value(self, key: str) -> object:
        raw = self.get_encoded(key)
        return MISSING if raw is None else decode_value(raw)

    def get_many_encoded(self, keys: Iterable[str]) -> list[bytes | None]:
        if self._w[2] != self._seq:
            self._catch_up()
        other, user = self._other_encoded, self._user
        return [other(user, key) for key in keys]


__all__ = [
    "INLINE_MAX",
    "MISSING",
    "ChangeListener",
    "KeyIndex",
    "Locator",
    "Missing",
    "NodeView",
    "ShmView",
    "decode_value",
]
