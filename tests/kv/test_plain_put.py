"""The leader's plain-put fast path: the same command bytes as the general encoder."""

from __future__ import annotations

import pytest

from concord.kv import KvConfig, encode_command
from concord.kv.commands import encode_plain_put

SMALL = KvConfig(max_key_bytes=8, max_value_bytes=64, max_items=3, compress_threshold_bytes=40)


@pytest.mark.parametrize("key", ["k", "key-0001", "a" * 8])
@pytest.mark.parametrize("value", [b"", b"x" * 37, "", "text", "t" * 37])
def test_plain_put_equals_encode_command_when_it_applies(key: str, value: object) -> None:
    """Byte for byte what encode_command builds for {"key", "value"}."""
    assert encode_command("put", {"key": key, "value": value}, config=SMALL) == encode_plain_put(key, value, SMALL)


@pytest.mark.parametrize("key, value", [
    ("", b"v"),            # empty key: the general path explains
    ("a" * 9, b"v"),       # key over max_key_bytes
    ("clé", b"v"),         # non-ASCII key: its UTF-8 length is the general path's to judge
    (1, b"v"),             # not a str
    ("k", b"x" * 39),      # encodes past compress_threshold_bytes: compression is judged
    ("k", 1),              # any other value type
    ("k", [b"v"]),
    ("k", None),
])
def test_plain_put_declines_when_the_general_path_must_judge(key: object, value: object) -> None:
    """Anything but an in-limit ASCII key and a small bytes or str value goes the long way."""
    assert encode_plain_put(key, value, SMALL) is None
