"""
The field checks of kv commands, shared by the leader's builders (concord.kv.builders)
and apply's decoders (concord.kv.commands): keys, index names, integers, ttls, stored
values, item counts, duplicate keys. Each raises a ClientError naming the problem
(InvalidRequestError, InvalidKeyError, ValueTooLargeError, TooManyItemsError).

Pure. No clock, no randomness.
"""

from __future__ import annotations

import math
import re
from typing import Final

from concord.errors import (
    InvalidKeyError,
    InvalidRequestError,
    TooManyItemsError,
    ValueTooLargeError,
)
from concord.kv.config import KvConfig
from concord.kv.record import RecordFlags

#: The range of an integer a counter may hold (msgpack's signed 64-bit).
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1

_INDEX_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def check_key(key: object, config: KvConfig) -> str:
    """
    Validate a key: a str of 1..max_key_bytes UTF-8 bytes.

    Raises:
        InvalidKeyError.
    """
    if type(key) is str and key.isascii() and 0 < len(key) <= config.max_key_bytes:
        return key  # fast path
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string, got {type(key).__name__}")
    n = len(key)
    if n == 0:
        raise InvalidKeyError("key is empty")
    if not key.isascii():
        try:
            n = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"key {key!r} is not valid UTF-8") from exc
    if n > config.max_key_bytes:
        raise InvalidKeyError(f"key is {n} bytes, more than max_key_bytes {config.max_key_bytes}")
    return key


def check_name(name: object) -> str:
    """Validate an index name: 1..128 of [A-Za-z0-9_.-]."""
    if not isinstance(name, str) or _INDEX_NAME.fullmatch(name) is None:
        raise InvalidRequestError(f"index name must match [A-Za-z0-9_.-]{{1,128}}, got {name!r}")
    return name


def _int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def ttl_to_ms(ttl: object, config: KvConfig) -> int:
    """
    Convert a wire `ttl` (seconds, int or float, > 0; nil for none) to milliseconds (0 none).

    Raises:
        InvalidRequestError.
    """
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidRequestError(f"ttl must be a number of seconds, got {ttl!r}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidRequestError(f"ttl must be positive, got {ttl!r}")
    # NB: compare in seconds first: a finite float such as 1e308 overflows to inf when
    # multiplied by 1000, and math.ceil(inf) raises OverflowError (it crashed the leader).
    if ttl > config.max_ttl_ms / 1000 or max(1, math.ceil(ttl * 1000)) > config.max_ttl_ms:
        raise InvalidRequestError(f"ttl {ttl} s exceeds the maximum {config.max_ttl_ms / 1000} s")
    return max(1, math.ceil(ttl * 1000))


def _check_ttl_ms(value: object, config: KvConfig) -> int:
    if type(value) is int and 0 <= value <= config.max_ttl_ms:
        return value  # fast path
    ms = _int(value, "ttl_ms")
    if ms > config.max_ttl_ms:
        raise InvalidRequestError(f"ttl_ms {ms} exceeds max_ttl_ms {config.max_ttl_ms}")
    return ms


def _check_stored(value: object, flags: object, config: KvConfig) -> tuple[bytes, int]:
    if type(value) is bytes and (flags == 0 or flags == 1) and type(flags) is int:
        if len(value) <= config.max_value_bytes:
            return value, flags  # fast path
    if not isinstance(value, bytes):
        raise InvalidRequestError(f"value must be bin, got {type(value).__name__}")
    flags_int = _int(flags, "flags")
    if flags_int & ~int(RecordFlags.COMPRESSED):
        raise InvalidRequestError(f"unknown record flags {flags_int}")
    if len(value) > config.max_value_bytes:
        raise ValueTooLargeError(
            f"value is {len(value)} bytes, more than max_value_bytes {config.max_value_bytes}"
        )
    return value, flags_int


def _check_count(items: object, what: str, config: KvConfig) -> list[object]:
    if not isinstance(items, list):
        raise InvalidRequestError(f"{what} must be a list")
    if len(items) > config.max_items:
        raise TooManyItemsError(f"{len(items)} {what}, more than the maximum {config.max_items}")
    return items


def _decode_keys(raw: object, config: KvConfig, limited: bool = True) -> tuple[str, ...]:
    keys = _check_count(raw, "keys", config) if limited else raw
    if not isinstance(keys, list):
        raise InvalidRequestError("keys must be a list")
    return tuple(check_key(k, config) for k in keys)


def _no_duplicates(keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise InvalidRequestError(f"key {key!r} appears twice")
            seen.add(key)
