"""
The keyspace a requester reads (concord.auth): a tenant's keys without their prefix, the
root keyspace without tenant keys, or every key. `KeySource` views over any source (the
state machine, the shared-memory reader), so every read op and the query engine run on
them unchanged.

Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from concord.auth.state import Principal
from concord.auth.tenants import AFTER_TENANTS, TENANT_MARK, key_prefix
from concord.kv.index import IndexSet
from concord.kv.query import KeySource
from concord.kv.record import KeyRecord

__all__ = ["RootSource", "ScopedSource", "record_bytes", "scoped"]


def scoped(principal: Principal | None, inner: KeySource) -> KeySource:
    """
    The keyspace `principal` sees: its tenant's (keys without the prefix), the root
    keyspace without tenant keys, or everything for a cluster admin (and with auth off).
    """
    if principal is None:
        return inner
    if principal.tenant is not None:
        return ScopedSource(inner, principal.tenant)
    return inner if principal.is_cluster_admin else RootSource(inner)


def record_bytes(record: KeyRecord) -> int:
    """What a stored record counts against its tenant's byte quota."""
    return len(record.key.encode("utf-8")) + len(record.value)


class ScopedSource:
    """
    A tenant's view of a KeySource: keys without the tenant prefix, and only the tenant's.

    The query engine and every read op run on it unchanged, so prefix, suffix, contains,
    regex, ranges and paging mean the same for a tenant as for the root keyspace.
    """

    def __init__(self, inner: KeySource, tenant: str) -> None:
        self._inner = inner
        self._prefix = key_prefix(tenant)

    def get_record(self, key: str) -> KeyRecord | None:
        record = self._inner.get_record(self._prefix + key)
        return None if record is None else replace(record, key=key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        prefix = self._prefix
        n = len(prefix)
        for key in self._inner.iter_keys(prefix + (start or ""), inclusive or start is None):
            if not key.startswith(prefix):
                return
            yield key[n:]

    def index_set(self) -> IndexSet | None:
        # NB: secondary indexes span the whole store: a tenant cannot use them (the op
        # table gives index ops to root tokens only).
        return None


class RootSource:
    """The root keyspace without tenant keys (what root tokens other than admin see)."""

    def __init__(self, inner: KeySource) -> None:
        self._inner = inner

    def get_record(self, key: str) -> KeyRecord | None:
        return None if key.startswith(TENANT_MARK) else self._inner.get_record(key)

    def iter_keys(self, start: str | None = None, inclusive: bool = True) -> Iterator[str]:
        # Tenant keys form one block: every key from TENANT_MARK up to (not including)
        # AFTER_TENANTS. Skip it with one seek instead of walking it.
        for key in self._inner.iter_keys(start, inclusive):
            if key.startswith(TENANT_MARK):
                break
            yield key
        else:
            return
        resume = AFTER_TENANTS if start is None or start < AFTER_TENANTS else start
        yield from self._inner.iter_keys(resume, inclusive or resume != start)

    def index_set(self) -> IndexSet | None:
        return self._inner.index_set()
