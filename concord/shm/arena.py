"""
The writer's arena primitives under `Publisher`: appending a record to the live
generation, writing ring slots, marking superseded records dead, growing the segment in
place or starting a new lineage, unlinking retired generations, and recovering the
key -> offset map after a restart. Layouts: docs/formats/shm.md.

`Arena` is a base class of concord.shm.publisher.Publisher, which owns and initialises
the attributes declared here. The only writer of a store: never used by readers.
"""

from __future__ import annotations

import logging
import mmap
import struct
from array import array

import xxhash

from concord.kv.record import ChangeType, KeyRecord
from concord.shm.layout import (
    CHECKSUM_FROM,
    GEN_CAPACITY_AT,
    GEN_HEADER_SIZE,
    PAGE,
    RECORD_HEAD,
    RECORD_HEAD_SIZE,
    RECORD_VIEW,
    RING_BASE_WORD,
    S_PREV_HEAD,
    STATE_DEAD,
    STATE_LIVE,
    STATE_OFFSET,
    W_MAX_GEN,
    SegmentNames,
    create_segment,
    directory_span,
    record_size,
    unlink_segment,
    write_gen_header,
)

# NB: the publisher's logger: these lines read as they did before the split.
logger = logging.getLogger("concord.shm.publisher")

_U64 = struct.Struct("<Q")
_xxh = xxhash.xxh3_64_intdigest
_RING_BASE_WORD = RING_BASE_WORD
#: Batches of more changes than this write their ring slots in bulk.
_BULK_SLOTS = 64


class Arena:
    """The live generation and the ring, as the writer sees them (set by Publisher)."""

    _names: SegmentNames
    _words: memoryview  # the control segment as uint64 words
    _growth: float
    _ring_cap: int
    _ring_mask: int
    _status: list[int]  # the writer's copy of the published status slot
    _head: int
    _gen: int
    _lineage: int
    _mm: mmap.mmap
    _mv: memoryview
    _cap: int
    _end: int
    _offsets: list[dict[str, int]]  # (space, key) -> offset of the live record
    _live_bytes: int
    _dir_bytes: int
    _retired: list[tuple[str, mmap.mmap, memoryview]]

    def _append(self, space: int, rec: KeyRecord) -> int:
        kb = rec.key.encode()
        value = rec.value
        vlen = len(value)
        klen = len(kb)
        size = record_size(klen, vlen)
        if self._end + size > self._cap:
            self._grow(self._end - GEN_HEADER_SIZE + size)
        off = self._end
        mm = self._mm
        RECORD_HEAD.pack_into(
            mm, off, 0, STATE_LIVE, space, rec.flags, vlen, rec.create_revision,
            rec.mod_revision, rec.version, rec.expires_at_ms, klen,
        )
        vstart = off + RECORD_HEAD_SIZE
        mm[vstart : vstart + vlen] = value
        mm[vstart + vlen : vstart + vlen + klen] = kb
        _U64.pack_into(mm, off, _xxh(self._mv[off + CHECKSUM_FROM : vstart + vlen + klen]))
        self._end = off + size
        self._live_bytes += size
        return off

    def _write_slots(self, slots: list[int]) -> None:
        if len(slots) > _BULK_SLOTS:
            self._write_slots_bulk(slots)
            return
        w = self._words
        mask = self._ring_mask
        seq = self._head
        for word in slots:
            seq += 1
            i = _RING_BASE_WORD + 2 * (seq & mask)
            w[i] = 0  # invalidate: a reader of the old occupant sees its seq change
            w[i + 1] = word
            w[i] = seq
        self._head = seq

    def _write_slots_bulk(self, slots: list[int]) -> None:
        """
        `_write_slots` for many slots, three strided copies per contiguous run of slots:
        every seq = 0, then every word, then every seq. NB: the same store order as one
        slot at a time (a slot's word is never written before its seq is 0, nor its seq
        before its word), at C speed.
        """
        w = self._words
        cap = self._ring_cap
        seq = self._head
        done = 0
        while done < len(slots):
            first = seq + 1
            slot = first & self._ring_mask
            n = min(len(slots) - done, cap - slot)  # up to the ring's end
            i = _RING_BASE_WORD + 2 * slot
            w[i : i + 2 * n : 2] = array("Q", bytes(8 * n))
            w[i + 1 : i + 2 * n : 2] = array("Q", slots[done : done + n])
            w[i : i + 2 * n : 2] = array("Q", range(first, first + n))
            seq += n
            done += n
        self._head = seq

    def _mark_dead(self, offsets: list[int]) -> None:
        # Invariant: only records whose superseding change is already published.
        mm = self._mm
        for off in offsets:
            _, _, _, vlen, _, _, _, _, klen = RECORD_VIEW.unpack_from(mm, off)
            mm[off + STATE_OFFSET] = STATE_DEAD
            self._live_bytes -= record_size(klen, vlen)

    def _size_at(self, off: int) -> int:
        _, _, _, vlen, _, _, _, _, klen = RECORD_VIEW.unpack_from(self._mm, off)
        return record_size(klen, vlen)

    def _grow(self, need_bytes: int) -> None:
        """
        Grow the live generation's segment in place (ftruncate and mremap: no copy;
        tmpfs allocates pages only as they are written). Offsets, lineage and generation
        stay; readers map the larger segment when a status's arena_end passes the end of
        their mapping (records before it are the same pages).
        """
        cap = max(int(self._cap * self._growth), GEN_HEADER_SIZE + int(need_bytes * 1.25))
        cap = (cap + PAGE - 1) // PAGE * PAGE
        self._mv.release()  # NB: mmap.resize refuses while a buffer is exported
        self._mm.resize(cap)
        self._mv = memoryview(self._mm)
        _U64.pack_into(self._mm, GEN_CAPACITY_AT, cap)
        self._cap = cap
        logger.info("shm generation grown in place gen=%d capacity=%d", self._gen, cap)

    def _new_lineage(self, need_bytes: int) -> None:
        """Create generation max_gen+1, empty, starting a lineage of its own."""
        self._switch_lineage(*self._create_lineage(need_bytes))

    def _create_lineage(self, need_bytes: int) -> tuple[int, mmap.mmap]:
        """
        Create generation max_gen+1, empty, starting a lineage of its own, for at least
        `need_bytes` of records: not yet the writer's (`_switch_lineage`) nor published.
        """
        w = self._words
        # Compaction and reset know the size exactly: leave 1/16 to grow into, not a
        # whole growth step (shm bytes per key matter more than one early growth).
        cap = GEN_HEADER_SIZE + max(need_bytes + need_bytes // 16, PAGE)
        cap = (cap + PAGE - 1) // PAGE * PAGE
        gen = int(w[W_MAX_GEN]) + 1
        w[W_MAX_GEN] = gen  # before creating it, so unlink_store always finds it
        mm = create_segment(self._names.gen(gen), cap)
        write_gen_header(mm, gen, gen, cap)
        logger.info("shm new generation gen=%d lineage=%d capacity=%d", gen, gen, cap)
        return gen, mm

    def _switch_lineage(self, gen: int, mm: mmap.mmap, end: int = GEN_HEADER_SIZE) -> None:
        """Make generation `gen` (from `_create_lineage`, records up to `end`) the writer's."""
        self._retired.append((self._names.gen(self._gen), self._mm, self._mv))
        self._mm, self._mv = mm, memoryview(mm)
        self._gen, self._cap, self._end = gen, len(mm), end
        self._lineage = gen

    def _unlink_retired(self) -> None:
        # Only called after the header names the new generation: new readers open that.
        for name, mm, mv in self._retired:
            mv.release()
            mm.close()
            unlink_segment(name)
        self._retired.clear()

    def _recover(self) -> None:
        """Rebuild the key -> offset map from the live generation; finish dead marks."""
        mm = self._mm
        pos = GEN_HEADER_SIZE
        end = self._end
        dir_start, dir_end = directory_span(mm)
        self._dir_bytes = dir_end - dir_start
        while pos < end:
            if pos == dir_start:
                pos = dir_end
                continue
            state, space, _, vlen, _, _, _, _, klen = RECORD_VIEW.unpack_from(mm, pos)
            size = record_size(klen, vlen)
            if state == STATE_LIVE:
                kstart = pos + RECORD_HEAD_SIZE + vlen
                key = bytes(mm[kstart : kstart + klen]).decode()
                d = self._offsets[space]
                old = d.get(key)
                if old is not None:  # superseded; its mark was pending
                    self._mark_dead([old])
                d[key] = pos
                self._live_bytes += size
            pos = pos + size
        # Deletions of the last publish whose marks may not have happened.
        w = self._words
        mask = self._ring_mask
        for seq in range(self._status[S_PREV_HEAD] + 1, self._head + 1):
            i = _RING_BASE_WORD + 2 * (seq & mask)
            if w[i] != seq:
                continue
            word = int(w[i + 1])
            if word & 3 in (ChangeType.DELETE, ChangeType.EXPIRE):
                off = word >> 2
                state, space, _, vlen, _, _, _, _, klen = RECORD_VIEW.unpack_from(mm, off)
                if state == STATE_LIVE:
                    kstart = off + RECORD_HEAD_SIZE + vlen
                    key = bytes(mm[kstart : kstart + klen]).decode()
                    if self._offsets[space].get(key) == off:
                        del self._offsets[space][key]
                    self._mark_dead([off])
