"""The per-key objects of apply and of the stored state: how they are built and kept."""

from __future__ import annotations

import dataclasses

import pytest

from concord.kv import KvStateMachine, encode_command
from concord.kv.command_types import Envelope, Put
from concord.kv.machine import Applied
from concord.kv.record import Change, ChangeType, KeyRecord, Space

HOT = (KeyRecord, Change, Put, Envelope, Applied)


@pytest.mark.parametrize("cls", HOT, ids=lambda c: c.__name__)
def test_hot_records_are_built_by_plain_slot_stores(cls: type) -> None:
    """
    The objects built per applied put have no `__setattr__` of their own: a frozen
    dataclass's stores each field through object.__setattr__ (~4x slower). Immutability
    is the type checker's (`hot_record`), no `__dict__` is added.
    """
    assert "__setattr__" not in vars(cls)
    assert "__dict__" not in dir(cls)
    assert dataclasses.is_dataclass(cls)


def test_hot_records_compare_and_hash_by_value() -> None:
    """Equality and hashing stay by value, as they were for the frozen dataclasses."""
    a = KeyRecord("k", b"\x01", 0, 5, 6, 2, 0)
    b = KeyRecord("k", b"\x01", 0, 5, 6, 2, 0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != dataclasses.replace(a, version=3)
    c = Change(ChangeType.PUT, Space.USER, "k", a, 6, 10)
    assert c == Change(ChangeType.PUT, Space.USER, "k", b, 6, 10)
    assert hash(c) == hash(Change(ChangeType.PUT, Space.USER, "k", b, 6, 10))


def test_restored_records_share_revision_numbers() -> None:
    """
    A restore interns the revision numbers of the snapshot's records: records written by
    one entry share one int object (32 bytes per revision field per key otherwise: every
    msgpack-decoded int above 256 is a new object).
    """
    sm = KvStateMachine()
    items = [[f"k{i:04d}", b"v"] for i in range(300)]
    for index in range(1, 301):  # entries 1..300: indexes above 256 are not cached ints
        sm.apply_noop(index, 1000 + index)
    sm.apply(301, 2000, encode_command("put_many", {"items": items}))
    sm.apply(302, 2001, encode_command("put_many", {"items": items[:10]}))
    restored = KvStateMachine()
    restored.restore(sm.snapshot())
    assert restored.state_hash() == sm.state_hash()
    records = list(restored.records())
    first, tenth, last = records[0], records[9], records[-1]
    assert (301, 302, 301, 301) == (first.create_revision, first.mod_revision,
                                    last.create_revision, last.mod_revision)
    assert first.create_revision is last.create_revision is last.mod_revision
    assert first.mod_revision is tenth.mod_revision  # both rewritten at 302
