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
value is one more probe and one slice of the mapping. Only when `seq` changed does the
view catch up, replaying ring slots (each record's checksum is verified as it is
ingested). Records are immutable, so a value can never be torn. A view that fell behind the ring, or that sees a
new lineage (compaction, reset), rebuilds: from the generation's directory when it has
one (C-speed bulk loads), else from a scan; a grown generation is simply re-mapped (same
offsets).

Never writes to shared memory, never unlinks anything, never registers a segment with
the resource tracker: a read worker may exit or crash at any time.
"""

from __future__ import annotations

import logging
import mmap
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from typing import Final

import msgpack
from sortedcontainers import SortedList

from concord.bulk import gc_paused
from concord.errors import CorruptionError
from concord.kv.record import MISSING, ChangeType, KeyRecord, Missing, Space
from concord.raft.state import Role
from concord.shm.keyindex import (  # the index names re-exported: their old home
    _SPACES,
    _U64,
    INLINE_MAX as INLINE_MAX,
    LOC_SHIFT as LOC_SHIFT,
    LOC_STOP as LOC_STOP,
    KeyIndex as KeyIndex,
    Locator as Locator,
    _unpackb,
    _xxh,
    load_directory,
    scan_generation,
)
from concord.shm.layout import (
    CHECKSUM_FROM,
    CTL_MAGIC,
    FORMAT_VERSION,
    RECORD_HEAD,
    RECORD_HEAD_SIZE,
    RECORD_FLAGS_FROM_VALUE,
    RECORD_VIEW,
    RING_BASE_WORD,
    S_APPLIED,
    S_ARENA_END,
    S_CLOCK_ORIGIN,
    S_LEADER_TIME,
    S_LINEAGE,
    S_LIVE_GEN,
    S_PREV_HEAD,
    S_RING_HEAD,
    S_ROLE,
    W_LEASE_UNTIL_NS,
    W_RING_CAP,
    W_SEQ,
    W_VERSION,
    SegmentNames,
    ShmStatus,
    open_segment,
    read_gen_directory,
    read_gen_header,
    read_status_words,
    status_from_words,
)

logger = logging.getLogger(__name__)

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
_DELETES = (int(ChangeType.DELETE), int(ChangeType.EXPIRE))
_LEADER = int(Role.LEADER)
# NB: literal word index in the hot path (a global lookup costs more than the compare).
assert W_SEQ == 2


#: A listener gets (space, key, value locator) after a key was put, (space, key, None)
#: after it was removed.
ChangeListener = Callable[[int, str, "Locator | None"], None]


class _Overtaken(Enum):
    OVERTAKEN = 0


_OVERTAKEN: Final = _Overtaken.OVERTAKEN


class ShmView:
    """
    One process's read-only view of a node's store. Not thread-safe (one per thread).

    Use `ShmView.attach(names)`; `close()` when done. Every lookup first catches up with
    the writer if the status changed, so a value read is never older than the status seen
    by the same call, and a bulk change is seen whole or not at all.
    """

    def __init__(
        self,
        names: SegmentNames,
        ctl: mmap.mmap,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._mono_ns = mono_ns
        self._names = names
        self._ctl = ctl
        self._w = memoryview(ctl).cast("Q")
        if bytes(ctl[0:8]) != CTL_MAGIC or self._w[W_VERSION] != FORMAT_VERSION:
            self._w.release()
            raise ValueError(
                f"segment {names.ctl} is not a concord store version {FORMAT_VERSION}"
            )
        self._cap = int(self._w[W_RING_CAP])
        self._mask = self._cap - 1
        # An empty placeholder until the first generation is mapped, so that the hot
        # path needs no None check.
        self._mm: mmap.mmap = mmap.mmap(-1, mmap.PAGESIZE)
        self._mv: memoryview = memoryview(self._mm)
        self._gen = -1
        self._lineage = -1
        self._seen = 0
        self._seq = -1
        self._st: list[int] = []
        self._leader_time = 0
        self._clock_origin = 0
        # The latest cluster time this view answered (now_ms never goes backwards).
        self._last_now = 0
        self._spaces: list[KeyIndex] = []
        self._set_spaces([KeyIndex() for _ in range(_SPACES)])
        self._listeners: list[ChangeListener] = []
        self._reset_listeners: list[Callable[[], None]] = []
        #: Counters, for tests and metrics.
        self.rebuilds = 0
        self.directory_loads = 0
        self.remaps = 0
        self.overflows = 0
        self.applied_changes = 0
        #: Retries, and why: the writer published twice during one status read; the
        #: generation named by a status was already replaced and unlinked; the lineage
        #: changed while rebuilding.
        self.retries = 0
        self.max_retries = 0
        self.status_collisions = 0
        self.generation_races = 0
        self.lineage_races = 0
        #: Rebuilds that ended at the status they started from because the writer had
        #: moved to another lineage meanwhile (not a retry: that state was published).
        self.settled_behind = 0
        self._attempt_retries = 0
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

    def status(self) -> ShmStatus:
        """The status the view is synced to (after catching up)."""
        if self._w[2] != self._seq:
            self._catch_up()
        return status_from_words(self._seq, self._st)

    def synced_status(self) -> ShmStatus:
        """The status the local state matches now, without catching up."""
        return status_from_words(self._seq, self._st)

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

    def _set_spaces(self, spaces: list[KeyIndex]) -> None:
        self._spaces = spaces
        self._user = spaces[Space.USER]
        self._user_small = self._user.small

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

    def _read_status(self) -> tuple[int, list[int]]:
        """A consistent status snapshot; each collision with the writer is a retry."""
        while True:
            snap = read_status_words(self._w)
            if snap is not None:
                return snap
            self.status_collisions += 1
            self._attempt_retries += 1

    def _catch_up(self) -> None:
        # A retry is a status read that collided with the writer publishing twice, or an
        # attempt the writer invalidated (generation unlinked, lineage changed during a
        # rebuild). Falling behind the ring is not a retry: it rebuilds at once.
        self._attempt_retries = 0
        while True:
            reached = self._advance(self._read_status())
            if reached is not None:
                self._seq, self._st = reached
                self._leader_time = self._st[S_LEADER_TIME]
                self._clock_origin = self._st[S_CLOCK_ORIGIN]
                break
            self._attempt_retries += 1
        retries = self._attempt_retries
        if retries:
            self.retries += retries
            self.max_retries = max(self.max_retries, retries)

    def _advance(self, snap: tuple[int, list[int]]) -> tuple[int, list[int]] | None:
        """
        Bring local state to status `snap` (or a later one, after a rebuild).

        Returns:
            The (seq, status) the state now matches exactly, or None: retry with a fresh
            status.
        """
        st = snap[1]
        if st[S_LINEAGE] != self._lineage:
            return self._rebuild(snap)
        if st[S_RING_HEAD] - self._seen > self._cap:
            self.overflows += 1
            return self._rebuild(snap)
        if self._must_map(st) and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return None
        if self._replay(self._seen, st[S_RING_HEAD]):
            return snap
        # The ring overtook us while we replayed: rebuild from a fresh status (a slow
        # reader, not a retry).
        self.overflows += 1
        self._lineage = -1
        return self._rebuild(self._read_status())

    def _must_map(self, st: list[int]) -> bool:
        """Whether status `st` needs another mapping: a new generation, or the live one
        grown in place past the end of ours."""
        return st[S_LIVE_GEN] != self._gen or st[S_ARENA_END] > len(self._mm)

    def _map(self, gen: int) -> bool:
        try:
            mm = open_segment(self._names.gen(gen))
        except FileNotFoundError:
            return False  # replaced and unlinked since the status we read: retry
        if read_gen_header(mm)[0] != gen:
            mm.close()
            raise CorruptionError(f"segment {self._names.gen(gen)} names another generation")
        # NB: locators stay valid across a growth (same offsets); only the mapping changes.
        # A generation grown in place is mapped again whole (the same pages, and more).
        self._mv.release()
        self._mm.close()
        self._mm, self._mv, self._gen = mm, memoryview(mm), gen
        self.remaps += 1
        return True

    def _rebuild(self, snap: tuple[int, list[int]]) -> tuple[int, list[int]] | None:
        """
        Rebuild the local index for status `snap` (see `_rebuild_once`). The writer
        getting a whole ring ahead during a rebuild is not a retry (the reader was slow):
        rebuild again at once from a fresh status.
        """
        while True:
            result = self._rebuild_once(snap)
            if result is not _OVERTAKEN:
                return result
            self.overflows += 1
            snap = self._read_status()

    def _rebuild_once(
        self, start: tuple[int, list[int]]
    ) -> tuple[int, list[int]] | None | _Overtaken:
        """Load the directory or scan the live generation of `start`, then replay the ring."""
        st = start[1]
        if self._must_map(st) and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return None
        self.rebuilds += 1
        dir_offset, dir_head = read_gen_directory(self._mm)
        if dir_offset and st[S_RING_HEAD] - dir_head <= self._cap:
            self.directory_loads += 1
            with gc_paused():
                self._set_spaces(load_directory(self._mm, self._mv, dir_offset))
            self._lineage = st[S_LINEAGE]
            self._seen = dir_head
            for reset in self._reset_listeners:
                reset()
            snap = self._read_status()
            if snap[1][S_LINEAGE] != st[S_LINEAGE] or (
                self._must_map(snap[1]) and not self._map(snap[1][S_LIVE_GEN])
            ):
                # The writer moved on while we loaded (compacted again, or grew past
                # the mapped generation and unlinked the next): settle for the state
                # of `start` itself. The directory and the mapped generation hold it
                # (ring slots up to its head name records below its arena end), it was
                # published during this call, and the next lookup catches up from it.
                self.settled_behind += 1
                snap = start
            if self._replay(self._seen, snap[1][S_RING_HEAD]):
                return snap
            # The writer got more than a ring ahead of the directory: scan instead.
        with gc_paused():
            segment = self._names.gen(self._gen)
            self._set_spaces(scan_generation(self._mm, self._mv, st[S_ARENA_END], segment))
        self._lineage = st[S_LINEAGE]
        self._seen = st[S_PREV_HEAD]
        for reset in self._reset_listeners:
            reset()
        # Marks seen by the scan may come from publishes after `st`; replaying up to a
        # status read after the scan makes the state exact (marks follow publication).
        snap = self._read_status()
        if not self._same_lineage(snap[1]):
            return None
        if not self._replay(self._seen, snap[1][S_RING_HEAD]):
            self._lineage = -1
            return _OVERTAKEN
        logger.debug("shm view rebuilt gen=%d keys=%d", self._gen, len(self._user))
        return snap

    def _same_lineage(self, st: list[int]) -> bool:
        """
        After a rebuild: can the state be carried to status `st` by replay? If the
        lineage changed, no (rebuild again). If only the generation changed and it is
        already unlinked, not now, but the state stays valid: the retry replays from
        `_seen` instead of rebuilding.
        """
        if st[S_LINEAGE] != self._lineage:
            self.lineage_races += 1
            self._lineage = -1
            return False
        if self._must_map(st) and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return False
        return True

    def _replay(self, seen: int, head: int) -> bool:
        """Apply ring slots seen+1..head; False if a slot was overwritten (fell behind)."""
        if head <= seen:
            self._seen = max(seen, self._seen)
            return True
        if head - seen > self._cap:
            return False
        w = self._w
        mask = self._mask
        mm, mv = self._mm, self._mv
        unpack = RECORD_VIEW.unpack_from
        spaces = self._spaces
        listeners = self._listeners
        for seq in range(seen + 1, head + 1):
            i = RING_BASE_WORD + 2 * (seq & mask)
            if w[i] != seq:
                return False
            word = w[i + 1]
            if w[i] != seq:
                return False
            off = word >> 2
            _, space, flags, vlen, _, _, _, exp, klen = unpack(mm, off)
            vstart = off + RECORD_HEAD_SIZE
            kend = vstart + vlen + klen
            key = mm[vstart + vlen : kend].decode()
            if word & 3 in _DELETES:
                if spaces[space].remove(key):
                    for fn in listeners:
                        fn(space, key, None)
            else:
                if _xxh(mv[off + CHECKSUM_FROM : kend]) != _U64.unpack_from(mm, off)[0]:
                    raise CorruptionError(
                        f"record checksum mismatch segment={self._names.gen(self._gen)} "
                        f"offset={off} seq={seq}"
                    )
                vend = vstart + vlen
                loc = vstart << LOC_SHIFT | vend
                spaces[space].put(
                    key, loc, exp, flags & 1, mm[vstart:vend] if vlen <= INLINE_MAX else None
                )
                for fn in listeners:
                    fn(space, key, loc)
        self.applied_changes += head - seen
        self._seen = head
        return True


__all__ = [
    "INLINE_MAX",
    "MISSING",
    "ChangeListener",
    "KeyIndex",
    "Locator",
    "Missing",
    "ShmView",
    "decode_value",
]
