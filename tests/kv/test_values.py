"""Value encoding, field paths, typed comparison, and config validation."""

from __future__ import annotations

import hashlib
import math

import pytest

from concord.errors import ConfigError
from concord.kv import KvConfig, RecordFlags
from concord.kv.values import (
    MISSING,
    compare,
    decode_stored,
    encode_value,
    parse_path,
    resolve,
    sort_key,
    values_equal,
)


def test_encode_value_skips_compression_when_it_does_not_pay() -> None:
    """Incompressible data over the threshold is stored raw unless compression is forced."""
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(32))
    data, flags = encode_value(noise, max_value_bytes=10_000, threshold_bytes=10, level=6)
    assert RecordFlags.NONE == flags
    data, flags = encode_value(
        noise, max_value_bytes=10_000, threshold_bytes=10, level=6, compress=True
    )
    assert RecordFlags.COMPRESSED == flags
    assert noise == decode_stored(data, flags)


def test_decode_stored_raises_value_error_when_bytes_are_corrupt() -> None:
    """Corrupt stored values raise ValueError (zlib and msgpack errors translated)."""
    for data, flags in [(b"\xc1", 0), (b"nope", 1), (b"\x92\x01", 0)]:
        with pytest.raises(ValueError):
            decode_stored(data, flags)


@pytest.mark.parametrize(
    ("field", "path"),
    [("", ()), ("a", ("a",)), ("a.b.0", ("a", "b", "0")), (["a.b", 0], ("a.b", 0))],
)
def test_parse_path_splits_field_when_valid(field: object, path: tuple[object, ...]) -> None:
    """Dotted strings split on dots; lists are taken as they are."""
    assert path == parse_path(field)


def test_resolve_returns_missing_when_path_does_not_resolve() -> None:
    """Out-of-range indexes, absent keys and scalars in the way give MISSING."""
    value = {"a": [1, {"b": 2}], 5: "five"}
    assert 2 == resolve(value, ("a", "1", "b"))
    assert "five" == resolve(value, ("5",))
    for path in [("a", "2"), ("z",), ("a", "0", "x"), ("a", "x")]:
        assert MISSING is resolve(value, path)


def test_values_equal_follows_kinds_when_comparing() -> None:
    """Numbers compare numerically; bool, nil, str and bytes only with their own kind."""
    assert values_equal(1, 1.0)
    assert not values_equal(1, True)
    assert not values_equal("a", b"a")
    assert values_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not values_equal([1], [1, 2])
    assert not values_equal(math.nan, math.nan)


def test_compare_is_none_when_values_are_not_ordered() -> None:
    """Different kinds, containers and NaN are not ordered."""
    assert -1 == compare(1, 2.5)
    assert 1 == compare("b", "a")
    assert 0 == compare(b"x", b"x")
    for a, b in [(1, "1"), ([1], [2]), (math.nan, 1.0), (None, None)]:
        assert compare(a, b) is None


def test_sort_key_orders_kinds_when_values_differ() -> None:
    """nil < bool < numbers < str < bytes; containers and NaN are not indexable."""
    keys = [sort_key(v) for v in [None, False, -1, 2.5, "a", b"a"]]
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert sort_key([1]) is None and sort_key(math.nan) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_key_bytes": 0}, "max_key_bytes"),
        ({"max_items": True}, "max_items"),
        ({"compress_level": 10}, "compress_level"),
        ({"compress_threshold_bytes": -1}, "compress_threshold_bytes"),
        ({"default_limit": 10, "max_limit": 5}, "default_limit"),
    ],
)
def test_config_validate_names_field_when_invalid(
    overrides: dict[str, int], message: str
) -> None:
    """A bad setting raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        KvConfig(**overrides).validate()
