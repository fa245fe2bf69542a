"""
The record store under the kv state machine: user and SYSTEM records, the key and
expiry orders, secondary indexes, the incremental record digest and tenant usage, and
the storage primitives every mutation goes through (`_store`, `_remove`,
`_store_system`, `_remove_system`), which keep all of those consistent.

`RecordStore` is a base class of concord.kv.machine.KvStateMachine, which owns and
initialises the attributes declared here. Deterministic: nothing here depends on dict
or set iteration order. No IO.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from sortedcontainers import SortedList

from concord.auth.state import AUTH_PREFIX, AuthState
from concord.auth.tenants import AFTER_TENANTS as _AFTER_TENANTS
from concord.auth.tenants import TENANT_MARK, Usage, tenant_of
from concord.kv.index import IndexSet
from concord.kv.record import KeyRecord, Space
from concord.kv.scope import record_bytes
from concord.kv.snapshot import record_digest

_MASK: Final = (1 << 64) - 1


class RecordStore:
    """The stored records and what is derived from them (attributes set by KvStateMachine)."""

    _user: dict[str, KeyRecord]
    _keys: SortedList
    _system: dict[str, KeyRecord]
    _expiry: SortedList  # (expires_at_ms, key) of user keys
    _indexes: IndexSet
    # Sum of record digests mod 2**64. The digest of a stored record is computed again
    # when it is replaced or removed (~0.7 us), not cached per key: a cache costs ~75
    # bytes per key in every process holding a state machine.
    _digest: int
    auth: AuthState
    usage: dict[str, Usage]  # tenant -> stored keys and bytes

    def records(self) -> Iterator[KeyRecord]:
        """Every stored user record in key order (due ones included)."""
        return map(self._user.__getitem__, self._keys)

    def system_records(self) -> list[KeyRecord]:
        """Every SYSTEM record in key order."""
        return [self._system[k] for k in sorted(self._system)]

    def _store(self, record: KeyRecord, old: KeyRecord | None, same_value: bool = False) -> None:
        """Store a user record over `old` (the key's stored record, due or not, or None)."""
        key = record.key
        digest = self._digest
        if old is None:
            self._keys.add(key)
        else:
            digest -= record_digest(Space.USER, old)
            if old.expires_at_ms:
                self._expiry.remove((old.expires_at_ms, key))
        if key[0] == TENANT_MARK:
            if old is not None:
                self._count_usage(old, -1)
            self._count_usage(record, 1)
        self._user[key] = record
        self._digest = (digest + record_digest(Space.USER, record)) & _MASK
        if record.expires_at_ms:
            self._expiry.add((record.expires_at_ms, key))
        if self._indexes and not same_value:
            self._indexes.update(key, record)

    def _remove(self, key: str) -> None:
        old = self._user.pop(key)
        self._keys.remove(key)
        if key[0] == TENANT_MARK:
            self._count_usage(old, -1)
        if old.expires_at_ms:
            self._expiry.remove((old.expires_at_ms, key))
        self._digest = (self._digest - record_digest(Space.USER, old)) & _MASK
        if self._indexes:
            self._indexes.update(key, None)

    def _store_system(self, record: KeyRecord) -> None:
        old = self._system.get(record.key)
        digest = self._digest
        if old is not None:
            digest -= record_digest(Space.SYSTEM, old)
        self._system[record.key] = record
        self._digest = (digest + record_digest(Space.SYSTEM, record)) & _MASK
        if record.key.startswith(AUTH_PREFIX):
            self.auth.set_record(record.key, record.value)

    def _remove_system(self, key: str) -> None:
        old = self._system.pop(key)
        self._digest = (self._digest - record_digest(Space.SYSTEM, old)) & _MASK
        if key.startswith(AUTH_PREFIX):
            self.auth.set_record(key, None)

    def _count_usage(self, record: KeyRecord, sign: int) -> None:
        tenant = tenant_of(record.key)
        if tenant is not None:
            usage = self.usage.get(tenant, Usage()).plus(sign, sign * record_bytes(record))
            if usage.keys:
                self.usage[tenant] = usage
            else:
                self.usage.pop(tenant, None)

    def _recount_usage(self) -> None:
        self.usage.clear()
        for key in self._keys.irange(minimum=TENANT_MARK, maximum=_AFTER_TENANTS,
                                     inclusive=(True, False)):
            self._count_usage(self._user[key], 1)

    def _full_digest(self) -> int:
        total = 0
        for record in self._user.values():
            total += record_digest(Space.USER, record)
        for record in self._system.values():
            total += record_digest(Space.SYSTEM, record)
        return total & _MASK
