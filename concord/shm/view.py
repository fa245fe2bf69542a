"""
A reader's view of the shared-memory store: lock-free lookups for read workers and
same-host clients.

The view keeps process-local structures current from the change ring: one dict per
keyspace `key -> locator` (layout.py: where the value is, its length, has-TTL and
compressed bits), a dict of expiry times for keys with a TTL, and, built on first use, a
sorted key index (sortedcontainers). A lookup checks one header word (the status `seq`);
only when it changed does the view catch up, replaying ring slots (each record's checksum
is verified as it is ingested). Records are immutable, so a value is one slice of the
mapping and can never be torn. A view that fell behind the ring, or that sees a new
lineage (compaction, reset), rebuilds from a scan of the live generation; a grown
generation is simply re-mapped (same offsets).

Never writes to shared memory, never unlinks anything, never registers a segment with
the resource tracker: a read worker may exit or crash at any time.
"""

from __future__ import annotations

import logging
import mmap
import struct
import zlib
from functools import partial
from collections.abc import Callable, Iterable, Iterator, KeysView
from enum import Enum
from typing import Final

import msgpack
import xxhash
from sortedcontainers import SortedList

from concord.errors import CorruptionError
from concord.kv.record import ChangeType, KeyRecord, RecordFlags, Space
from concord.shm.layout import (
    CHECKSUM_FROM,
    CTL_MAGIC,
    FORMAT_VERSION,
    GEN_HEADER_SIZE,
    LOC_COMPRESSED,
    LOC_LEN_MASK,
    LOC_SHIFT,
    LOC_TTL,
    RECORD_HEAD,
    RECORD_HEAD_SIZE,
    RECORD_VIEW,
    RING_BASE_WORD,
    S_APPLIED,
    S_ARENA_END,
    S_LEADER_TIME,
    S_LINEAGE,
    S_LIVE_GEN,
    S_PREV_HEAD,
    S_RING_HEAD,
    STATE_LIVE,
    W_RING_CAP,
    W_SEQ,
    W_VERSION,
    SegmentNames,
    ShmStatus,
    DIR_HEAD,
    directory_span,
    open_segment,
    read_gen_directory,
    read_gen_header,
    read_status_words,
    status_from_words,
)

logger = logging.getLogger(__name__)

_U64 = struct.Struct("<Q")
_xxh = xxhash.xxh3_64_intdigest
_unpackb = partial(msgpack.unpackb, raw=False, strict_map_key=False)
_decompress = zlib.decompress
_DELETES = (int(ChangeType.DELETE), int(ChangeType.EXPIRE))
_SPACES = len(Space)
# NB: literal word index in the hot path (a global lookup costs more than the compare).
assert W_SEQ == 2

#: A listener gets (space, key, locator) after a key was put, (space, key, None) after it
#: was removed.
ChangeListener = Callable[[int, str, "int | None"], None]


class Missing(Enum):
    """The type of `MISSING`: absent, distinct from a stored nil."""

    MISSING = 0


MISSING: Final = Missing.MISSING


class ShmView:
    """
    One process's read-only view of a node's store. Not thread-safe (one per thread).

    Use `ShmView.attach(names)`; `close()` when done. Every lookup first catches up with
    the writer if the status changed, so a value read is never older than the status seen
    by the same call, and a bulk change is seen whole or not at all.
    """

    def __init__(self, names: SegmentNames, ctl: mmap.mmap) -> None:
        self._names = names
        self._ctl = ctl
        self._w = memoryview(ctl).cast("Q")
        if bytes(ctl[0:8]) != CTL_MAGIC or self._w[W_VERSION] != FORMAT_VERSION:
            self._w.release()
            raise ValueError(f"segment {names.ctl} is not a concord store version 1")
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
        self._maps: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        self._user = self._maps[Space.USER]
        self._exps: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        self._user_exp = self._exps[Space.USER]
        self._sorted: list[SortedList | None] = [None] * _SPACES
        self._listeners: list[ChangeListener] = []
        self._reset_listeners: list[Callable[[], None]] = []
        #: Counters, for tests and metrics.
        self.rebuilds = 0
        self.remaps = 0
        self.retries = 0
        self.max_retries = 0
        self.overflows = 0
        self.directory_loads = 0
        #: Why retries happened: the writer published twice during one status read; the
        #: generation named by a status was already replaced and unlinked; the lineage
        #: changed while rebuilding.
        self.status_collisions = 0
        self.generation_races = 0
        self.lineage_races = 0
        self._attempt_retries = 0
        self.applied_changes = 0
        try:
            self._catch_up()
        except BaseException:
            self._release()
            raise

    @classmethod
    def attach(cls, names: SegmentNames) -> ShmView:
        """
        Map a store read-only and build the local index from a scan.

        Raises:
            FileNotFoundError: the store does not exist.
            ValueError: not a concord store of this version.
        """
        ctl = open_segment(names.ctl)
        try:
            return cls(names, ctl)
        except BaseException:
            ctl.close()
            raise

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
        while True:
            snap = read_status_words(self._w)
            if snap is not None:
                return status_from_words(*snap)

    def applied_index_now(self) -> int:
        """The applied index published now (one consistent status read, no catch-up)."""
        while True:
            snap = read_status_words(self._w)
            if snap is not None:
                return snap[1][S_APPLIED]

    @property
    def leader_time_ms(self) -> int:
        """Leader time of the synced status: keys with expires_at_ms <= it are hidden."""
        return self._leader_time

    # -- lookups --------------------------------------------------------------------

    def get_encoded(self, key: str) -> bytes | None:
        """The msgpack bytes of a USER key's value (decompressed), or None if absent."""
        if self._w[2] != self._seq:
            self._catch_up()
        loc = self._user.get(key)
        if loc is None:
            return None
        if loc & 3:
            if loc & 2 and self._user_exp[key] <= self._leader_time:
                return None
            if loc & 1:
                return self._decompressed(loc)
        start = loc >> 32
        return self._mm[start : start + ((loc >> 2) & 0x3FFFFFFF)]

    def get_value(self, key: str) -> object:
        """The decoded value of a USER key, or `MISSING`."""
        if self._w[2] != self._seq:
            self._catch_up()
        loc = self._user.get(key)
        if loc is None:
            return MISSING
        if loc & 3:
            if loc & 2 and self._user_exp[key] <= self._leader_time:
                return MISSING
            if loc & 1:
                return _unpackb(self._decompressed(loc))
        start = loc >> 32
        return _unpackb(self._mm[start : start + ((loc >> 2) & 0x3FFFFFFF)])

    def get_many_encoded(self, keys: Iterable[str]) -> list[bytes | None]:
        """`get_encoded` for many USER keys, all from one synced state."""
        if self._w[2] != self._seq:
            self._catch_up()
        get = self._user.get
        mm = self._mm
        out: list[bytes | None] = []
        append = out.append
        for key in keys:
            loc = get(key)
            if loc is None:
                append(None)
            elif loc & 3:
                append(self._slow_encoded(Space.USER, key, loc))
            else:
                start = loc >> 32
                append(mm[start : start + ((loc >> 2) & 0x3FFFFFFF)])
        return out

    def get_many_values(self, keys: Iterable[str]) -> list[object]:
        """`get_value` for many USER keys (`MISSING` where absent), from one synced state."""
        if self._w[2] != self._seq:
            self._catch_up()
        get = self._user.get
        mm = self._mm
        unpackb = _unpackb
        out: list[object] = []
        append = out.append
        for key in keys:
            loc = get(key)
            if loc is None:
                append(MISSING)
            elif loc & 3:
                raw = self._slow_encoded(Space.USER, key, loc)
                append(MISSING if raw is None else unpackb(raw))
            else:
                start = loc >> 32
                append(unpackb(mm[start : start + ((loc >> 2) & 0x3FFFFFFF)]))
        return out

    def get_encoded_in(self, space: Space, key: str) -> bytes | None:
        """`get_encoded` in any keyspace."""
        if self._w[2] != self._seq:
            self._catch_up()
        loc = self._maps[space].get(key)
        if loc is None:
            return None
        return self._slow_encoded(space, key, loc)

    def record(self, key: str, space: Space = Space.USER) -> KeyRecord | None:
        """
        The key's full record as stored (value still compressed if flagged), or None if
        absent or expired at the synced leader time.
        """
        if self._w[2] != self._seq:
            self._catch_up()
        loc = self._maps[space].get(key)
        if loc is None:
            return None
        if loc & LOC_TTL and self._exps[space][key] <= self._leader_time:
            return None
        return self._record_at(loc, key)

    def locator(self, key: str, space: Space = Space.USER) -> int | None:
        """The key's locator, expired or not (no catch-up: for callers that just synced)."""
        return self._maps[space].get(key)

    def expires_at_ms(self, key: str, space: Space = Space.USER) -> int:
        """The key's expiry (0: none), expired or not; no catch-up."""
        return self._exps[space].get(key, 0)

    def encoded_at(self, loc: int) -> bytes:
        """The msgpack bytes (decompressed) at a locator from this synced state."""
        if loc & LOC_COMPRESSED:
            return self._decompressed(loc)
        start = loc >> LOC_SHIFT
        return self._mm[start : start + ((loc >> 2) & LOC_LEN_MASK)]

    def record_at(self, loc: int, key: str) -> KeyRecord:
        """The record at a locator from this synced state."""
        return self._record_at(loc, key)

    def is_live(self, key: str, space: Space = Space.USER) -> bool:
        """Present and not expired at the synced leader time (no catch-up)."""
        loc = self._maps[space].get(key)
        if loc is None:
            return False
        return not (loc & LOC_TTL and self._exps[space][key] <= self._leader_time)

    def key_map(self, space: Space = Space.USER) -> dict[str, int]:
        """
        The live dict `key -> locator` of a keyspace (expired keys included). Read it
        only right after `sync()`, and never mutate it.
        """
        return self._maps[space]

    def keys(self, space: Space = Space.USER) -> KeysView[str]:
        """All keys of a keyspace, expired ones included (after `sync()`)."""
        return self._maps[space].keys()

    def sorted_keys(self, space: Space = Space.USER) -> SortedList:
        """
        The sorted key index of a keyspace (expired keys included), built on first use and
        then kept current. Read it only right after `sync()`, and never mutate it.
        """
        idx = self._sorted[space]
        if idx is None:
            idx = SortedList(self._maps[space])
            self._sorted[space] = idx
        return idx

    def iter_live(self, space: Space = Space.USER) -> Iterator[tuple[str, int]]:
        """(key, locator) of every unexpired key, in key order (after `sync()`)."""
        m = self._maps[space]
        exps = self._exps[space]
        now = self._leader_time
        for key in self.sorted_keys(space):
            loc = m[key]
            if loc & LOC_TTL and exps[key] <= now:
                continue
            yield key, loc

    def subscribe(self, on_change: ChangeListener, on_reset: Callable[[], None]) -> None:
        """
        Be told of every key change the view ingests, and of every rebuild (after which
        the listener must rebuild from `key_map`). Listeners run inside catch-up.
        """
        self._listeners.append(on_change)
        self._reset_listeners.append(on_reset)

    # -- internals ------------------------------------------------------------------

    def _decompressed(self, loc: int) -> bytes:
        start = loc >> LOC_SHIFT
        return _decompress(self._mm[start : start + ((loc >> 2) & LOC_LEN_MASK)])

    def _slow_encoded(self, space: int, key: str, loc: int) -> bytes | None:
        if loc & LOC_TTL and self._exps[space][key] <= self._leader_time:
            return None
        return self.encoded_at(loc)

    def _record_at(self, loc: int, key: str) -> KeyRecord:
        off = (loc >> LOC_SHIFT) - RECORD_HEAD_SIZE
        _, _, _, flags, vlen, cr, mr, ver, exp, _ = RECORD_HEAD.unpack_from(self._mm, off)
        start = off + RECORD_HEAD_SIZE
        return KeyRecord(key, self._mm[start : start + vlen], flags, cr, mr, ver, exp)

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
            return self._rebuild(st)
        if st[S_RING_HEAD] - self._seen > self._cap:
            self.overflows += 1
            return self._rebuild(st)
        if st[S_LIVE_GEN] != self._gen and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return None
        if self._replay(self._seen, st[S_RING_HEAD]):
            return snap
        # The ring overtook us while we replayed: rebuild from a fresh status.
        self.overflows += 1
        self._lineage = -1
        return self._rebuild(self._read_status()[1])

    def _map(self, gen: int) -> bool:
        try:
            mm = open_segment(self._names.gen(gen))
        except FileNotFoundError:
            return False  # replaced and unlinked since the status we read: retry
        if read_gen_header(mm)[0] != gen:
            mm.close()
            raise CorruptionError(f"segment {self._names.gen(gen)} names another generation")
        self._mv.release()
        self._mm.close()
        self._mm, self._mv, self._gen = mm, memoryview(mm), gen
        self.remaps += 1
        return True

    def _rebuild(self, st: list[int]) -> tuple[int, list[int]] | None:
        """Scan the live generation of status `st`, then replay the ring past it."""
        if st[S_LIVE_GEN] != self._gen and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return None
        self.rebuilds += 1
        dir_offset, dir_head = read_gen_directory(self._mm)
        if dir_offset and st[S_RING_HEAD] - dir_head <= self._cap:
            self._load_directory(dir_offset)
            self._lineage = st[S_LINEAGE]
            self._seen = dir_head
            for reset in self._reset_listeners:
                reset()
            self.directory_loads += 1
            snap = self._read_status()
            st2 = snap[1]
            if not self._same_lineage(st2):
                return None
            if self._replay(self._seen, st2[S_RING_HEAD]):
                return snap
            # The writer got more than a ring ahead of the directory: scan instead.
        mm = self._mm
        mv = self._mv
        maps: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        exps: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        unpack = RECORD_VIEW.unpack_from
        pos = GEN_HEADER_SIZE
        end = st[S_ARENA_END]
        dir_start, dir_end = directory_span(mm)
        while pos < end:
            if pos == dir_start:
                pos = dir_end
                continue
            state, space, flags, vlen, _, _, _, exp, klen = unpack(mm, pos)
            vstart = pos + RECORD_HEAD_SIZE
            kend = vstart + vlen + klen
            if state == STATE_LIVE:
                if _xxh(mv[pos + CHECKSUM_FROM : kend]) != _U64.unpack_from(mm, pos)[0]:
                    raise CorruptionError(
                        f"record checksum mismatch segment={self._names.gen(self._gen)} "
                        f"offset={pos}"
                    )
                key = mm[vstart + vlen : kend].decode()
                maps[space][key] = (
                    vstart << 32 | vlen << 2 | (2 if exp else 0) | (flags & 1)
                )
                if exp:
                    exps[space][key] = exp
                else:
                    exps[space].pop(key, None)
            pos = (kend + 7) & ~7
        self._maps, self._exps = maps, exps
        self._user, self._user_exp = maps[Space.USER], exps[Space.USER]
        self._sorted = [None] * _SPACES  # rebuilt on first use, not during the pause
        self._lineage = st[S_LINEAGE]
        self._seen = st[S_PREV_HEAD]
        for reset in self._reset_listeners:
            reset()
        # Marks seen by the scan may come from publishes after `st`; replaying up to a
        # status read after the scan makes the state exact (marks follow publication).
        snap = self._read_status()
        st2 = snap[1]
        if not self._same_lineage(st2):
            return None
        if not self._replay(self._seen, st2[S_RING_HEAD]):
            self._lineage = -1
            return None
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
        if st[S_LIVE_GEN] != self._gen and not self._map(st[S_LIVE_GEN]):
            self.generation_races += 1
            return False
        return True

    def _load_directory(self, offset: int) -> None:
        """Replace the local index with a generation's directory (C-speed bulk loads)."""
        mm, mv = self._mm, self._mv
        n_user, n_system, blob_len = DIR_HEAD.unpack_from(mm, offset)
        start = offset + DIR_HEAD.size
        n = n_user + n_system
        locs = mv[start : start + 8 * n].cast("Q").tolist()
        start += 8 * n
        user_keys, system_keys, user_ttl, system_ttl = _unpackb(mm[start : start + blob_len])
        maps = [dict(zip(user_keys, locs[:n_user])), dict(zip(system_keys, locs[n_user:]))]
        exps = [dict(zip(t[::2], t[1::2])) for t in (user_ttl, system_ttl)]
        self._maps, self._exps = maps, exps
        self._user, self._user_exp = maps[Space.USER], exps[Space.USER]
        self._sorted = [None] * _SPACES

    def _replay(self, seen: int, head: int) -> bool:
        """Apply ring slots seen+1..head; False if a slot was overwritten (fell behind)."""
        if head <= seen:
            self._seen = max(seen, self._seen)
            return True
        if head - seen > self._cap:
            return False
        w = self._w
        mask = self._mask
        mm = self._mm
        mv = self._mv
        unpack = RECORD_VIEW.unpack_from
        maps = self._maps
        exps = self._exps
        sorted_idx = self._sorted
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
            m = maps[space]
            idx = sorted_idx[space]
            if word & 3 in _DELETES:
                if m.pop(key, None) is not None:
                    exps[space].pop(key, None)
                    if idx is not None:
                        idx.discard(key)
                    for fn in listeners:
                        fn(space, key, None)
            else:
                if _xxh(mv[off + CHECKSUM_FROM : kend]) != _U64.unpack_from(mm, off)[0]:
                    raise CorruptionError(
                        f"record checksum mismatch segment={self._names.gen(self._gen)} "
                        f"offset={off} seq={seq}"
                    )
                loc = vstart << 32 | vlen << 2 | (2 if exp else 0) | (flags & 1)
                if idx is not None and key not in m:
                    idx.add(key)
                m[key] = loc
                if exp:
                    exps[space][key] = exp
                else:
                    exps[space].pop(key, None)
                for fn in listeners:
                    fn(space, key, loc)
        self.applied_changes += head - seen
        self._seen = head
        return True


__all__ = ["MISSING", "ChangeListener", "Missing", "ShmView"]
