"""
How a shared-memory view follows the writer: catch-up, replay of the change ring,
re-mapping a grown or new generation, and rebuilds (from a generation's directory or a
scan) when the view fell behind the ring or sees a new lineage. The lookups over the
state kept here are concord.shm.view.ShmView, a subclass.

`CatchUp` owns the view's local state (the key indexes per keyspace, the mapping of the
live generation, the status it matches) and its counters. Never writes to shared memory,
never unlinks anything.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from enum import Enum
from typing import Final

from concord.bulk import gc_paused
from concord.errors import CorruptionError
from concord.kv.record import ChangeType, Space
from concord.shm.keyindex import (
    _SPACES,
    _U64,
    INLINE_MAX,
    LOC_SHIFT,
    KeyIndex,
    Locator,
    _xxh,
    load_directory,
    scan_generation,
)
from concord.shm.layout import (
    CHECKSUM_FROM,
    RECORD_HEAD_SIZE,
    RECORD_VIEW,
    RING_BASE_WORD,
    S_ARENA_END,
    S_CLOCK_ORIGIN,
    S_LEADER_TIME,
    S_LINEAGE,
    S_LIVE_GEN,
    S_PREV_HEAD,
    S_RING_HEAD,
    W_RING_CAP,
    SegmentNames,
    open_segment,
    read_gen_directory,
    read_gen_header,
    read_status_words,
)

# NB: the view's logger: these lines read as they did before the split.
logger = logging.getLogger("concord.shm.view")

_DELETES = (int(ChangeType.DELETE), int(ChangeType.EXPIRE))

#: A listener gets (space, key, value locator) after a key was put, (space, key, None)
#: after it was removed.
ChangeListener = Callable[[int, str, "Locator | None"], None]


class _Overtaken(Enum):
    OVERTAKEN = 0


_OVERTAKEN: Final = _Overtaken.OVERTAKEN


class CatchUp:
    """
    A view's local state, kept equal to a status the writer published. Not thread-safe.

    Subclassed by ShmView, which maps the control segment and calls `_catch_up` before
    its lookups whenever the status `seq` changed.
    """

    #: Plain values up to this many bytes are copied into the index's `small` dict as
    #: they are ingested (-1: none; concord.shm.view.NodeView).
    INLINE_MAX: int = INLINE_MAX
    #: Plain keys in an `OffsetTable` (no Python object per key) instead of a dict.
    COMPACT: bool = False

    def __init__(self, names: SegmentNames, ctl: mmap.mmap, w: memoryview) -> None:
        self._names = names
        self._ctl = ctl
        self._w = w
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
        self._spaces: list[KeyIndex] = []
        self._set_spaces([KeyIndex(self._mm if self.COMPACT else None) for _ in range(_SPACES)])
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

    def _set_spaces(self, spaces: list[KeyIndex]) -> None:
        self._spaces = spaces
        self._user = spaces[Space.USER]
        self._user_small = self._user.small

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
        for idx in self._spaces:
            idx.remap(mm)
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
                self._set_spaces(
                    load_directory(
                        self._mm, self._mv, dir_offset, self.INLINE_MAX, self.COMPACT
                    )
                )
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
            self._set_spaces(
                scan_generation(
                    self._mm, self._mv, st[S_ARENA_END], segment, self.INLINE_MAX, self.COMPACT
                )
            )
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
        inline_max = self.INLINE_MAX
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
                    key, loc, exp, flags & 1, mm[vstart:vend] if vlen <= inline_max else None
                )
                for fn in listeners:
                    fn(space, key, loc)
        self.applied_changes += head - seen
        self._seen = head
        return True
