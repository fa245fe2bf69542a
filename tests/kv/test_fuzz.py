"""apply() never crashes on malformed log entries, and an error never changes state."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from concord.kv import KvStateMachine, encode_command
from tests.kv.helpers import KV_SETTINGS

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
    st.text(max_size=4), st.binary(max_size=4),
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["key", "value", "flags", "ttl_ms", "items", "keys", "cond", "query", "name", "field",
     "client_id", "seq", "other"]
)
OPS = st.sampled_from(
    ["put", "delete", "touch", "put_many", "delete_many", "touch_many", "put_if",
     "delete_if", "expire", "delete_where", "create_index", "drop_index", "x"]
)


def _seeded() -> KvStateMachine:
    sm = KvStateMachine()
    sm.apply(1, 1_000, encode_command("put", {"key": "a", "value": {"g": 1}, "ttl": 5}))
    sm.apply(2, 1_000, encode_command("create_index", {"name": "g", "field": "g"}))
    return sm


@KV_SETTINGS
@given(st.binary(max_size=64))
def test_apply_answers_error_when_entry_is_random_bytes(data: bytes) -> None:
    """Random bytes never raise out of apply()."""
    sm = _seeded()
    applied = sm.apply(3, 2_000, data)
    if "error" in applied.result:
        assert [] == applied.changes
    assert 3 == sm.applied_index


@pytest.mark.slow
@KV_SETTINGS
@given(OPS, st.dictionaries(FIELDS, ANY, max_size=6), st.sampled_from([1, 1, 2, None]))
def test_apply_never_raises_when_command_map_is_random(
    op: str, fields: dict[str, object], version: object
) -> None:
    """Random command maps either apply or yield an error that changes nothing."""
    sm = _seeded()
    before = sm.snapshot()
    data = msgpack.packb({"v": version, "op": op, **fields}, use_bin_type=True)
    applied = sm.apply(3, 2_000, data)
    if "error" in applied.result:
        assert [] == applied.changes
        reference = KvStateMachine()
        reference.restore(before)
        reference.apply_noop(3, 2_000)
        assert reference.state_hash() == sm.state_hash()
    assert sm.verify_digest()
