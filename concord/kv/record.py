"""
What the state machine publishes per changed key: the contract between `concord.kv`
(which produces it from `apply()`), `concord.shm` (which stores it for readers) and the
change stream (which sends it to subscribers).

Pure data. Values are kept in their encoded form (msgpack, possibly zlib-compressed) so
that publishing and serving them never re-encodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from typing import Final, TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def hot_record(cls: type[_T]) -> type[_T]:
    """
    A slots dataclass that is frozen for the type checker (mypy strict rejects any
    assignment to its fields) but built by plain slot stores at run time.

    For the objects built once or more per applied put (KeyRecord, Change, Put,
    Envelope, Applied): a frozen dataclass's `__init__` stores each field through
    `object.__setattr__` (its own `__setattr__` raises), about 4 times slower than a
    plain store (~1.5 us for KeyRecord's 7 fields on this machine, ~0.3 us plain).
    Equality and hashing stay by value, as for a frozen dataclass.
    """
    make: Callable[[type[_T]], type[_T]] = dataclass(slots=True, unsafe_hash=True)
    return make(cls)


class Space(IntEnum):
    """Keyspaces: user keys, and names reserved for the system (auth, tenants, indexes)."""

    USER = 0
    SYSTEM = 1


class RecordFlags(IntFlag):
    NONE = 0
    COMPRESSED = 1  # `value` is zlib-compressed msgpack


@hot_record
class KeyRecord:
    """
    One key's current state.

    Attributes:
        key: the key, a UTF-8 string of 1..max_key_bytes bytes.
        value: the msgpack encoding of the value, zlib-compressed when
            `flags & RecordFlags.COMPRESSED`.
        flags: `RecordFlags`.
        create_revision: store revision of the put that created the key.
        mod_revision: store revision of the last change to the key.
        version: number of puts since creation (1 after the first).
        expires_at_ms: leader time at which the key expires; 0 means never.
    """

    key: str
    value: bytes
    flags: int
    create_revision: int
    mod_revision: int
    version: int
    expires_at_ms: int = 0


class ChangeType(IntEnum):
    PUT = 0
    DELETE = 1
    EXPIRE = 2
    TOUCH = 3


@hot_record
class Change:
    """
    One key changed by one applied entry.

    `record` is the key's new state for PUT and TOUCH, None for DELETE and EXPIRE.
    Changes of one entry (a bulk op) share one `revision`; `ts_ms` is the entry's leader
    timestamp.
    """

    type: ChangeType
    space: Space
    key: str
    record: KeyRecord | None
    revision: int
    ts_ms: int


class Missing(Enum):
    """The type of `MISSING`: a key that is absent, distinct from a stored nil."""

    MISSING = 0

    def __repr__(self) -> str:
        return "MISSING"


#: An absent key (shared-memory lookups, the client's results): not a stored nil.
MISSING: Final = Missing.MISSING
