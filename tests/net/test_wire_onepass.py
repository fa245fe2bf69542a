"""
decode_request's one-pass check of a valid request (concord.net.wire `_valid_request`)
against the checked path it stands in for (`validate(unpack_map(...))`): the same Request
for what that path accepts, the same error (message and id) for what it refuses. And
`pack`'s reused per-thread Packer against msgpack.packb.
"""

from __future__ import annotations

import threading

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concord.errors import InvalidRequestError
from concord.net import wire
from concord.net.wire import MAX_DEPTH, OPS, Request, decode_request, pack, unpack_map, validate

_MAX = 1 << 20


def _outcome(decode: object, payload: bytes) -> Request | tuple[str, int | None]:
    try:
        return decode(payload)  # type: ignore[operator, no-any-return]
    except InvalidRequestError as exc:
        return exc.message, exc.request_id


def _checked(payload: bytes) -> Request:
    return validate(unpack_map(payload, _MAX), OPS)


def _same(payload: bytes) -> None:
    assert _outcome(lambda p: decode_request(p, OPS, _MAX), payload) == _outcome(_checked, payload)


def _deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


EDGES: list[object] = [
    {"op": "get", "id": 1, "key": "k", "consistency": "leader"},
    {"op": "get", "id": True, "key": "k"},  # a bool is no id
    {"op": "get", "id": 1, "key": "k", "meta": 1},  # an int is no bool
    {"op": "get", "id": 1, "key": "k", "seq": 1},  # seq without client_id
    {"op": "get", "id": 1, "key": "k", "min_seq": 0},  # min_seq without seq
    {"op": "put", "id": 1, "key": "k", "value": 1, "client_id": "c", "seq": 1, "min_seq": 2},
    {"op": "put", "id": 1, "key": "k", "value": 1, "client_id": "c", "seq": 2, "min_seq": 2},
    {"op": "put", "id": 1, "key": "k", "value": _deep(MAX_DEPTH - 1)},
    {"op": "put", "id": 1, "key": "k", "value": _deep(MAX_DEPTH)},
    {"op": "put", "id": 1, "key": "k", "value": {1: [b"x", None, 2.5]}},
    {"op": "put", "id": 1, "key": "k"},  # missing value
    {"op": "put_if", "id": 1, "key": "k", "value": 1},  # none of the conditions
    {"op": "put_if", "id": 1, "key": "k", "value": 1, "version": 1, "absent": True},  # two
    {"op": "get", "id": 1, "key": "k", "x": 1},  # undeclared
    {"op": "get", "id": 1, "key": "k", "value": 1},  # another op's arg
    {"op": "nope", "id": 1},
    {"op": 1, "id": 1},
    {"id": 1},
    {"op": "get", "key": "k"},
    {"op": "get", "id": 1, "key": "k", 7: 1},  # a key that is not a str
    {"op": "get", "id": 1, "key": "k", "timeout_ms": 0},
    {"op": "get_many", "id": 1, "keys": ["a", 1]},
]


@pytest.mark.parametrize("msg", EDGES, ids=range(len(EDGES)))
def test_decode_matches_checked_path_when_request_at_an_edge(msg: object) -> None:
    """Each edge of the rules gives what the checked path gives: Request or error."""
    _same(msgpack.packb(msg, use_bin_type=True))


def test_decode_matches_checked_path_when_payload_carries_ext_or_timestamp() -> None:
    """An ext type or a timestamp anywhere is refused as by the checked path."""
    for value in (msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0), [msgpack.Timestamp(1, 0)]):
        payload = msgpack.packb({"op": "put", "id": 3, "key": "k", "value": value}, use_bin_type=True)
        _same(payload)
        with pytest.raises(InvalidRequestError):
            decode_request(payload)


def test_decode_refuses_payload_when_over_limit_or_empty() -> None:
    """Size limits are checked first, whatever the payload holds."""
    payload = msgpack.packb({"op": "get", "id": 1, "key": "k"})
    with pytest.raises(InvalidRequestError, match="exceeds max_request_bytes"):
        decode_request(payload, OPS, len(payload) - 1)
    with pytest.raises(InvalidRequestError, match="empty"):
        decode_request(b"", OPS, 10)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), children, max_size=4),
    max_leaves=6,
)
_names = st.sampled_from(["id", "key", "value", "ttl", "keys", "items", "consistency", "meta",
                          "expected", "version", "absent", "seq", "min_seq", "client_id",
                          "timeout_ms", "token", "ns", "traceparent", "x"])


@pytest.mark.slow
@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.sampled_from(sorted(OPS)), st.dictionaries(_names, _values, max_size=6),
       st.integers(-3, 3))
def test_decode_matches_checked_path_when_map_fields_random(
    op: str, fields: dict[str, object], request_id: int
) -> None:
    """Random fields under a real op (NaN aside: it never equals itself): the same outcome."""
    _same(msgpack.packb({"op": op, "id": request_id, **fields}, use_bin_type=True))
    _same(msgpack.packb({"op": op, **fields}, use_bin_type=True))


def test_pack_encodes_as_packb_when_reused_after_failure_and_across_threads() -> None:
    """pack's reused Packer: the bytes of msgpack.packb, also right after a pack that
    failed, and from several threads at once."""
    reply = {"id": 1, "ok": True, "value": {"a": [b"x", 2.5, None]}}
    expected = msgpack.packb(reply, use_bin_type=True)
    assert pack(reply) == expected
    with pytest.raises(TypeError):
        pack({"id": 1, "value": object()})
    assert pack(reply) == expected
    results: list[bool] = []

    def many() -> None:
        results.append(all(pack({**reply, "n": n}) == msgpack.packb({**reply, "n": n}, use_bin_type=True)
                           for n in range(2000)))

    threads = [threading.Thread(target=many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4


def test_pack_keeps_no_big_buffer_when_a_big_map_was_encoded() -> None:
    """A pack over the keep limit drops the thread's Packer (its grown buffer with it);
    the next pack encodes as msgpack.packb with a fresh one."""
    big = {"id": 1, "value": b"x" * (wire._PACKER_KEEP_BYTES + 1)}
    assert pack(big) == msgpack.packb(big, use_bin_type=True)
    assert not hasattr(wire._packers, "packer")
    small = {"id": 2, "ok": True}
    assert pack(small) == msgpack.packb(small, use_bin_type=True)
    assert hasattr(wire._packers, "packer")
