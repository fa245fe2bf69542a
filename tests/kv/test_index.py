"""Secondary indexes: the reader-side rebuild from Changes, and index-served queries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord.kv import Change, IndexSet, KeyRecord, KvStateMachine, Space, serve_read
from concord.kv.index import IndexDef
from tests.kv.helpers import KV_SETTINGS, Driver


class ChangeFedSource:
    """A reader that only sees the Change stream, as the shared-memory reader does."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.indexes = IndexSet()

    def feed(self, changes: list[Change]) -> None:
        for change in changes:
            if change.space == Space.USER:
                if change.record is None:
                    self.records.pop(change.key, None)
                else:
                    self.records[change.key] = change.record
            self.indexes.apply_change(change, lambda: list(self.records.values()))

    def get_record(self, key: str) -> KeyRecord | None:
        return self.records.get(key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        return iter(
            k for k in sorted(self.records)
            if start is None or k > start or (inclusive and k == start)
        )

    def index_set(self) -> IndexSet | None:
        return self.indexes


def test_reader_rebuilds_same_indexes_when_fed_changes(sm: KvStateMachine) -> None:
    """IndexSet.apply_change keeps a reader's indexes equal to the state machine's."""
    d = Driver(sm)
    reader = ChangeFedSource()
    writes: list[tuple[str, dict[str, object]]] = [
        ("put", {"key": "a", "value": {"c": "x"}}),
        ("create_index", {"name": "c", "field": "c"}),
        ("put_many", {"items": [["b", {"c": "x"}], ["c", {"c": "y"}]]}),
        ("put", {"key": "a", "value": {"c": "y"}}),
        ("delete", {"key": "c"}),
        ("touch", {"key": "b", "ttl": 100}),
        ("create_index", {"name": "other", "field": ["c"]}),
        ("drop_index", {"name": "other"}),
    ]
    for op, args in writes:
        reader.feed(d.do(op, args).changes)
    for value in ("x", "y", "z"):
        args = {"name": "c", "value": value}
        assert sm.read("index_lookup", args, 0) == serve_read(reader, "index_lookup", args, 0)
    assert sm.read("list_indexes", {}, 0) == serve_read(reader, "list_indexes", {}, 0)


def test_index_definition_round_trips_when_encoded() -> None:
    """The SYSTEM record value decodes back to the same definition."""
    definition = IndexDef("n", ["a", 0], ("a", 0))
    assert definition == IndexDef.decode("index/n", definition.encode())


def test_list_equality_is_served_by_scan_when_field_is_indexed(sm: KvStateMachine) -> None:
    """eq on a list operand cannot use a scalar index and still finds list values."""
    d = Driver(sm)
    d.do("create_index", {"name": "t", "field": "t"})
    d.do("put", {"key": "k", "value": {"t": [1, 2]}})
    assert ["k"] == sm.keys({"where": ["eq", "t", [1, 2]]}, 0)["keys"]
    assert ["k"] == sm.keys({"where": ["in", "t", [[1, 2], 3]]}, 0)["keys"]


FIELD_VALUES = st.one_of(
    st.integers(-3, 3), st.sampled_from([0.5, 1.0, -2.0, float("nan")]), st.booleans(),
    st.none(), st.sampled_from(["", "a", "b"]), st.sampled_from([b"", b"a"]),
    st.lists(st.integers(0, 1), max_size=2),
)
OPS = st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in"])


@pytest.mark.slow
@KV_SETTINGS
@given(
    st.lists(st.one_of(FIELD_VALUES.map(lambda v: {"f": v}), st.just({"g": 1})), max_size=12),
    OPS,
    FIELD_VALUES,
)
def test_indexed_query_equals_scan_when_values_are_random(
    values: list[object], op: str, operand: object
) -> None:
    """With or without an index on the field, a where query returns the same keys."""
    sm = KvStateMachine()
    d = Driver(sm)
    d.do("put_many", {"items": [[f"k{i:02d}", v] for i, v in enumerate(values)]} if values
         else {"items": []})
    where = ["in", "f", [operand, 1]] if op == "in" else [op, "f", operand]
    scanned = sm.keys({"where": where}, 0)
    d.do("create_index", {"name": "f", "field": "f"})
    assert scanned == sm.keys({"where": where}, 0)
    assert scanned == sm.keys({"where": ["and", ["exists", "f"], where]}, 0)
