"""
The change stream's encoding and retained history (docs/formats/events.md): one change
map per changed user key (`encode_change`, with pre-packed keys for the publish hot
path), the bounded history the `events` op serves (`EventHistory`, `EventsPage`) and the
`events` reply. concord.net.events publishes the same maps (plus epoch and seqs) and
re-exports every public name here.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from concord.errors import ConfigError
from concord.kv.record import Change, ChangeType, Space
from concord.kv.values import raw_value

EVENTS_VERSION: Final = 1
DEFAULT_EVENTS_LIMIT: Final = 1000
MAX_EVENTS_LIMIT: Final = 100_000
#: Bytes counted per history entry on top of its encoded body (tuple, list slots).
ENTRY_OVERHEAD_BYTES: Final = 96

_packer = msgpack.Packer(use_bin_type=True)


#: Bytes counted for an entry retained unencoded, besides ENTRY_OVERHEAD_BYTES, its key
#: and its stored value: the change object and the map's other fields.
CHANGE_OVERHEAD_BYTES: Final = 64


class HistoryEntry:
    """
    One published change as retained: `body` is the msgpack encoding of the change map's
    `fields` entries without the map header (so the live message can append epoch and
    seqs without re-encoding).

    An entry is either given its encoding (`HistoryEntry(revision, index, key, body,
    fields)`) or made from its change (`of_change`), which keeps the change and encodes it
    each time `body` is asked for: the stream encodes only what a subscriber or an
    `events` query uses. `size_bytes` is what retention counts: the encoding plus
    ENTRY_OVERHEAD_BYTES, or, for an entry kept as its change, the key and the stored
    value plus CHANGE_OVERHEAD_BYTES and ENTRY_OVERHEAD_BYTES (what it holds, known
    without encoding).
    """

    __slots__ = ("revision", "index", "key", "size_bytes", "_body", "_fields", "_change",
                 "_count", "_send_values")

    def __init__(self, revision: int, index: int, key: str, body: bytes, fields: int) -> None:
        self.revision = revision
        self.index = index
        self.key = key
        self._body: bytes | None = body
        self._fields = fields
        self._change: Change | None = None
        self._count = 0
        self._send_values = False
        self.size_bytes = len(body) + ENTRY_OVERHEAD_BYTES

    @classmethod
    def of_change(cls, change: Change, index: int, count: int, send_values: bool) -> HistoryEntry:
        """The `index`-th of `count` user changes of its revision, encoded when used."""
        entry = cls.__new__(cls)
        entry.revision = change.revision
        entry.index = index
        entry.key = change.key
        entry._body = None
        entry._fields = 0
        entry._change = change
        entry._count = count
        entry._send_values = send_values
        record = change.record
        held = len(record.value) if send_values and record is not None else 0
        entry.size_bytes = len(change.key) + held + CHANGE_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES
        return entry

    def encoded(self) -> tuple[bytes, int]:
        """(body, fields): encoded now for an entry kept as its change."""
        if self._body is not None:
            return self._body, self._fields
        assert self._change is not None  # Invariant: one of the two is set
        return _encode_body(self._change, self.index, self._count, self._send_values)

    @property
    def body(self) -> bytes:
        return self.encoded()[0]

    @property
    def fields(self) -> int:
        return self.encoded()[1]

    def encode(self) -> bytes:
        """The change map as retained (what the `events` op returns)."""
        body, fields = self.encoded()
        header: bytes = _packer.pack_map_header(fields)
        return header + body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HistoryEntry):
            return NotImplemented
        return (self.revision, self.index, self.key, self.encoded()) == (
            other.revision, other.index, other.key, other.encoded())

    def __hash__(self) -> int:
        return hash((self.revision, self.index, self.key))

    def __repr__(self) -> str:
        return f"HistoryEntry(revision={self.revision}, index={self.index}, key={self.key!r})"


def _key(name: str) -> bytes:
    packed: bytes = msgpack.packb(name)
    return packed


# Pre-packed map keys and constants of the change map (the publish hot path).
_HEAD: Final = _key("v") + msgpack.packb(EVENTS_VERSION) + _key("type")
_TYPE_VALUES: Final = {t: msgpack.packb(t.name.lower()) for t in ChangeType}
_K_KEY, _K_REVISION, _K_TS, _K_I, _K_N = (_key(k) for k in ("key", "revision", "ts", "i", "n"))
_K_TTL, _K_VALUE = _key("ttl"), _key("value")


def encode_change(change: Change, index: int, count: int, send_values: bool) -> HistoryEntry:
    """
    Encode one user change (the `index`-th of `count` in its revision).

    The value is spliced in as stored msgpack (decompressed if needed), never re-encoded.
    """
    body, fields = _encode_body(change, index, count, send_values)
    return HistoryEntry(change.revision, index, change.key, body, fields)


def _encode_body(change: Change, index: int, count: int, send_values: bool) -> tuple[bytes, int]:
    """The body and field count of `encode_change`."""
    pack_ = _packer.pack
    parts = [
        _HEAD, _TYPE_VALUES[change.type],
        _K_KEY, pack_(change.key),
        _K_REVISION, pack_(change.revision),
        _K_TS, pack_(change.ts_ms),
        _K_I, pack_(index),
        _K_N, pack_(count),
    ]
    fields = 7
    record = change.record
    if record is not None and change.type in (ChangeType.PUT, ChangeType.TOUCH):
        if record.expires_at_ms:
            parts += [_K_TTL, pack_(max(0, record.expires_at_ms - change.ts_ms) / 1000.0)]
            fields += 1
        if send_values:
            parts += [_K_VALUE, raw_value(record)]
            fields += 1
    return b"".join(parts), fields


def user_entries(changes: Iterable[Change], send_values: bool) -> list[HistoryEntry]:
    """
    The history entries of `changes` (SYSTEM changes dropped), numbered per revision,
    kept as their changes (`HistoryEntry.of_change`: encoded only when used).
    """
    user = [c for c in changes if c.space == Space.USER]
    out: list[HistoryEntry] = []
    start = 0
    while start < len(user):
        revision = user[start].revision
        end = start + 1
        while end < len(user) and user[end].revision == revision:
            end += 1
        count = end - start
        for i in range(count):
            out.append(HistoryEntry.of_change(user[start + i], i, count, send_values))
        start = end
    return out


@dataclass(frozen=True, slots=True)
class EventsPage:
    """
    The answer to `events`.

    Attributes:
        entries: changes with revision > since_revision (matching the prefix), in order.
        next_revision: pass it as since_revision to continue (after a compacted answer:
            the floor, the oldest since_revision that can be served).
        compacted: since_revision < floor: changes after it are no longer retained.
    """

    entries: tuple[HistoryEntry, ...]
    next_revision: int
    compacted: bool


class EventHistory:
    """
    The retained history: whole revisions, newest last, bounded by entry count and bytes.

    Invariant: the history holds every user change with `floor < revision <= head`;
    eviction removes the oldest revision whole and raises `floor` to it.

    Args:
        max_entries: [events] history_entries (0: keep nothing).
        max_bytes: [events] history_bytes (encoded bodies plus ENTRY_OVERHEAD_BYTES each).
        start_revision: the store revision when publishing starts (floor and head).
    """

    def __init__(self, max_entries: int, max_bytes: int, start_revision: int = 0) -> None:
        if max_entries < 0 or max_bytes < 0 or start_revision < 0:
            raise ConfigError(
                f"history bounds must be >= 0, got entries={max_entries} bytes={max_bytes}"
                f" start_revision={start_revision}"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.floor = start_revision
        self.head = start_revision
        self.size_bytes = 0
        self._entries: list[HistoryEntry] = []
        self._revisions: list[int] = []
        self._start = 0  # entries before it are evicted (amortized list compaction)

    def __len__(self) -> int:
        return len(self._entries) - self._start

    def reset(self, revision: int) -> None:
        """Forget everything: the history restarts at `revision` (a snapshot install)."""
        self._entries.clear()
        self._revisions.clear()
        self._start = 0
        self.size_bytes = 0
        self.floor = self.head = revision

    def advance(self, revision: int) -> None:
        """Raise head to `revision` (an applied entry that changed no user key)."""
        self.head = max(self.head, revision)

    def append(self, entries: Sequence[HistoryEntry]) -> None:
        """
        Retain `entries` (whole revisions, in revision order, above head), then evict.

        Raises:
            ValueError: an entry's revision is not above the head (a caller bug).
        """
        # NB: the publish hot path (every applied round, subscribers or not): locals.
        head, size = self.head, self.size_bytes
        add_entry, add_revision = self._entries.append, self._revisions.append
        try:
            for entry in entries:
                revision = entry.revision
                if revision < head or (revision == head and entry.index == 0):
                    raise ValueError(f"event revision {revision} is not above head {head}")
                add_entry(entry)
                add_revision(revision)
                size += entry.size_bytes
                head = revision
        finally:
            self.head, self.size_bytes = head, size
        self._evict()

    def _evict(self) -> None:
        entries, start, size = self._entries, self._start, self.size_bytes
        end = len(entries)
        max_entries, max_bytes = self.max_entries, self.max_bytes
        if end - start <= max_entries and size <= max_bytes:
            return
        while end - start > max_entries or size > max_bytes:
            # Invariant: a bound is exceeded, so an entry is left (both bounds are >= 0).
            revision = entries[start].revision
            while start < end and entries[start].revision == revision:
                size -= entries[start].size_bytes
                start += 1
            self.floor = revision
        self.size_bytes = size
        if start > 1024 and start * 2 > end:
            del entries[:start]
            del self._revisions[:start]
            start = 0
        self._start = start

    def query(self, since_revision: int, prefix: str = "", limit: int = 0) -> EventsPage:
        """
        Changes after `since_revision` whose key starts with `prefix`: at most `limit`
        (0: DEFAULT_EVENTS_LIMIT), cut only between revisions (a revision is never split,
        so a page may exceed the limit by the rest of one bulk revision).
        """
        if since_revision < self.floor:
            return EventsPage((), self.floor, True)
        limit = min(limit or DEFAULT_EVENTS_LIMIT, MAX_EVENTS_LIMIT)
        start = bisect.bisect_right(self._revisions, since_revision, lo=self._start)
        out: list[HistoryEntry] = []
        entries = self._entries
        for pos in range(start, len(entries)):
            entry = entries[pos]
            if len(out) >= limit and entry.revision != out[-1].revision:
                return EventsPage(tuple(out), out[-1].revision, False)
            if entry.key.startswith(prefix):
                out.append(entry)
        return EventsPage(tuple(out), max(since_revision, self.head), False)


def _rescoped(entry: HistoryEntry, scope: str) -> HistoryEntry:
    """`entry` with `scope` stripped from its key (the body re-encoded once)."""
    if not scope:
        return entry
    change = msgpack.unpackb(entry.encode(), raw=False)
    key = entry.key[len(scope):]
    change["key"] = key
    body = b"".join(_packer.pack(k) + _packer.pack(v) for k, v in change.items())
    return HistoryEntry(entry.revision, entry.index, key, body, len(change))


def encode_events_reply(request_id: int, page: EventsPage) -> bytes:
    """The ok reply `{id, ok, events, next_revision, compacted}`, events spliced in raw."""
    p = _packer
    parts = [
        p.pack_map_header(5),
        p.pack("id"), p.pack(request_id),
        p.pack("ok"), p.pack(True),
        p.pack("events"), p.pack_array_header(len(page.entries)),
    ]
    for entry in page.entries:
        body, fields = entry.encoded()
        parts.append(p.pack_map_header(fields))
        parts.append(body)
    parts += [
        p.pack("next_revision"), p.pack(page.next_revision),
        p.pack("compacted"), p.pack(page.compacted),
    ]
    return b"".join(parts)
