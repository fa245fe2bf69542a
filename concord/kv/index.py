"""
Secondary indexes on value fields.

Pure. An index maps the scalar found at a field path of each user value to the keys
holding it, ordered by (`values.sort_key`, key). Index definitions are records of the
SYSTEM keyspace ("index/<name>", value msgpack {"v": 1, "field": path}), so any reader
that sees the SYSTEM records and the user records (or the Change stream) rebuilds the
same indexes: `IndexSet.apply_change` is the reader-side entry point, the state machine
calls `create`, `drop` and `update` directly.

An index is a candidate generator: users of `candidates` re-check the record (TTL, and
the filter itself) before returning it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import msgpack
from sortedcontainers import SortedList

from concord.errors import InvalidRequestError
from concord.kv.record import Change, ChangeType, KeyRecord, Space
from concord.kv.values import MISSING, Path, SortKey, parse_path, record_value, resolve, sort_key

INDEX_PREFIX: Final = "index/"
DEF_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class IndexDef:
    """A secondary index: its name and the field path it indexes (as given, and parsed)."""

    name: str
    field: str | list[str | int]
    path: Path

    @property
    def system_key(self) -> str:
        """Its key in the SYSTEM keyspace."""
        return INDEX_PREFIX + self.name

    def encode(self) -> bytes:
        """The SYSTEM record value: msgpack {"v": 1, "field": field}."""
        packed: bytes = msgpack.packb({"v": DEF_VERSION, "field": self.field}, use_bin_type=True)
        return packed

    @classmethod
    def decode(cls, system_key: str, data: bytes) -> IndexDef:
        """
        Parse a SYSTEM record back into a definition.

        Raises:
            InvalidRequestError: not an index record.
        """
        if not system_key.startswith(INDEX_PREFIX):
            raise InvalidRequestError(f"system key {system_key!r} is not an index definition")
        try:
            body = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise InvalidRequestError(f"index definition {system_key!r} does not decode") from exc
        if not isinstance(body, dict) or body.get("v") != DEF_VERSION or "field" not in body:
            raise InvalidRequestError(f"index definition {system_key!r} has a bad shape")
        field = body["field"]
        if not isinstance(field, (str, list)):
            raise InvalidRequestError(f"index definition {system_key!r} has a bad field")
        return cls(system_key[len(INDEX_PREFIX):], field, parse_path(field))


class Index:
    """One secondary index: sorted (kind, value, key) entries plus key -> sort key."""

    def __init__(self, definition: IndexDef) -> None:
        self.definition = definition
        self._entries: SortedList = SortedList()
        self._by_key: dict[str, SortKey] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def set(self, key: str, value: object) -> None:
        """Index `key` under the field of its (decoded) value, or unindex it if absent."""
        found = resolve(value, self.definition.path)
        new = None if found is MISSING else sort_key(found)
        old = self._by_key.get(key)
        if old == new:
            return
        if old is not None:
            self._entries.remove((old[0], old[1], key))
            del self._by_key[key]
        if new is not None:
            self._entries.add((new[0], new[1], key))
            self._by_key[key] = new

    def remove(self, key: str) -> None:
        """Unindex `key`."""
        old = self._by_key.pop(key, None)
        if old is not None:
            self._entries.remove((old[0], old[1], key))

    def range(
        self,
        lo: object = MISSING,
        hi: object = MISSING,
        lo_inclusive: bool = True,
        hi_inclusive: bool = True,
    ) -> list[str]:
        """
        Keys whose field lies between lo and hi (MISSING: unbounded), in (value, key)
        order. Bounds of another kind than the field never match; an unbounded side stays
        within the kind of the other bound.

        Raises:
            InvalidRequestError: a bound is not indexable (list, map, NaN), or both are
                unbounded.
        """
        lo_key = None if lo is MISSING else sort_key(lo)
        hi_key = None if hi is MISSING else sort_key(hi)
        if (lo is not MISSING and lo_key is None) or (hi is not MISSING and hi_key is None):
            raise InvalidRequestError("index bounds must be scalars")
        if lo_key is None and hi_key is None:
            raise InvalidRequestError("an index range needs at least one bound")
        kind = lo_key[0] if lo_key is not None else hi_key[0]  # type: ignore[index]
        if lo_key is not None and hi_key is not None and lo_key[0] != hi_key[0]:
            return []
        start = (kind,) if lo_key is None else (kind, lo_key[1])
        out: list[str] = []
        for entry_kind, entry_value, key in self._entries.irange(minimum=start):
            if entry_kind != kind:
                break
            if lo_key is not None and not lo_inclusive and entry_value == lo_key[1]:
                continue
            if hi_key is not None:
                if entry_value > hi_key[1] or (not hi_inclusive and entry_value == hi_key[1]):
                    break
            out.append(key)
        return out

    def equal(self, value: object) -> list[str]:
        """Keys whose field equals `value` (numbers: by numeric value)."""
        if sort_key(value) is None:
            return []
        return self.range(value, value)


class IndexSet:
    """The secondary indexes of one store."""

    def __init__(self) -> None:
        self._by_name: dict[str, Index] = {}

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def definitions(self) -> list[IndexDef]:
        """Every definition, by name."""
        return [self._by_name[n].definition for n in sorted(self._by_name)]

    def get(self, name: str) -> Index | None:
        """The index called `name`, if any."""
        return self._by_name.get(name)

    def for_path(self, path: Path) -> Index | None:
        """The first index (by name) on `path`, if any."""
        for name in sorted(self._by_name):
            index = self._by_name[name]
            if index.definition.path == path:
                return index
        return None

    def create(self, definition: IndexDef, records: Iterable[KeyRecord]) -> Index:
        """Define an index and build it over `records` (the user records)."""
        index = Index(definition)
        for record in records:
            try:
                index.set(record.key, record_value(record))
            except ValueError:
                continue
        self._by_name[definition.name] = index
        return index

    def drop(self, name: str) -> bool:
        """Forget the index called `name`; False if there was none."""
        return self._by_name.pop(name, None) is not None

    def clear(self) -> None:
        """Forget every index."""
        self._by_name.clear()

    def update(self, key: str, record: KeyRecord | None) -> None:
        """Re-index `key` after its record changed (None: deleted)."""
        if not self._by_name:
            return
        if record is None:
            for index in self._by_name.values():
                index.remove(key)
            return
        try:
            value = record_value(record)
        except ValueError:
            value = MISSING
        for index in self._by_name.values():
            if value is MISSING:
                index.remove(key)
            else:
                index.set(key, value)

    def apply_change(
        self, change: Change, user_records: Callable[[], Iterable[KeyRecord]]
    ) -> None:
        """
        Keep the indexes current from the Change stream (the reader side).

        Args:
            change: one applied change.
            user_records: all current user records, called only when an index is created.
        """
        if change.space == Space.SYSTEM:
            if not change.key.startswith(INDEX_PREFIX):
                return
            name = change.key[len(INDEX_PREFIX):]
            if change.record is None:
                self.drop(name)
                return
            try:
                definition = IndexDef.decode(change.key, change.record.value)
            except InvalidRequestError:
                self.drop(name)
                return
            self.create(definition, user_records())
        elif change.type != ChangeType.TOUCH:
            self.update(change.key, change.record)
