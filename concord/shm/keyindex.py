"""
The key indexes of a shared-memory view: `KeyIndex` (one keyspace: key -> locator of
the value's bytes, expiry times, compressed keys, small values inline, a sorted index
built on first use), the locator encoding, and the two bulk loaders that build a
generation's indexes: from its directory (C-speed bulk loads) or from a scan of its
records. Layouts: docs/formats/shm.md.

Read-only: never writes to shared memory (concord.shm.view maps it and keeps these
indexes current from the change ring).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator, MutableMapping
from functools import partial
from itertools import chain, compress, repeat
from operator import lshift, or_, sub
from typing import Final, cast

import msgpack
import xxhash
from sortedcontainers import SortedList

from concord.errors import CorruptionError
from concord.kv.record import Space
from concord.shm.layout import (
    CHECKSUM_FROM,
    DIR_HEAD,
    GEN_HEADER_SIZE,
    RECORD_HEAD_SIZE,
    RECORD_VIEW,
    STATE_LIVE,
    directory_span,
)
from concord.shm.offsettable import LOC_SHIFT as LOC_SHIFT, OffsetTable

_U64 = struct.Struct("<Q")
_xxh = xxhash.xxh3_64_intdigest
_unpackb = partial(msgpack.unpackb, raw=False, strict_map_key=False)
_SPACES = len(Space)

#: Where a value's bytes lie in the mapping: `start << LOC_SHIFT | stop` (one int instead
#: of a slice and its two ints: a third of the heap, and one object less to miss in the
#: CPU caches per lookup). Valid for the whole lineage.
Locator = int
LOC_STOP: Final = (1 << LOC_SHIFT) - 1
#: Plain values up to this many bytes are also held as bytes in the view's index: a lookup
#: is then one dict probe. Their heap (a bytes object) is about what the locator's slice
#: cost before; bigger values are sliced from the mapping per lookup.
INLINE_MAX: Final = 256


class KeyIndex:
    """
    One keyspace of a view: `fast` holds plain keys, `special` keys with a TTL or a
    compressed value (`exps`, `zipped`); `sorted` is built on first use. Values are the
    locators of the values' bytes in the view's current lineage. `small` holds the bytes
    of the plain values up to INLINE_MAX bytes (those keys are in `fast` too). Given the
    mapping `mm`, `fast` is an `OffsetTable` (no Python object per key) instead of a
    dict; `remap` must then follow the view's re-mappings.
    """

    __slots__ = ("fast", "small", "special", "exps", "zipped", "sorted")

    def __init__(self, mm: mmap.mmap | None = None) -> None:
        self.fast: MutableMapping[str, Locator] = {} if mm is None else OffsetTable(mm)
        self.small: dict[str, bytes] = {}
        self.special: dict[str, Locator] = {}
        self.exps: dict[str, int] = {}
        self.zipped: set[str] = set()
        self.sorted: SortedList | None = None

    def __len__(self) -> int:
        return len(self.fast) + len(self.special)

    def remap(self, mm: mmap.mmap) -> None:
        """The view maps its generation anew (grown in place: same offsets)."""
        if isinstance(self.fast, OffsetTable):
            self.fast.remap(mm)

    def get(self, key: str) -> Locator | None:
        loc = self.fast.get(key)
        return loc if loc is not None else self.special.get(key)

    def keys(self) -> Iterator[str]:
        return chain(self.fast, self.special)

    def items(self) -> Iterator[tuple[str, Locator]]:
        return chain(self.fast.items(), self.special.items())

    def put(
        self, key: str, loc: Locator, expires_at_ms: int, compressed: int, small: bytes | None
    ) -> None:
        """
        Set a key's value locator (last one wins); `small` is the value's bytes if it is
        at most INLINE_MAX bytes long (else None).
        """
        if expires_at_ms or compressed:
            new = self.fast.pop(key, None) is None and key not in self.special
            self.small.pop(key, None)
            self.special[key] = loc
            if expires_at_ms:
                self.exps[key] = expires_at_ms
            else:
                self.exps.pop(key, None)
            if compressed:
                self.zipped.add(key)
            else:
                self.zipped.discard(key)
        else:
            special = self.special
            if special and key in special:
                del special[key]
                self.exps.pop(key, None)
                self.zipped.discard(key)
                new = False
                self.fast[key] = loc
            else:
                fast = self.fast
                if type(fast) is dict:
                    new = key not in fast
                    fast[key] = loc
                else:  # an OffsetTable: one probe run
                    new = cast(OffsetTable, fast).set(key, loc)
            if small is not None:
                self.small[key] = small
            else:
                self.small.pop(key, None)
        if new and self.sorted is not None:
            self.sorted.add(key)

    def remove(self, key: str) -> bool:
        """Forget a key; False if it was absent."""
        self.small.pop(key, None)
        if self.fast.pop(key, None) is None:
            if self.special.pop(key, None) is None:
                return False
            self.exps.pop(key, None)
            self.zipped.discard(key)
        if self.sorted is not None:
            self.sorted.discard(key)
        return True

    def sorted_keys(self) -> SortedList:
        if self.sorted is None:
            self.sorted = SortedList(self.keys())
        return self.sorted


def scan_generation(
    mm: mmap.mmap, mv: memoryview, end: int, segment: str, inline_max: int = INLINE_MAX,
    compact: bool = False,
) -> list[KeyIndex]:
    """
    Every live record of a mapped generation (named `segment`) up to `end` (last one
    wins); values up to `inline_max` bytes are copied into `small` (-1: none); `compact`:
    plain keys in an `OffsetTable`.
    """
    spaces = [KeyIndex(mm if compact else None) for _ in range(_SPACES)]
    unpack = RECORD_VIEW.unpack_from
    pos = GEN_HEADER_SIZE
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
                    f"record checksum mismatch segment={segment} "
                    f"offset={pos}"
                )
            vend = vstart + vlen
            key = mm[vend:kend].decode()
            spaces[space].put(
                key, vstart << LOC_SHIFT | vend, exp, flags & 1,
                mm[vstart:vend] if vlen <= inline_max else None,
            )
        pos = (kend + 7) & ~7
    return spaces


def load_directory(
    mm: mmap.mmap, mv: memoryview, offset: int, inline_max: int = INLINE_MAX,
    compact: bool = False,
) -> list[KeyIndex]:
    """
    A generation's directory as key indexes (bulk loads at C speed; an `OffsetTable`
    if `compact`, about 0.5 µs a key); values up to `inline_max` bytes are copied into
    `small` (-1: none).
    """
    n, blob_len, _ = DIR_HEAD.unpack_from(mm, offset)
    start = offset + DIR_HEAD.size
    starts = mv[start : start + 8 * n].cast("Q").tolist()
    start += 8 * n
    ends = mv[start : start + 8 * n].cast("Q").tolist()
    start += 8 * n
    parts = _unpackb(mm[start : start + blob_len])

    def locs(i: int, j: int) -> list[Locator]:
        return list(map(or_, map(lshift, starts[i:j], repeat(LOC_SHIFT)), ends[i:j]))

    spaces: list[KeyIndex] = []
    i = 0
    for plain, special, ttl, zipped in parts:
        idx = KeyIndex()
        j = i + len(plain)
        s, e = starts[i:j], ends[i:j]
        if compact:
            idx.fast = OffsetTable.from_unique(mm, plain, s)
        else:
            idx.fast = dict(zip(plain, locs(i, j)))
        if inline_max >= 0:
            inline = [n <= inline_max for n in map(sub, e, s)]
            idx.small = dict(
                zip(
                    compress(plain, inline),
                    map(mm.__getitem__, map(slice, compress(s, inline), compress(e, inline))),
                )
            )
        del s, e
        i, j = j, j + len(special)
        idx.special = dict(zip(special, locs(i, j)))
        i = j
        idx.exps = dict(zip(ttl[::2], ttl[1::2]))
        idx.zipped = set(zipped)
        spaces.append(idx)
    return spaces
