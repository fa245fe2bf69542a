"""OffsetTable: the node views' key -> locator table, against a dict as the model."""

from __future__ import annotations

import mmap
import random

import pytest

from concord.shm.layout import RECORD_HEAD, RECORD_HEAD_SIZE, align8
from concord.shm.offsettable import LOC_SHIFT, OffsetTable


class Arena:
    """Records (the shm layout's head, value, key) appended to an anonymous mapping."""

    def __init__(self, size: int = 1 << 22) -> None:
        self.mm = mmap.mmap(-1, size)
        self.end = 64

    def append(self, key: str, value: bytes) -> int:
        """The locator of a new record of `key`."""
        kb = key.encode()
        RECORD_HEAD.pack_into(self.mm, self.end, 0, 0, 0, 0, len(value), 1, 1, 1, 0, len(kb))
        start = self.end + RECORD_HEAD_SIZE
        self.mm[start : start + len(value)] = value
        self.mm[start + len(value) : start + len(value) + len(kb)] = kb
        self.end += align8(RECORD_HEAD_SIZE + len(value) + len(kb))
        return start << LOC_SHIFT | (start + len(value))


class SameHash(str):
    """A key whose hash collides with every other SameHash key."""

    def __hash__(self) -> int:
        return 42


class WideTable(OffsetTable):
    """A table whose fingerprint places entries only up to 8 slots: bigger, it reads the
    keys back from the records to grow and to shift entries back."""

    FP_BITS = 3


def check(table: OffsetTable, model: dict[str, int], absent: list[str]) -> None:
    assert len(model) == len(table)
    assert model == dict(table.items())
    assert sorted(model) == sorted(table)
    for k, loc in model.items():
        assert loc == table.get(k) and k in table
    for k in absent:
        assert None is table.get(k) and k not in table


@pytest.mark.parametrize("kind", [OffsetTable, WideTable])
@pytest.mark.parametrize("seed", range(6))
def test_table_agrees_with_dict_when_keys_put_moved_and_deleted(
    seed: int, kind: type[OffsetTable]
) -> None:
    """
    Random puts (new keys, moved ones), deletes and pops on a table that starts at 8
    slots: it grows, probe runs wrap around the end of the arrays and deletions shift
    entries back; after every step it answers exactly as a dict would.
    """
    rng = random.Random(seed)
    arena = Arena()
    table = kind(arena.mm)
    model: dict[str, int] = {}
    keys = [f"k{i}" for i in range(120)]
    for step in range(3000):
        key = rng.choice(keys)
        r = rng.random()
        if r < 0.55:
            loc = arena.append(key, bytes(rng.randrange(0, 40)))
            table[key] = loc
            model[key] = loc
        elif r < 0.8:
            if key in model:
                del table[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del table[key]
        else:
            assert model.pop(key, None) == table.pop(key, None)
        if step % 50 == 0 or len(model) < 10:
            check(table, model, [k for k in keys if k not in model])
    check(table, model, [k for k in keys if k not in model])


def test_table_compares_keys_when_hashes_collide() -> None:
    """Keys of one hash (one probe run), some prefixes of others, stay apart."""
    arena = Arena()
    table = OffsetTable(arena.mm)
    names = ["abcd", "abc", "ab", "a", "b", ""]  # longer keys first in the run
    model = {}
    for n in names:
        model[n] = table[SameHash(n)] = arena.append(n, n.encode() * 3)
    assert model == dict(table.items())
    for k, loc in model.items():
        assert loc == table.get(SameHash(k))
    assert None is table.get(SameHash("abcde")) and None is table.get(SameHash("x"))
    for n in ["ab", "", "a"]:  # from the middle, the end and the start of the run
        del table[SameHash(n)]
        del model[n]
        for k, loc in model.items():
            assert loc == table.get(SameHash(k))
        assert None is table.get(SameHash(n))
    assert len(model) == len(table)


def test_table_from_unique_matches_inserts_and_follows_remap() -> None:
    """A bulk-built table answers as one built by inserts; it reads keys from `mm`."""
    arena = Arena()
    model = {f"key{i}": arena.append(f"key{i}", b"v" * (i % 9)) for i in range(500)}
    starts = [loc >> LOC_SHIFT for loc in model.values()]
    bulk = OffsetTable.from_unique(arena.mm, list(model), starts)
    check(bulk, model, ["key500", "nope"])
    bigger = mmap.mmap(-1, len(arena.mm) * 2)  # a grown generation: same offsets
    bigger[: len(arena.mm)] = arena.mm[:]
    arena.mm.close()
    bulk.remap(bigger)
    check(bulk, model, ["key500"])
