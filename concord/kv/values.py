"""
Values: their stored encoding, field paths into them, and typed comparison.

Pure. A value is any msgpack value (nil, bool, int, float, str, bytes, list, map). It is
stored as its msgpack encoding (`use_bin_type=True`), zlib-compressed when the record
carries `RecordFlags.COMPRESSED`. Comparison rules, shared by CAS (`expected`), query
filters and secondary indexes:

- numbers (int and float, never bool) compare by numeric value: 1 == 1.0;
- nil, bool, str, bytes compare only with their own kind; lists and maps compare
  element-wise (maps: same keys, equal values) and are never ordered;
- values of different kinds are never equal and never ordered (lt/gt are false).
"""

from __future__ import annotations

import math
import zlib
from typing import Final, Union

import msgpack

from concord.errors import InvalidRequestError, ValueTooLargeError
from concord.kv.record import KeyRecord, RecordFlags

PathPart = Union[str, int]
Path = tuple[PathPart, ...]


class _Missing:
    """Marks a field path that does not resolve."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_SCALARS = (str, bytes, int, float, bool, type(None))


def check_value(value: object) -> None:
    """
    Check that `value` holds only msgpack-native types (no ext types, no other objects).

    Raises:
        InvalidRequestError: naming the first unsupported type.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        if type(item) is list or type(item) is tuple:
            stack.extend(item)
        elif type(item) is dict:
            for k, v in item.items():
                if not isinstance(k, _SCALARS):
                    raise InvalidRequestError(f"map key of type {type(k).__name__} is not allowed")
                stack.append(v)
        else:
            raise InvalidRequestError(f"value of type {type(item).__name__} is not allowed")


def pack_value(value: object) -> bytes:
    """
    Encode a value as msgpack after checking its types.

    Raises:
        InvalidRequestError: the value holds a type msgpack values may not hold, or an
            integer out of the 64-bit range.
    """
    check_value(value)
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidRequestError(f"value cannot be encoded: {exc}") from exc
    return packed


def encode_value(
    value: object,
    *,
    max_value_bytes: int,
    threshold_bytes: int,
    level: int,
    compress: bool | None = None,
) -> tuple[bytes, RecordFlags]:
    """
    Encode a value for storage, compressing it when that is asked for or pays off.

    Args:
        value: the value.
        max_value_bytes: limit on the uncompressed encoding.
        threshold_bytes: with `compress=None`, encodings longer than this are compressed.
        level: zlib level.
        compress: True always compresses, False never, None uses the threshold.

    Returns:
        (stored bytes, flags). With `compress=None` a value whose compressed form is not
        shorter is stored uncompressed.

    Raises:
        InvalidRequestError, ValueTooLargeError.
    """
    packed = pack_value(value)
    if len(packed) > max_value_bytes:
        raise ValueTooLargeError(
            f"value encodes to {len(packed)} bytes, more than max_value_bytes {max_value_bytes}"
        )
    if compress is False or (compress is None and len(packed) <= threshold_bytes):
        return packed, RecordFlags.NONE
    squeezed = zlib.compress(packed, level)
    if compress is None and len(squeezed) >= len(packed):
        return packed, RecordFlags.NONE
    return squeezed, RecordFlags.COMPRESSED


def decode_stored(data: bytes, flags: int) -> object:
    """
    Decode a stored value (decompressing it first when flagged).

    Raises:
        ValueError: the bytes are not a valid stored value (zlib.error and msgpack errors
            are translated).
    """
    try:
        if flags & RecordFlags.COMPRESSED:
            data = zlib.decompress(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (zlib.error, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"stored value does not decode: {exc}") from exc


def record_value(record: KeyRecord) -> object:
    """The decoded value of a record."""
    return decode_stored(record.value, record.flags)


def raw_value(record: KeyRecord) -> bytes:
    """The uncompressed msgpack encoding of a record's value."""
    if record.flags & RecordFlags.COMPRESSED:
        return zlib.decompress(record.value)
    return record.value


def parse_path(field: object) -> Path:
    """
    Parse a field path: "a.b.0" or a list of parts ["a", "b.c", 0]; "" is the whole value.

    Raises:
        InvalidRequestError: bad path shape.
    """
    if isinstance(field, str):
        if field == "":
            return ()
        parts = field.split(".")
        if any(p == "" for p in parts):
            raise InvalidRequestError(f"field path {field!r} has an empty part")
        return tuple(parts)
    if isinstance(field, (list, tuple)):
        out: list[PathPart] = []
        for part in field:
            if isinstance(part, bool) or not isinstance(part, (str, int)):
                raise InvalidRequestError(
                    f"field path parts must be strings or integers, got {part!r}"
                )
            out.append(part)
        return tuple(out)
    raise InvalidRequestError(f"field path must be a string or a list, got {field!r}")


def resolve(value: object, path: Path) -> object:
    """
    Follow `path` into `value`.

    A string part indexes a map (a map with integer keys also accepts a digit string);
    an integer part, or a digit string, indexes a list (negative counts from the end).

    Returns:
        The value found, or MISSING.
    """
    current = value
    for part in path:
        if type(current) is dict:
            if part in current:
                current = current[part]
            elif isinstance(part, str) and _is_int(part) and int(part) in current:
                current = current[int(part)]
            else:
                return MISSING
        elif type(current) is list:
            if isinstance(part, str):
                if not _is_int(part):
                    return MISSING
                position = int(part)
            else:
                position = part
            if -len(current) <= position < len(current):
                current = current[position]
            else:
                return MISSING
        else:
            return MISSING
    return current


def _is_int(text: str) -> bool:
    body = text[1:] if text.startswith("-") else text
    return body.isdigit() and body.isascii()


def _kind(value: object) -> int:
    """Kinds: 0 nil, 1 bool, 2 number, 3 str, 4 bytes, 5 list, 6 map, 7 other."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, bytes):
        return 4
    if isinstance(value, (list, tuple)):
        return 5
    if isinstance(value, dict):
        return 6
    return 7


def values_equal(a: object, b: object) -> bool:
    """Typed equality (see the module docstring)."""
    ka = _kind(a)
    if ka != _kind(b):
        return False
    if ka == 5:
        assert isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if ka == 6:
        assert isinstance(a, dict) and isinstance(b, dict)
        if len(a) != len(b):
            return False
        for key, item in a.items():
            if key not in b or not values_equal(item, b[key]):
                return False
        return True
    return a == b


def compare(a: object, b: object) -> int | None:
    """
    Order two values: -1, 0 or 1, or None when they are not ordered (different kinds,
    lists, maps, NaN).
    """
    ka = _kind(a)
    if ka != _kind(b) or ka not in (1, 2, 3, 4):
        return None
    if ka == 2 and (_isnan(a) or _isnan(b)):
        return None
    # Invariant: a and b are of one ordered kind here.
    if a < b:  # type: ignore[operator]
        return -1
    if a > b:  # type: ignore[operator]
        return 1
    return 0


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


SortKey = tuple[int, object]


def sort_key(value: object) -> SortKey | None:
    """
    The key a secondary index orders a scalar by, or None if it is not indexable (lists,
    maps, NaN). Kinds order nil < bool < numbers < str < bytes.
    """
    kind = _kind(value)
    if kind == 0:
        return (0, 0)
    if kind == 1:
        return (1, int(bool(value)))
    if kind == 2:
        return None if _isnan(value) else (2, value)
    if kind in (3, 4):
        return (kind, value)
    return None
