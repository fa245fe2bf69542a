"""Command encoding on the leader and strict decoding in apply."""

from __future__ import annotations

import msgpack
import pytest

from concord.errors import (
    InvalidKeyError,
    InvalidRequestError,
    TooManyItemsError,
    ValueTooLargeError,
)
from concord.kv import KvConfig, decode_command, encode_command, encode_request
from concord.kv.commands import Delete, Put, PutIf, TouchMany, ttl_to_ms

SMALL = KvConfig(max_key_bytes=8, max_value_bytes=64, max_items=3)


def test_put_round_trips_when_encoded_then_decoded() -> None:
    """A put decodes to the same key, packed value and ttl in ms."""
    env = decode_command(encode_command("put", {"key": "k", "value": [1, "a"], "ttl": 1.5}))
    assert Put("k", msgpack.packb([1, "a"]), 0, 1500) == env.command
    assert (None, None) == (env.client_id, env.seq)


def test_session_pair_round_trips_when_given() -> None:
    """client_id and seq travel with the command."""
    env = decode_command(encode_command("delete", {"key": "k"}, client_id="c", seq=7))
    assert (Delete("k"), "c", 7) == (env.command, env.client_id, env.seq)


def test_encode_request_drops_envelope_fields_when_given_a_wire_map() -> None:
    """id, token, ns, timeout_ms and traceparent are not replicated."""
    request = {"op": "put", "id": 9, "key": "k", "value": 1, "timeout_ms": 5, "token": "t",
               "traceparent": "x", "client_id": 42, "seq": 3}
    env = decode_command(encode_request(request))
    assert (Put("k", b"\x01", 0, 0), "42", 3) == (env.command, env.client_id, env.seq)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", InvalidKeyError),
        ("x" * 9, InvalidKeyError),
        ("ééééé", InvalidKeyError),  # 10 bytes
        ("\ud800", InvalidKeyError),
        (5, InvalidKeyError),
        (None, InvalidKeyError),
    ],
)
def test_encode_rejects_key_when_invalid(key: object, error: type[Exception]) -> None:
    """Empty, too long (in bytes), non-UTF-8 and non-string keys are invalid_key."""
    with pytest.raises(error):
        encode_command("put", {"key": key, "value": 1}, config=SMALL)


def test_encode_accepts_key_when_exactly_at_limit() -> None:
    """A key of max_key_bytes bytes is fine."""
    encode_command("put", {"key": "é" * 4, "value": 1}, config=SMALL)


def test_encode_rejects_value_when_too_large() -> None:
    """A value encoding past max_value_bytes is value_too_large, even if it compresses."""
    with pytest.raises(ValueTooLargeError, match="more than max_value_bytes 64"):
        encode_command("put", {"key": "k", "value": "a" * 100}, config=SMALL)


@pytest.mark.parametrize(
    "value", [object(), {1, 2}, msgpack.ExtType(1, b"x"), {"a": [object()]}, 2**64, {(1,): 2}]
)
def test_encode_rejects_value_when_not_msgpack_native(value: object) -> None:
    """Only nil, bool, int, float, str, bytes, list and map are values."""
    with pytest.raises(InvalidRequestError):
        encode_command("put", {"key": "k", "value": value})


def test_encode_rejects_bulk_when_over_max_items() -> None:
    """Bulk ops take at most max_items items."""
    cases: list[tuple[str, dict[str, object]]] = [
        ("put_many", {"items": [[f"k{i}", i] for i in range(4)]}),
        ("delete_many", {"keys": [f"k{i}" for i in range(4)]}),
        ("touch_many", {"keys": [f"k{i}" for i in range(4)], "ttl": 1}),
    ]
    for op, args in cases:
        with pytest.raises(TooManyItemsError):
            encode_command(op, args, config=SMALL)


def test_apply_side_rejects_bulk_when_over_max_items() -> None:
    """decode_command enforces the item limit too (a log written by another encoder)."""
    data = msgpack.packb({"v": 1, "op": "delete_many", "keys": ["a", "b", "c", "d"]})
    with pytest.raises(TooManyItemsError):
        decode_command(data, SMALL)


def test_touch_many_accepts_keys_with_one_ttl_when_items_absent() -> None:
    """touch_many {keys, ttl} is shorthand for items with the same ttl."""
    env = decode_command(encode_command("touch_many", {"keys": ["a", "b"], "ttl": 2}))
    assert isinstance(env.command, TouchMany)
    assert [("a", 2000), ("b", 2000)] == [(t.key, t.ttl_ms) for t in env.command.items]


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("put", {"key": "k"}, "needs a value"),
        ("put", {"key": "k", "value": 1, "ttl": 0}, "ttl must be positive"),
        ("put", {"key": "k", "value": 1, "ttl": True}, "ttl must be a number"),
        ("put", {"key": "k", "value": 1, "ttl": float("inf")}, "ttl must be positive"),
        ("put", {"key": "k", "value": 1, "compress": 1}, "compress must be"),
        ("put", {"key": "k", "value": 1, "bogus": 1}, "does not take argument 'bogus'"),
        ("put_if", {"key": "k", "value": 1}, "exactly one of"),
        ("put_if", {"key": "k", "value": 1, "version": 1, "absent": True}, "exactly one of"),
        ("put_if", {"key": "k", "value": 1, "absent": False}, "absent must be true"),
        ("delete_if", {"key": "k", "version": -1}, "version must be an integer >= 0"),
        ("put_many", {"items": [["a", 1], ["a", 2]]}, "appears twice"),
        ("put_many", {"items": [["a"]]}, "put_many items"),
        ("put_many", {"items": "ab"}, "items must be a list"),
        ("delete_where", {"pattern": "("}, "bad regex"),
        ("delete_where", {"where": ["zz", "a", 1]}, "unknown filter op"),
        ("create_index", {"name": "bad name", "field": "a"}, "index name"),
        ("create_index", {"name": "n", "field": ""}, "non-empty field path"),
        ("nope", {}, "unknown write op"),
    ],
)
def test_encode_rejects_request_when_malformed(
    op: str, args: dict[str, object], message: str
) -> None:
    """Malformed write requests get invalid_request naming the problem."""
    with pytest.raises(InvalidRequestError, match=message):
        encode_command(op, args)


def test_encode_request_rejects_expire_when_sent_by_a_client() -> None:
    """expire is proposed by the leader only."""
    with pytest.raises(InvalidRequestError, match="not a write op"):
        encode_request({"op": "expire", "keys": ["a"]})


def test_put_if_carries_expected_value_when_given() -> None:
    """The expected value is decoded into the condition."""
    env = decode_command(encode_command("put_if", {"key": "k", "value": 1, "expected": {"a": 1}}))
    assert isinstance(env.command, PutIf)
    assert ("expected", {"a": 1}) == (env.command.cond.kind, env.command.cond.operand)


def test_ttl_rounds_up_to_milliseconds_when_fractional() -> None:
    """A ttl of 0.0001 s is 1 ms, never 0 (which would mean no expiry)."""
    assert 1 == ttl_to_ms(0.0001, KvConfig())
    assert 2500 == ttl_to_ms(2.5, KvConfig())


@pytest.mark.parametrize("ttl", [1e308, 1.7e305, 2**64 - 1, 2**1000])
def test_ttl_refused_when_too_large_to_convert(ttl: float) -> None:
    """A finite ttl whose milliseconds overflow a float is invalid_request, not OverflowError."""
    with pytest.raises(InvalidRequestError, match="exceeds the maximum"):
        ttl_to_ms(ttl, KvConfig())
    with pytest.raises(InvalidRequestError):
        encode_request({"op": "put", "id": 1, "key": "k", "value": 1, "ttl": ttl})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"key": "ключ", "value": b"\x01", "flags": 0, "ttl_ms": 5},
         Put("ключ", b"\x01", 0, 5)),
        ({"key": "k", "value": b"\x01", "flags": 1, "ttl_ms": 0}, Put("k", b"\x01", 1, 0)),
        ({"key": "k", "value": b"\x01", "flags": True, "ttl_ms": 0}, None),
        ({"key": "k", "value": b"\x01", "flags": 0, "ttl_ms": -1}, None),
        ({"key": "k" * 1025, "value": b"\x01", "flags": 0, "ttl_ms": 0}, None),
        ({"key": "k", "value": "text", "flags": 0, "ttl_ms": 0}, None),
        ({"key": "k", "value": b"\x01", "flags": 0, "other": 0}, None),
    ],
)
def test_plain_put_decodes_like_full_decoder_when_fields_vary(
    fields: dict[str, object], expected: Put | None
) -> None:
    """The put fast path accepts exactly what the full decoder accepts."""
    data = msgpack.packb({"v": 1, "op": "put", **fields}, use_bin_type=True)
    if expected is None:
        with pytest.raises(InvalidRequestError):
            decode_command(data)
    else:
        assert expected == decode_command(data).command
