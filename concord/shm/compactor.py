"""
Incremental compaction of the shared-memory arena: the next lineage generation, built in
bounded steps while the writer keeps publishing to the current one.

`Compactor` belongs to the `Publisher` (the only writer) and runs only between its
publishes, in steps of a time budget, so the raft worker never stalls on a big store.
Nothing it writes is visible to readers until the publisher switches lineage in one
status update (`Publisher._finish_compaction`). Phases:

1. COPY: per keyspace, copy the key -> offset map (that copy becomes the new map) and
   walk it in chunks, copying each key's record into the target (whole records, checksum
   included: a checksum does not cover the record's offset) and appending its directory
   entry. Keys changed since the start ("dirty", noted by every publish) are skipped.
2. DIRECTORY: encode the directory of the copied keys (msgpack in chunks) and write it
   right after them, in pieces.
3. FOLD: copy the current record of each dirty key (or forget a deleted one) after the
   directory; a superseded copy in the target is marked dead at once (the target is
   unpublished, so no reader can be scanning it). Each folded key enters the `delta`:
   keys whose directory entry is stale.
4. FINISH (when few keys are dirty): fold the rest and hand the publisher one ring word
   per delta key: PUT at its copy, or DELETE at its directory copy (readers take the key
   from it). The generation's `dir_head` is the ring head before those slots, so a
   reader loading the directory replays exactly the delta; a reader scanning finds one
   live record per key (every superseded copy is dead), and `prev_head` is the head after
   the slots (no dead marks pending).

If the delta outgrows what readers can replay (half the ring) the publisher starts over.
After the switch, `Releaser` frees what was replaced (the old generation's mapping, the
old key -> offset dicts) in pieces too. Never reads the clock except to keep a step
within its budget; never writes to the control segment or to a published generation.
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterator
from enum import Enum
from itertools import islice, repeat, starmap
from typing import cast

import msgpack

from concord.kv.record import ChangeType, Space
from concord.shm.layout import (
    DIR_HEAD,
    GEN_CAPACITY_AT,
    GEN_HEADER_SIZE,
    PAGE,
    RECORD_HEAD_SIZE,
    STATE_DEAD,
    STATE_OFFSET,
    align8,
    set_gen_directory,
)

#: Keys copied or folded between two budget checks (about 0.1-0.3 ms of work).
CHUNK_KEYS = 256
#: Keys per msgpack call when encoding the directory (a few ms at most).
ENCODE_KEYS = 16384
#: Bytes per memcpy when writing the directory.
WRITE_BYTES = 1 << 20
#: FINISH waits until at most this many keys are dirty (it folds them in one step).
FINISH_DIRTY_MAX = 512

_PUT = int(ChangeType.PUT)
_DELETE = int(ChangeType.DELETE)
_SPACES = len(Space)
_PACKER = msgpack.Packer()
_U64 = struct.Struct("<Q")
#: The record header fields COPY needs: flags, value_len, expires_at_ms, key_len (a
#: narrower unpack than RECORD_VIEW: fewer int objects per key); FOLD needs the lengths.
_COPY_VIEW = struct.Struct("<10xBxI24xQH")
_SIZE_VIEW = struct.Struct("<12xI32xH")
assert _COPY_VIEW.size == _SIZE_VIEW.size == RECORD_HEAD_SIZE


class Phase(Enum):
    COPY = 1
    DIRECTORY = 2
    FOLD = 3
    DONE = 4


def _array_header_len(n: int) -> int:
    """Bytes of a msgpack array header for `n` elements."""
    return 1 if n < 16 else 3 if n < 0x10000 else 5


def _page_round(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


class DirectoryBuilder:
    """The directory entries of one keyspace (layout.py), plain and special keys apart."""

    __slots__ = ("plain", "starts", "ends", "special", "s_starts", "s_ends", "ttl", "zipped")

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.starts = array("Q")
        self.ends = array("Q")
        self.special: list[str] = []
        self.s_starts = array("Q")
        self.s_ends = array("Q")
        self.ttl: list[object] = []
        self.zipped: list[str] = []

    def add(self, key: str, start: int, vlen: int, expires_at_ms: int, flags: int) -> None:
        if expires_at_ms or flags & 1:
            self.special.append(key)
            self.s_starts.append(start)
            self.s_ends.append(start + vlen)
            if expires_at_ms:
                self.ttl += (key, expires_at_ms)
            if flags & 1:
                self.zipped.append(key)
        else:
            self.plain.append(key)
            self.starts.append(start)
            self.ends.append(start + vlen)

    def lists(self) -> list[list[str] | list[object]]:
        """The msgpack part of this keyspace: [plain_keys, special_keys, ttl, zipped]."""
        return [self.plain, self.special, self.ttl, self.zipped]

    @staticmethod
    def encode(spaces: list[DirectoryBuilder]) -> bytes:
        """The directory bytes (padded to 8) for all keyspaces, in Space order, at once."""
        starts = array("Q")
        ends = array("Q")
        for d in spaces:
            starts += d.starts
            starts += d.s_starts
            ends += d.ends
            ends += d.s_ends
        blob: bytes = msgpack.packb([d.lists() for d in spaces])
        out = DIR_HEAD.pack(len(starts), len(blob), 0) + starts.tobytes() + ends.tobytes() + blob
        return out + bytes(align8(len(out)) - len(out))


#: What a Releaser frees: key maps, key lists, mappings.
Garbage = dict[str, int] | list[str] | list[object] | mmap.mmap


class Releaser:
    """
    Frees big things in bounded pieces, so that no single step pays for all of it: a
    dict of a million keys takes tens of ms to deallocate at once, and unmapping a
    generation of hundreds of MB as long. Dicts are emptied with `popitem` and lists
    overwritten with None, in chunks. A mapping drops its page table entries with
    MADV_DONTNEED in chunks, then closes in a short-lived thread: if this process holds
    the last reference, the close frees the segment's pages (about 40 ms for 230 MB
    here), and mmap.close releases the GIL meanwhile. NB: the pages cannot be freed in
    pieces (truncating or punching holes), since a reader may still map the generation
    and be in the middle of a lookup.
    """

    #: Items per chunk (dicts, lists) and bytes per chunk (mappings).
    ITEMS = 8192
    BYTES = 16 << 20

    def __init__(self) -> None:
        self._objects: list[Garbage] = []
        self._at = 0  # progress through the last object (items or bytes)
        self._closers: list[threading.Thread] = []

    @property
    def pending(self) -> bool:
        return bool(self._objects)

    def add(self, obj: Garbage) -> None:
        """Hand over the last reference to `obj` (a mapping: no exported buffers)."""
        self._objects.insert(0, obj)  # freed in order, from the end of the list

    def step(self, deadline: float) -> None:
        """Free until `deadline` (perf_counter seconds; at least one chunk)."""
        self._closers = [t for t in self._closers if t.is_alive()]
        while self._objects:
            self._chunk()
            if time.perf_counter() >= deadline:
                return

    def release_all(self) -> None:
        """Free everything now (closing, or a caller that does not mind the pause)."""
        for obj in self._objects:
            if isinstance(obj, mmap.mmap):
                obj.close()
        self._objects.clear()
        self._at = 0
        for t in self._closers:
            t.join()
        self._closers.clear()

    def _chunk(self) -> None:
        obj = self._objects[-1]
        at = self._at
        if isinstance(obj, dict):
            # popitem takes from the end (no scan past deleted entries), called in C.
            deque(starmap(obj.popitem, repeat((), min(self.ITEMS, len(obj)))), maxlen=0)
            done = not obj
        elif isinstance(obj, list):
            # NB: not `del obj[-n:]`: a shrinking list is reallocated (copied) as it goes.
            n = min(self.ITEMS, len(obj) - at)
            cast(list[object], obj)[at : at + n] = [None] * n
            self._at = at + n
            done = self._at >= len(obj)
        else:
            n = min(self.BYTES, len(obj) - at)
            if n > 0:
                obj.madvise(mmap.MADV_DONTNEED, at, n)
            self._at = at + n
            done = self._at >= len(obj)
            if done:
                closer = threading.Thread(target=obj.close, name="shm-unmap", daemon=True)
                closer.start()
                self._closers.append(closer)
        if done:
            self._objects.pop()
            self._at = 0


class Compactor:
    """
    One compaction in progress (see the module docstring). Created by the publisher,
    which calls `note` for every change it publishes and `step` between publishes.
    """

    def __init__(
        self,
        target: mmap.mmap,
        generation: int,
        max_delta: int,
        releaser: Releaser,
    ) -> None:
        """
        Args:
            target: the new generation, created and mapped read-write, header written.
            generation: its number (it starts a lineage of its own).
            max_delta: most delta keys readers can replay (half the ring).
            releaser: where big garbage goes (freed in later steps).
        """
        self.generation = generation
        self.phase = Phase.COPY
        self._mm = target
        self._max_delta = max_delta
        self._releaser = releaser
        # COPY iterates a copy of one keyspace's key -> offset map at a time, taken when
        # it starts on that keyspace (a step of its own: about 10 ms at 1M keys). Later
        # than the start is fine: a key not dirty is unchanged since the start. The copy
        # becomes the new map: each copied key's value is replaced by its new offset
        # (the dict never grows: a million-key dict resizing costs tens of ms at once),
        # and the keys skipped as dirty are deleted once the iteration is over.
        self._frozen: dict[str, int] | None = None
        self._items: Iterator[tuple[str, int]] = iter(())
        self._skipped: list[str] = []
        self._space = 0
        self._pos = GEN_HEADER_SIZE
        #: Keys changed since the start, not folded since (per space).
        self.dirty: list[set[str]] = [set() for _ in range(_SPACES)]
        #: key -> offset of its one live copy in the target (the new offsets map).
        self.new: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        #: Folded keys -> offset of their directory copy (None: not in the directory).
        self.delta: list[dict[str, int | None]] = [{} for _ in range(_SPACES)]
        #: Folded keys -> the ring word that brings a directory reader up to date.
        self._words: list[dict[str, int]] = [{} for _ in range(_SPACES)]
        self.delta_count = 0
        self._dirs = [DirectoryBuilder() for _ in range(_SPACES)]
        self.live_bytes = 0
        self.copied = 0
        self.dir_offset = 0
        self.dir_bytes = 0
        self._blob: list[bytes] = []
        self._encode_todo: list[tuple[bytes, list[str] | list[object], int]] = []
        self._writes: list[tuple[int, memoryview]] = []
        #: Diagnostics: steps taken and the longest one (seconds of wall time).
        self.steps = 0
        self.max_step_s = 0.0
        self.started = time.perf_counter()

    @property
    def mm(self) -> mmap.mmap:
        return self._mm

    @property
    def end(self) -> int:
        """Bytes used in the target (records end before it)."""
        return self._pos

    def note(self, space: int, key: str) -> None:
        """A publish changed `key` (put, touch, delete or expiry)."""
        self.dirty[space].add(key)

    def dirty_count(self) -> int:
        return sum(len(d) for d in self.dirty)

    # -- steps ------------------------------------------------------------------------

    def step(self, src: memoryview, offsets: list[dict[str, int]], deadline: float) -> bool:
        """
        Work until `deadline` (perf_counter seconds; at least one chunk).

        Args:
            src: the publisher's live generation, whole (same offsets as at the start:
                growth keeps them).
            offsets: the publisher's key -> offset maps now.

        Returns:
            True if ready to finish: the directory is written and at most
            FINISH_DIRTY_MAX keys are dirty.
        """
        started = time.perf_counter()
        while True:
            if self.phase is Phase.COPY:
                self._copy_chunk(src, offsets)
            elif self.phase is Phase.DIRECTORY:
                self._directory_unit()
            else:
                if self.dirty_count() <= FINISH_DIRTY_MAX:
                    break
                self._fold(src, offsets, CHUNK_KEYS)
            if time.perf_counter() >= deadline:
                break
        self.steps += 1
        self.max_step_s = max(self.max_step_s, time.perf_counter() - started)
        return self.ready()

    def ready(self) -> bool:
        """True if `finish` may run: the directory is written and few keys are dirty."""
        return self.phase is Phase.FOLD and self.dirty_count() <= FINISH_DIRTY_MAX

    def finish(self, src: memoryview, offsets: list[dict[str, int]], head: int) -> list[int]:
        """
        Fold every dirty key, record the directory (reflecting ring head `head`) and
        shrink the target to its final size.

        Returns:
            The ring words to publish after `head`: one per delta key.
        """
        assert self.phase is Phase.FOLD
        started = time.perf_counter()
        self._fold(src, offsets, None)
        words: list[int] = []
        for w in self._words:
            words += w.values()
        set_gen_directory(self._mm, self.dir_offset, head)
        used = self._pos - GEN_HEADER_SIZE
        # Leave 1/16 to grow into, not a whole growth step (as a full compaction did).
        self._resize(_page_round(GEN_HEADER_SIZE + max(used + used // 16, PAGE)))
        self.phase = Phase.DONE
        self.steps += 1
        self.max_step_s = max(self.max_step_s, time.perf_counter() - started)
        return words

    def abort(self) -> None:
        """Unmap the target (the publisher unlinks it)."""
        self._mm.close()
        self.phase = Phase.DONE

    # -- phases -----------------------------------------------------------------------

    def _copy_chunk(self, src: memoryview, offsets: list[dict[str, int]]) -> None:
        """COPY: up to CHUNK_KEYS keys of the current keyspace."""
        space = self._space
        if self._frozen is None:
            self._frozen = self.new[space] = offsets[space].copy()
            self._items = iter(self._frozen.items())
            return
        chunk = list(islice(self._items, CHUNK_KEYS))
        if chunk:
            self._copy_keys(src, space, chunk)
        if len(chunk) < CHUNK_KEYS:  # the keyspace is done
            new = self.new[space]
            for key in self._skipped:
                del new[key]
            self._skipped = []
            self._frozen = None
            self._items = iter(())
            self._space += 1
            if self._space == _SPACES:
                self._start_directory()

    def _copy_keys(self, src: memoryview, space: int, chunk: list[tuple[str, int]]) -> None:
        dirty = self.dirty[space]
        new = self.new[space]
        d = self._dirs[space]
        plain, starts, ends = d.plain.append, d.starts.append, d.ends.append
        unpack = _COPY_VIEW.unpack_from
        skipped = self._skipped.append
        pos = self._pos
        runs: list[tuple[int, int, int]] = []
        run_src = run_dst = run_len = 0
        live = 0
        for key, off in chunk:
            if dirty and key in dirty:
                skipped(key)  # changed since the start: FOLD copies its current state
                continue
            flags, vlen, exp, klen = unpack(src, off)
            size = (RECORD_HEAD_SIZE + vlen + klen + 7) & ~7
            new[key] = pos
            start = pos + RECORD_HEAD_SIZE
            # NB: DirectoryBuilder.add inlined: a method call per key costs as much as
            # the rest of this loop at 1M keys.
            if exp or flags & 1:
                d.special.append(key)
                d.s_starts.append(start)
                d.s_ends.append(start + vlen)
                if exp:
                    d.ttl += (key, exp)
                if flags & 1:
                    d.zipped.append(key)
            else:
                plain(key)
                starts(start)
                ends(start + vlen)
            # Adjacent records (keys written in one go) merge into one copy.
            if run_src + run_len == off:
                run_len += size
            else:
                if run_len:
                    runs.append((run_src, run_dst, run_len))
                run_src, run_dst, run_len = off, pos, size
            pos += size
            live += size
        if run_len:
            runs.append((run_src, run_dst, run_len))
        self._reserve(pos)
        mm = self._mm
        for s, t, n in runs:
            mm[t : t + n] = src[s : s + n]
        self._pos = pos
        self.live_bytes += live

    def _start_directory(self) -> None:
        """COPY is done: plan the directory's encoding (msgpack, in chunks)."""
        self.phase = Phase.DIRECTORY
        self.copied = sum(len(n) for n in self.new)
        # [[plain, special, ttl, zipped] per keyspace]: the outer array header, then each
        # keyspace's fixarray(4) header in front of its first list.
        assert _SPACES < 16
        self._blob = [bytes([0x90 | _SPACES])]
        self._encode_todo = [
            (b"\x94" if i == 0 else b"", lst, 0)
            for d in self._dirs
            for i, lst in enumerate(d.lists())
        ]

    def _directory_unit(self) -> None:
        """DIRECTORY: encode one chunk, or write one piece, of the directory."""
        if self._encode_todo:
            prefix, lst, at = self._encode_todo[0]
            if at == 0:
                self._blob.append(prefix + _PACKER.pack_array_header(len(lst)))
            chunk = lst[at : at + ENCODE_KEYS]
            if chunk:
                # The elements of an array are its packed bytes after its header.
                self._blob.append(msgpack.packb(chunk)[_array_header_len(len(chunk)) :])
            if at + ENCODE_KEYS < len(lst):
                self._encode_todo[0] = (prefix, lst, at + ENCODE_KEYS)
                return
            self._encode_todo.pop(0)
            if not self._encode_todo:
                self._plan_writes()
            return
        off, data = self._writes.pop()
        self._mm[off : off + len(data)] = data
        if not self._writes:
            self._blob = []
            for d in self._dirs:
                self._releaser.add(d.plain)
                self._releaser.add(d.special)
                self._releaser.add(d.ttl)
            self._dirs = []
            self.phase = Phase.FOLD

    def _plan_writes(self) -> None:
        """The directory's pieces and where they go, right after the copied records."""
        n = sum(len(d.starts) + len(d.s_starts) for d in self._dirs)
        blob_len = sum(len(b) for b in self._blob)
        self.dir_offset = off = self._pos
        size = align8(DIR_HEAD.size + 16 * n + blob_len)
        self._reserve(off + size)
        pieces: list[bytes | array[int]] = [DIR_HEAD.pack(n, blob_len, 0)]
        for d in self._dirs:
            pieces += (d.starts, d.s_starts)
        for d in self._dirs:
            pieces += (d.ends, d.s_ends)
        pieces += self._blob
        writes: list[tuple[int, memoryview]] = []
        at = off
        for piece in pieces:
            mv = memoryview(piece).cast("B")
            for i in range(0, len(mv), WRITE_BYTES):
                part = mv[i : i + WRITE_BYTES]
                writes.append((at, part))
                at += len(part)
        assert at == off + DIR_HEAD.size + 16 * n + blob_len
        if not writes:
            writes.append((off, memoryview(b"")))
        writes.reverse()  # popped from the end
        self._writes = writes
        self._pos = off + size
        self.dir_bytes = size

    def _fold(self, src: memoryview, offsets: list[dict[str, int]], limit: int | None) -> None:
        """FOLD: bring up to `limit` dirty keys (all if None) in the target up to date."""
        mm = self._mm
        unpack = _SIZE_VIEW.unpack_from
        budget = limit
        for space in range(_SPACES):
            dirty = self.dirty[space]
            if not dirty:
                continue
            cur_map = offsets[space]
            new = self.new[space]
            delta = self.delta[space]
            words = self._words[space]
            while dirty and (budget is None or budget > 0):
                if budget is not None:
                    budget -= 1
                key = dirty.pop()
                prev = new.pop(key, None)
                if key in delta:
                    dir_copy = delta[key]
                else:
                    dir_copy = delta[key] = prev  # its directory copy, if any
                    self.delta_count += 1
                if prev is not None:
                    vlen, klen = unpack(mm, prev)
                    mm[prev + STATE_OFFSET] = STATE_DEAD  # unpublished: no reader sees it
                    self.live_bytes -= (RECORD_HEAD_SIZE + vlen + klen + 7) & ~7
                cur = cur_map.get(key)
                if cur is None:
                    if dir_copy is None:
                        words.pop(key, None)  # never in the directory: nothing to replay
                    else:
                        words[key] = dir_copy << 2 | _DELETE  # readers take the key from it
                    continue
                vlen, klen = unpack(src, cur)
                size = (RECORD_HEAD_SIZE + vlen + klen + 7) & ~7
                pos = self._pos
                words[key] = pos << 2 | _PUT
                self._reserve(pos + size)
                mm = self._mm
                mm[pos : pos + size] = src[cur : cur + size]
                new[key] = pos
                self._pos = pos + size
                self.live_bytes += size

    def over_delta(self) -> bool:
        """True if readers could not replay the delta from the ring: start over."""
        return self.delta_count > self._max_delta

    # -- target -------------------------------------------------------------------------

    def _reserve(self, end: int) -> None:
        """Make the target at least `end` bytes (it is unpublished: resized in place)."""
        if end > len(self._mm):
            self._resize(_page_round(max(end, len(self._mm) * 3 // 2)))

    def _resize(self, capacity: int) -> None:
        if capacity != len(self._mm):
            self._mm.resize(capacity)
            _U64.pack_into(self._mm, GEN_CAPACITY_AT, capacity)


__all__ = ["CHUNK_KEYS", "FINISH_DIRTY_MAX", "Compactor", "DirectoryBuilder", "Phase", "Releaser"]
