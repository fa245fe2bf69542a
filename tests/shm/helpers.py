"""Builders shared by the shm tests."""

from __future__ import annotations

import msgpack

from concord.kv.record import Change, ChangeType, KeyRecord, Space


def rec(key: str, value: object, rev: int, version: int = 1, expires_at_ms: int = 0) -> KeyRecord:
    """A record whose value is the msgpack encoding of `value`."""
    return KeyRecord(key, msgpack.packb(value), 0, rev, rev, version, expires_at_ms)


def put(
    key: str, value: object, rev: int, version: int = 1, expires_at_ms: int = 0,
    space: Space = Space.USER,
) -> Change:
    """A PUT change."""
    return Change(ChangeType.PUT, space, key, rec(key, value, rev, version, expires_at_ms), rev, 0)


def delete(key: str, rev: int, space: Space = Space.USER) -> Change:
    """A DELETE change."""
    return Change(ChangeType.DELETE, space, key, None, rev, 0)
