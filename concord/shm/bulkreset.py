"""
A whole generation built at once from records: the bulk work of `Publisher.reset`
(after a snapshot install or a writer restart), and the record size limits of the
format that every publish checks first.

`ResetImage.plan` lays the records out (offsets, per-keyspace directories) with C-level
maps over the records' fields; `write` fills a fresh generation's arena in large chunks.
Layouts: docs/formats/shm.md. The writer only: never used by readers.
"""

from __future__ import annotations

import mmap
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, compress, repeat
from operator import add, and_, attrgetter, not_

from concord.kv.record import KeyRecord, Space
from concord.shm.arena import _xxh
from concord.shm.compactor import DirectoryBuilder
from concord.shm.layout import CHECKSUM_FROM, GEN_HEADER_SIZE, RECORD_HEAD_SIZE, STATE_LIVE

LOC_MAX_VALUE = 0xFFFFFFFF  # value_len is a u32

# RECORD_HEAD split at CHECKSUM_FROM, the field getters.
_RECORD_LEAD = struct.Struct("<QB")  # checksum, state
_RECORD_TAIL = struct.Struct("<BBxIQQQQH")  # space .. key_len: what the checksum covers first
assert _RECORD_LEAD.size == CHECKSUM_FROM and _RECORD_TAIL.size == RECORD_HEAD_SIZE - CHECKSUM_FROM
_PADS = [bytes(n) for n in range(8)]
_RESET_CHUNK = 65536  # records per arena write
_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_FLAGS = attrgetter("flags")
_CREATE = attrgetter("create_revision")
_MOD = attrgetter("mod_revision")
_VERSION = attrgetter("version")
_EXPIRES = attrgetter("expires_at_ms")


def check_sizes(records: Iterable[KeyRecord | None]) -> None:
    """
    Raises:
        ValueError: a key over 65535 UTF-8 bytes or a value over 4 GiB (the format's
            u16 and u32 fields).
    """
    for r in records:
        if r is None:
            continue
        # Cheap first: at most 4 bytes per code point.
        if (len(r.key) > 0x3FFF and len(r.key.encode()) > 0xFFFF) or len(r.value) > LOC_MAX_VALUE:
            raise ValueError(
                f"record of key {r.key[:40]!r} too large for the shm format: key "
                f"{len(r.key.encode())} bytes (max 65535), value {len(r.value)} bytes"
            )


def _bulk_directory(
    keys: list[str], starts: list[int], vlens: list[int], expires: list[int], flags: list[int]
) -> DirectoryBuilder:
    """The directory entries of one keyspace at once (what add() builds one by one)."""
    d = DirectoryBuilder()
    if not any(expires) and not any(map(and_, flags, repeat(1))):
        d.plain = keys
        d.starts = array("Q", starts)
        d.ends = array("Q", map(add, starts, vlens))
        return d
    special = [bool(e or f & 1) for e, f in zip(expires, flags)]
    plain = list(map(not_, special))
    d.plain = list(compress(keys, plain))
    d.starts = array("Q", compress(starts, plain))
    d.ends = array("Q", compress(map(add, starts, vlens), plain))
    if any(special):
        for key, start, vlen, exp, flag in compress(zip(keys, starts, vlens, expires, flags), special):
            d.add(key, start, vlen, exp, flag)
    return d


@dataclass(slots=True)
class ResetImage:
    """
    The layout of a new lineage generation holding `recs`: every record's offset, the
    arena end after the last record, the encoded directory, and the key -> offset maps
    the writer keeps (one per space).
    """

    spaces: Sequence[int]
    bounds: list[int]
    recs: list[KeyRecord]
    columns: tuple[list[bytes], list[bytes], list[int], list[int], list[int], list[int]]
    offs: list[int]
    end: int
    offsets: list[dict[str, int]]
    directory: bytes

    @classmethod
    def plan(cls, spaces: Sequence[int], bounds: list[int], recs: list[KeyRecord]) -> ResetImage | None:
        """
        Lay out records grouped by space: recs[bounds[i]:bounds[i + 1]] are in
        spaces[i]. None if a key appears twice in a space.

        Raises:
            ValueError: a record does not fit the format.
        """
        keys = list(map(_KEY, recs))
        encoded = list(map(str.encode, keys))
        values = list(map(_VALUE, recs))
        klens = list(map(len, encoded))
        vlens = list(map(len, values))
        if (klens and max(klens) > 0xFFFF) or (vlens and max(vlens) > LOC_MAX_VALUE):
            check_sizes(recs)  # raises, naming the record
        flags = list(map(_FLAGS, recs))
        expires = list(map(_EXPIRES, recs))
        # record_size(klen, vlen), and each record's offset in the new generation.
        sizes = [(RECORD_HEAD_SIZE + 7 + n) & ~7 for n in map(add, klens, vlens)]
        offs = list(accumulate(sizes, initial=GEN_HEADER_SIZE))
        end = offs.pop()
        starts = list(map(add, offs, repeat(RECORD_HEAD_SIZE)))
        offsets: list[dict[str, int]] = [{} for _ in Space]
        dirs = [DirectoryBuilder() for _ in Space]
        for space, lo, hi in zip(spaces, bounds, bounds[1:]):
            offsets[space] = dict(zip(keys[lo:hi], offs[lo:hi]))
            if len(offsets[space]) != hi - lo:
                return None
            dirs[space] = _bulk_directory(
                keys[lo:hi], starts[lo:hi], vlens[lo:hi], expires[lo:hi], flags[lo:hi])
        columns = (encoded, values, klens, vlens, flags, expires)
        return cls(spaces, bounds, recs, columns, offs, end, offsets, DirectoryBuilder.encode(dirs))

    def write(self, mm: mmap.mmap) -> None:
        """Write every record at its offset into a generation of at least `end` bytes."""
        encoded, values, klens, vlens, flags, expires = self.columns
        spaces, bounds, recs, offs = self.spaces, self.bounds, self.recs, self.offs
        record_spaces = list(chain.from_iterable(
            repeat(space, hi - lo) for space, lo, hi in zip(spaces, bounds, bounds[1:])))
        for lo in range(0, len(recs), _RESET_CHUNK):
            hi = lo + _RESET_CHUNK
            chunk = recs[lo:hi]
            tails = map(
                _RECORD_TAIL.pack, record_spaces[lo:hi], flags[lo:hi], vlens[lo:hi],
                map(_CREATE, chunk), map(_MOD, chunk), map(_VERSION, chunk),
                expires[lo:hi], klens[lo:hi],
            )
            bodies = list(map(b"".join, zip(tails, values[lo:hi], encoded[lo:hi])))
            leads = map(_RECORD_LEAD.pack, map(_xxh, bodies), repeat(STATE_LIVE))
            pads = [_PADS[-(len(b) + CHECKSUM_FROM) & 7] for b in bodies]
            data = b"".join(chain.from_iterable(zip(leads, bodies, pads)))
            mm[offs[lo] : offs[lo] + len(data)] = data
