"""The per-key objects of apply and of the stored state: how they are built and kept."""

from __future__ import annotations

import dataclasses

import pytest

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

