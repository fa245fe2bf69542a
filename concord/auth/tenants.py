"""
Tenants: namespaces with their own keyspace, bound to tokens, with quotas.

Pure. A tenant's key `k` is stored as the user key

    TENANT_MARK + tenant + TENANT_MARK + k        (TENANT_MARK = "\\x1f", unit separator)

so each tenant's keys form one contiguous range of the sorted store and a prefix scan
never crosses into another tenant. A request of a tenant-bound token names keys without
the prefix (`concord.kv.scope.ScopedSource` adds and strips it); the max_key_bytes limit
applies to the stored key, prefix included. Root (tenant-less) tokens other than admin
never reach keys starting with TENANT_MARK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from concord.errors import InvalidRequestError

TENANT_MARK: Final = "\x1f"
TENANT_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
AFTER_TENANTS: Final = chr(ord(TENANT_MARK) + 1)


def check_tenant_name(name: object) -> str:
    if not isinstance(name, str) or TENANT_NAME_RE.fullmatch(name) is None:
        raise InvalidRequestError(f"tenant name must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}")
    return name


def key_prefix(tenant: str) -> str:
    """The stored-key prefix of a tenant's keyspace."""
    return f"{TENANT_MARK}{tenant}{TENANT_MARK}"


def tenant_of(stored_key: str) -> str | None:
    """The tenant owning a stored key, or None for a root key."""
    if not stored_key.startswith(TENANT_MARK):
        return None
    end = stored_key.find(TENANT_MARK, 1)
    return stored_key[1:end] if end > 1 else None


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's limits; 0 means unlimited."""

    max_keys: int = 0
    max_bytes: int = 0
    write_rate: float = 0.0  # writes per second, cluster-wide (enforced by the leader)
    read_rate: float = 0.0  # reads per second, per node (enforced by each node)

    def to_map(self) -> dict[str, object]:
        return {"max_keys": self.max_keys, "max_bytes": self.max_bytes,
                "write_rate": self.write_rate, "read_rate": self.read_rate}


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's stored keys and bytes (UTF-8 key bytes + stored value bytes)."""

    keys: int = 0
    bytes: int = 0

    def plus(self, keys: int, nbytes: int) -> Usage:
        return replace(self, keys=self.keys + keys, bytes=self.bytes + nbytes)
