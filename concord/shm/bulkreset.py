"""
A whole generation built at once from records: the bulk work of `Publisher.reset`
(after a snapshot install or a writer restart), and the record size limits of the
format that every publish checks first.

`ResetImage` lays the records out (offsets, per-keyspace directories) with C-level maps
over the records' fields, then fills a fresh generation's arena, in bounded steps of
`STEP_RECORDS` records, so that the raft worker can build a million-key image between
the turns of its loop (`Publisher.begin_reset` / `reset_step`).
Layouts: docs/formats/shm.md. The writer only: never used by readers.
"""

from __future__ import annotations

import mmap
import struct
from collections import deque
from collections.abc import Iterable
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
#: Records laid out, or written, per step of a ResetImage (about 10-20 ms of CPU).
STEP_RECORDS = 8192
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


def _extend_directory(d: DirectoryBuilder, keys: list[str], starts: list[int],
                      vlens: list[int], expires: list[int], flags: list[int]) -> None:
    """Add the directory entries of records of one keyspace at once (what add() does one by one)."""
    if not any(expires) and not any(map(and_, flags, repeat(1))):
        d.plain += keys
        d.starts.extend(starts)
        d.ends.extend(map(add, starts, vlens))
        return
    special = [bool(e or f & 1) for e, f in zip(expires, flags)]
    plain = list(map(not_, special))
    d.plain += compress(keys, plain)
    d.starts.extend(compress(starts, plain))
    d.ends.extend(compress(map(add, starts, vlens), plain))
    for key, start, vlen, exp, flag in compress(zip(keys, starts, vlens, expires, flags), special):
        d.add(key, start, vlen, exp, flag)


@dataclass(slots=True)
class _Chunk:
    """The columns of one laid-out chunk of records (all of one keyspace)."""

    space: int
    recs: list[KeyRecord]
    encoded: list[bytes]
    values: list[bytes]
    klens: list[int]
    vlens: list[int]
    flags: list[int]
    expires: list[int]
    offs: list[int]


class ResetImage:
    """
    A new lineage generation holding given records, built in bounded steps of about
    `STEP_RECORDS` records each (`step`): first every record is laid out (its offset, its
    directory entry, the key -> offset maps the writer keeps: `plan`), then, once the
    caller created a generation of `size` bytes, packed and copied into it (`write`).
    Nothing here is visible to readers: the caller publishes the generation when `done`.

    Args:
        spaces: (space, records) pairs; a space may come more than once (its records
            in turn). A key given twice in one space sets `duplicate` (the caller
            builds again with the last record of each key).
    """

    __slots__ = ("_todo", "_planned", "_dirs", "offsets", "end", "directory", "planned",
                 "duplicate", "_written")

    def __init__(self, spaces: Iterable[tuple[int, list[KeyRecord]]]) -> None:
        self._todo: deque[tuple[int, list[KeyRecord]]] = deque(
            (space, recs[lo : lo + STEP_RECORDS])
            for space, recs in spaces for lo in range(0, len(recs), STEP_RECORDS))
        self._planned: deque[_Chunk] = deque()
        self._dirs = [DirectoryBuilder() for _ in Space]
        #: One key -> record offset map per space (the writer's, once published).
        self.offsets: list[dict[str, int]] = [{} for _ in Space]
        #: The arena end after the last record laid out so far.
        self.end = GEN_HEADER_SIZE
        #: The encoded directory, once every record is laid out.
        self.directory = b""
        self.planned = False
        self.duplicate = False
        self._written = False

    @property
    def size(self) -> int:
        """Bytes of arena the generation needs (records and directory), once planned."""
        return self.end - GEN_HEADER_SIZE + len(self.directory)

    @property
    def done(self) -> bool:
        """Every record is written (into the generation `write` was given)."""
        return self._written

    def plan(self) -> None:
        """
        Lay out the next chunk of records; after the last, encode the directory.

        Raises:
            ValueError: a record does not fit the format.
        """
        if not self._todo:
            self.directory = DirectoryBuilder.encode(self._dirs)
            self.planned = True
            return
        space, recs = self._todo.popleft()
        keys = list(map(_KEY, recs))
        encoded = list(map(str.encode, keys))
        values = list(map(_VALUE, recs))
        klens = list(map(len, encoded))
        vlens = list(map(len, values))
        if max(klens) > 0xFFFF or max(vlens) > LOC_MAX_VALUE:
            check_sizes(recs)  # raises, naming the record
        flags = list(map(_FLAGS, recs))
        expires = list(map(_EXPIRES, recs))
        # record_size(klen, vlen), and each record's offset in the new generation.
        sizes = [(RECORD_HEAD_SIZE + 7 + n) & ~7 for n in map(add, klens, vlens)]
        offs = list(accumulate(sizes, initial=self.end))
        self.end = offs.pop()
        starts = list(map(add, offs, repeat(RECORD_HEAD_SIZE)))
        offsets = self.offsets[space]
        before = len(offsets)
        offsets.update(zip(keys, offs))
        if len(offsets) != before + len(recs):
            self.duplicate = True
        _extend_directory(self._dirs[space], keys, starts, vlens, expires, flags)
        self._planned.append(_Chunk(space, recs, encoded, values, klens, vlens, flags, expires, offs))

    def write(self, mm: mmap.mmap) -> None:
        """Write the next chunk of records at their offsets into a generation of `size`."""
        if not self._planned:
            self._written = True
            return
        c = self._planned.popleft()
        tails = map(
            _RECORD_TAIL.pack, repeat(c.space), c.flags, c.vlens,
            map(_CREATE, c.recs), map(_MOD, c.recs), map(_VERSION, c.recs),
            c.expires, c.klens,
        )
        bodies = list(map(b"".join, zip(tails, c.values, c.encoded)))
        leads = map(_RECORD_LEAD.pack, map(_xxh, bodies), repeat(STATE_LIVE))
        pads = [_PADS[-(len(b) + CHECKSUM_FROM) & 7] for b in bodies]
        data = b"".join(chain.from_iterable(zip(leads, bodies, pads)))
        mm[c.offs[0] : c.offs[0] + len(data)] = data

    def step(self, mm: mmap.mmap | None) -> None:
        """One step: `plan` until planned, then `write` into `mm` (the caller's generation)."""
        if not self.planned:
            self.plan()
        else:
            assert mm is not None  # Invariant: the caller creates it once planned
            self.write(mm)
