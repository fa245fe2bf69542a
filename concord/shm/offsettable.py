"""
A compact key -> locator table for views that must not hold a Python object per key
(concord.shm.view.NodeView: the front door's and read workers' views).

An open-addressing hash table (linear probing, backward-shift deletion, no tombstones)
of one flat array of 8-byte slots: `fingerprint << 40 | value_start`, where the
fingerprint is the low FP_BITS bits of the key's `hash()` and value_start the offset of
its value's bytes in the mapped generation (never 0: a generation starts with its
header, so 0 marks an empty slot). The key itself is not held: a probe whose fingerprint
matches compares the key with the record's key bytes in the mapping (a record's value
length and key length sit just before its value: docs/formats/shm.md "Records"). A key's
home slot is its hash's low bits, so while the table has at most 2^FP_BITS slots the
fingerprint alone places an entry when the table grows or shifts entries back; a larger
table reads the key back from the record and hashes it.

About 8 bytes per slot (13-27 per key at a load of 0.3-0.6), against ~160 B per key for
a dict of str -> int. Process-local: the view keeps it current from the change ring
exactly as it kept a dict, so lookups see the same state under the same rules; the
offsets are valid for the whole lineage (a grown generation keeps them), and a new
lineage builds a new table.

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
#: (concord.shm.keyindex, which re-exports it). A slot keeps `start` in the same bits.
LOC_SHIFT: Final = 40
_START: Final = (1 << LOC_SHIFT) - 1

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

    #: Bits of the key's hash kept in its slot (64 - LOC_SHIFT at most).
    FP_BITS: int = 24

    __slots__ = ("mm", "_slots", "_mask", "_fp", "_n")

    def __init__(self, mm: mmap.mmap, slots: int = _MIN_SLOTS) -> None:
        self.mm = mm
        self._slots = array("Q", bytes(8 * slots))
        self._mask = slots - 1
        self._fp = (1 << self.FP_BITS) - 1
        self._n = 0

    @classmethod
    def from_unique(cls, mm: mmap.mmap, keys: list[str], starts: Iterable[int]) -> OffsetTable:
        """A table of distinct `keys` whose values start at `starts` (a directory load)."""
        t = cls(mm, _slots_for(len(keys)))
        table, mask, fp = t._slots, t._mask, t._fp
        for h, start in zip(map(hash, keys), starts):
            i = h & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = (h & fp) << LOC_SHIFT | start
        t._n = len(keys)
        return t

    def remap(self, mm: mmap.mmap) -> None:
        """The view mapped the generation again (grown: same offsets)."""
        self.mm = mm

    # -- lookups -----------------------------------------------------------------------

    def _find(self, key: str) -> int:
        """The slot holding `key`, or ~slot of the empty slot where it would go."""
        h = hash(key)
        fp = h & self._fp
        table, mask = self._slots, self._mask
        i = h & mask
        while True:
            x = table[i]
            if not x:
                return ~i
            if x >> LOC_SHIFT == fp:
                mm = self.mm
                start = x & _START
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                if mm[start + vlen : start + vlen + klen] == key.encode():
                    return i
            i = (i + 1) & mask

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        # NB: _find inlined (the lookups of the node's reads).
        h = hash(key)
        fp = h & self._fp
        table, mask = self._slots, self._mask
        i = h & mask
        while True:
            x = table[i]
            if not x:
                return default
            if x >> LOC_SHIFT == fp:
                mm = self.mm
                start: int = x & _START
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                stop: int = start + vlen
                if mm[stop : stop + klen] == key.encode():
                    return start << LOC_SHIFT | stop
            i = (i + 1) & mask

    def value_bytes(self, key: str) -> bytes | None:
        """The bytes of the key's value in the mapping (as stored), or None if absent."""
        # NB: _find inlined, as in get (the door's plain gets).
        h = hash(key)
        fp = h & self._fp
        table, mask = self._slots, self._mask
        i = h & mask
        while True:
            x = table[i]
            if not x:
                return None
            if x >> LOC_SHIFT == fp:
                mm = self.mm
                start: int = x & _START
                vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
                stop: int = start + vlen
                if mm[stop : stop + klen] == key.encode():
                    return mm[start:stop]
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

    def _key_at(self, start: int) -> tuple[str, int]:
        """The key of the record whose value starts at `start`, and the value's end."""
        mm = self.mm
        vlen, klen = _unpack_lens(mm, start - _LENS_FROM_VALUE)
        stop: int = start + vlen
        return mm[stop : stop + klen].decode(), stop

    def __iter__(self) -> Iterator[str]:
        key_at = self._key_at
        for x in self._slots:
            if x:
                yield key_at(x & _START)[0]

    def items(self) -> Iterator[tuple[str, int]]:  # type: ignore[override]
        key_at = self._key_at
        for x in self._slots:
            if x:
                start = x & _START
                key, stop = key_at(start)
                yield key, start << LOC_SHIFT | stop

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
        word = (hash(key) & self._fp) << LOC_SHIFT | loc >> LOC_SHIFT
        if i >= 0:
            self._slots[i] = word
            return False
        if (self._n + 1) * MAX_LOAD_DEN > (self._mask + 1) * MAX_LOAD_NUM:
            self._grow()
            i = self._find(key)
        self._slots[~i] = word
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
        start: int = self._slots[i] & _START
        loc = start << LOC_SHIFT | self._key_at(start)[1]
        self._delete_slot(i)
        return loc

    def _home(self, word: int, mask: int) -> int:
        """The home slot of an entry in a table of mask + 1 slots."""
        if mask <= self._fp:
            return (word >> LOC_SHIFT) & mask
        return hash(self._key_at(word & _START)[0]) & mask

    def _delete_slot(self, i: int) -> None:
        """Empty slot i and shift back the entries of its probe run (no tombstones)."""
        table, mask, home_of = self._slots, self._mask, self._home
        j = i
        while True:
            j = (j + 1) & mask
            x = table[j]
            if not x:
                break
            home = home_of(x, mask)
            # Entry j stays if its home lies cyclically in (i, j]; else it fills the hole.
            stays = (i < home <= j) if i <= j else (home > i or home <= j)
            if not stays:
                table[i] = x
                i = j
        table[i] = 0
        self._n -= 1

    def _grow(self) -> None:
        slots = 2 * (self._mask + 1)
        table = array("Q", bytes(8 * slots))
        mask = slots - 1
        home_of = self._home
        for x in self._slots:
            if x:
                i = home_of(x, mask)
                while table[i]:
                    i = (i + 1) & mask
                table[i] = x
        self._slots, self._mask = table, mask
