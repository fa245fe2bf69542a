"""The content hash (concord/kv/content.py) and its paged read op `hash_content`."""

from __future__ import annotations

from concord.kv import KvStateMachine
from concord.kv.content import content_hash
from tests.kv.helpers import Driver


def _content(sm: KvStateMachine, now_ms: int) -> tuple[int, int]:
    return content_hash(sm.records(), now_ms)


def test_content_hash_is_equal_when_only_revisions_compression_and_expiry_times_differ() -> None:
    """Same keys, values and TTL-or-not, other history: equal content, different state hash."""
    a, b = Driver(KvStateMachine()), Driver(KvStateMachine(), ts_ms=50_000)
    a.do("put", {"key": "k", "value": "old"})
    a.do("put", {"key": "k", "value": {"big": "x" * 5000}, "compress": True})
    a.do("put", {"key": "t", "value": 1, "ttl": 100})
    b.do("put", {"key": "t", "value": 1, "ttl": 30})
    b.do("put", {"key": "k", "value": {"big": "x" * 5000}, "compress": False})
    assert _content(a.sm, 1_000) == _content(b.sm, 50_000)
    assert 2 == _content(a.sm, 1_000)[1]
    assert a.sm.state_hash() != b.sm.state_hash()


def test_content_hash_differs_when_a_value_a_key_or_a_ttl_flag_differs() -> None:
    """Each of value, key and TTL presence is covered."""
    base = Driver(KvStateMachine())
    base.do("put", {"key": "k", "value": 1})
    expected = _content(base.sm, 1_000)
    for key, value, ttl in (("k", 2, None), ("j", 1, None), ("k", 1, 60)):
        other = Driver(KvStateMachine())
        other.do("put", {"key": key, "value": value, "ttl": ttl})
        assert expected != _content(other.sm, 1_000), (key, value, ttl)


def test_hash_content_pages_add_up_to_the_whole_when_read_in_pages() -> None:
    """The read op's pages, summed mod 2**64, give the content hash; due keys are left out."""
    d = Driver(KvStateMachine())
    for i in range(25):
        d.do("put", {"key": f"k{i:02d}", "value": i})
    d.do("put", {"key": "gone", "value": 0, "ttl": 1})
    now = 5_000  # "gone" is due
    total, keys, after, more = 0, 0, None, True
    while more:
        args: dict[str, object] = {"limit": 7} if after is None else {"limit": 7, "after": after}
        page = d.sm.read("hash_content", args, now)
        assert isinstance(page["hash"], int) and isinstance(page["keys"], int)
        total, keys = (total + page["hash"]) % (1 << 64), keys + page["keys"]
        after, more = page["last"], bool(page["more"])
    assert (total, keys) == _content(d.sm, now)
    assert 25 == keys
