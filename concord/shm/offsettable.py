"""
A compact key -> locator table for views that must not hold a Python object per key
(concord.shm.view.NodeView: the front door's and read workers' views).

An open-addressing hash table (linear probing, backward-shift deletion, no tombstones)
of two flat arrays: each key's `hash()` and the offset of its value's bytes in the
mapped generation. The key itself is not held: a probe whose hash matches compares the
key with the record's key bytes in the mapping (a record's value length and key length
sit just before its value: docs/formats/shm.md "Records"). About 16 bytes per slot at a
load of 0.3-0.6, against ~160 B per key for a dict of str -> int. Process-local: the
view keeps it current from the change ring exactly as it keeps a dict, so lookups see the
same state under the same rules; the offsets are valid for the whole lineage (a grown
generation keeps them), and a new lineage builds a new table.

Not thread-safe (one per view).
"""

from __future__ import annotations

import mmap
import struct
from array import array
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Final

from concord.shm.layout import RECORD_HEAD_SIZE

#: Where a value's bytes lie in the mapping: `start << LOC_SHIFT | stop`, a `Locator`
#: (concord.shm.keyindex, which re-exports it).
LOC_SHIFT: Final = 40

# A record's value_len (u32 at head offset 12) and key_len (u16 at head offset 48), read
# from the value's start.
_LENS: Final = struct.Struct("<I32xH")
_LENS_FROM_VALUE: Final = RECORD_HEAD_SIZE - 12
_unpack_lens = _LENS.unpack_from
assert _LENS.size == RECORD_HEAD_SIZE - 12

#: Grow (double) when more than this fraction of the slots is used.
MAX_LOAD_NUM, MAX_LOAD_DEN = 3, 5
_MIN_SLOTS: Final = 8


def _slots_for(n: int) -> int:
    slots = _MIN_SLOTS
    while n * MAX_LOAD_DEN > slots * MAX_LOAD_NUM:
        slots *= 2
    return slots


class OffsetTable(MutableMapping[str, int]):
    """
    key -> locator of its value in `mm` (start << LOC_SHIFT | stop), keys read back from
    the records. `mm` must be re-set when the view maps a grown generation (`remap`).
    """

    __slots__ = ("mm", "_hashes", "_starts", "_mask", "_n")

    def __init__(self, mm: mmap.mmap, slots: int = _MIN_SLOTS) -> None:
        self.mm = mm
        self._hashes = array("q", bytes(8 * slots))
        self._starts = array("Q", bytes(8 * slots))
        self._mask = slots - 1
        self._n = 0

    @classmethod
    def from_unique(cls, mm: mmap.mmap, keys: list[str], starts: Iterable[int]) -> OffsetTable:
        """A table of distinct `keys` whose values start at `starts` (a directory load)."""
        t = cls(mm, _slots_for(len(keys)))
        hashes, table, mask = t._hashes, t._starts, t._mask
        for h, start in zip(map(hash, keys), starts):
            h = h or 1  # 0 marks an empty slot
            i = h & mask
            while hashes[i]:
                i = (i + 1) & mask
            hashes[i] = h
            table[i] = start
        t._n = len(keys)
        return t

    def remap(self, mm: mmap.mmap) -> None:
        """The view mapped the generation again (grown: same offsets)."""
        self.mm = mm

    # -- lookups -----------------------------------------------------------------------

    def _find(self, key: str) -> int:
        """The slot holding `key`, or ~slot of the empty slot where it would go."""
        h = hash(key) or 1
        hashes, mask, mm = self._hashes, self._mask, self.mm
        i = h & mask
        kb: bytes | None = None
        while True:
            x = hashes[i]
            if x == h:
                start = self._starts[i]
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                if kb is None:
                    kb = key.encode()
                if klen == len(kb) and mm[start + vlen : start + vlen + klen] == kb:
                    return i
            elif not x:
                return ~i
            i = (i + 1) & mask

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        # NB: _find inlined (the lookups of the node's reads).
        h = hash(key) or 1
        hashes, mask = self._hashes, self._mask
        i = h & mask
        while True:
            x = hashes[i]
            if x == h:
                mm = self.mm
                start: int = self._starts[i]
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                stop: int = start + vlen
                if mm[stop : stop + klen] == key.encode():
                    return start << LOC_SHIFT | stop
            elif not x:
                return default
            i = (i + 1) & mask

    def value_bytes(self, key: str) -> bytes | None:
        """The bytes of the key's value in the mapping (as stored), or None if absent."""
        h = hash(key) or 1
        hashes, mask = self._hashes, self._mask
        i = h & mask
        while True:
            x = hashes[i]
            if x == h:
                mm = self.mm
                start: int = self._starts[i]
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                stop: int = start + vlen
                if mm[stop : stop + klen] == key.encode():
                    return mm[start:stop]
            elif not x:
                return None
            i = (i + 1) & mask

    def __getitem__(self, key: str) -> int:
        loc = self.get(key)
        if loc is None:
            raise KeyError(key)
        return loc

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) >= 0

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[str]:
        mm, starts = self.mm, self._starts
        for i, h in enumerate(self._hashes):
            if h:
                start = starts[i]
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                yield mm[start + vlen : start + vlen + klen].decode()

    def items(self) -> Iterator[tuple[str, int]]:  # type: ignore[override]
        mm, starts = self.mm, self._starts
        for i, h in enumerate(self._hashes):
            if h:
                start = starts[i]
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                stop = start + vlen
                yield mm[stop : stop + klen].decode(), start << LOC_SHIFT | stop

    # -- changes -----------------------------------------------------------------------

    def __setitem__(self, key: str, loc: int) -> None:
        self.set(key, loc)

    def set(self, key: str, loc: int) -> bool:
        """
        Set the key's value locator (one probe run); True if the key is new. The record
        at `loc` must hold `key` (the caller verified its checksum): later lookups compare
        against it.
        """
        i = self._find(key)
        if i >= 0:
            self._starts[i] = loc >> LOC_SHIFT
            return False
        if (self._n + 1) * MAX_LOAD_DEN > (self._mask + 1) * MAX_LOAD_NUM:
            self._grow()
            i = self._find(key)
        i = ~i
        self._hashes[i] = hash(key) or 1
        self._starts[i] = loc >> LOC_SHIFT
        self._n += 1
        return True

    def __delitem__(self, key: str) -> None:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        self._delete_slot(i)

    def pop(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        i = self._find(key)
        if i < 0:
            return default
        start: int = self._starts[i]
        vlen: int = _unpack_lens(self.mm, start - _LENS_FROM_VALUE)[0]
        loc = start << LOC_SHIFT | (start + vlen)
        self._delete_slot(i)
        return loc

    def _delete_slot(self, i: int) -> None:
        """Empty slot i and shift back the entries of its probe run (no tombstones)."""
        hashes, starts, mask = self._hashes, self._starts, self._mask
        j = i
        while True:
            j = (j + 1) & mask
            h = hashes[j]
            if not h:
                break
            home = h & mask
            # Entry j stays if its home lies cyclically in (i, j]; else it fills the hole.
            stays = (i < home <= j) if i <= j else (home > i or home <= j)
            if not stays:
                hashes[i], starts[i] = h, starts[j]
                i = j
        hashes[i] = 0
        starts[i] = 0
        self._n -= 1

    def _grow(self) -> None:
        old_h, old_s = self._hashes, self._starts
        slots = 2 * (self._mask + 1)
        hashes = array("q", bytes(8 * slots))
        starts = array("Q", bytes(8 * slots))
        mask = slots - 1
        for h, start in zip(old_h, old_s):
            if h:
                i = h & mask
                while hashes[i]:
                    i = (i + 1) & mask
                hashes[i] = h
                starts[i] = start
        self._hashes, self._starts, self._mask = hashes, starts, mask
