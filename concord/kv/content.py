"""
The content hash: what two clusters (or a cluster and a backup) hold, without the
history of how it got there (docs/formats/kv.md "Content hash").

    content_digest(record) = xxh3_64(msgpack [key: str, value, expires: bool])
    content hash           = (sum of content_digest over the live user keys) mod 2**64

`value` is the decoded value packed again (`use_bin_type=True`), so a value stored
compressed and the same value stored plain digest alike. `expires` says whether the key
has a TTL: the expiry moment is cluster time, which an import into another cluster
cannot reproduce (the target stamps its own entries), so the hash covers THAT a key
expires, not when. Revisions, versions, the system keyspace (indexes) and client
sessions are left out. A sum of per-key digests can be computed in pages (`hash_content`
op, docs/protocol.md) and the pages added up.

Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack
import xxhash

from concord.kv.record import KeyRecord
from concord.kv.values import record_value

__all__ = ["CONTENT_MASK", "content_digest", "content_hash"]

CONTENT_MASK = (1 << 64) - 1


def content_digest(record: KeyRecord) -> int:
    """The record's term of the content hash (module docstring)."""
    packed: bytes = msgpack.packb([record.key, record_value(record), record.expires_at_ms != 0],
                                  use_bin_type=True)
    return xxhash.xxh3_64_intdigest(packed)


def content_hash(records: Iterable[KeyRecord], now_ms: int) -> tuple[int, int]:
    """(content hash, key count) of the records live at cluster time `now_ms`."""
    total = keys = 0
    for record in records:
        if record.expires_at_ms == 0 or record.expires_at_ms > now_ms:
            total += content_digest(record)
            keys += 1
    return total & CONTENT_MASK, keys
