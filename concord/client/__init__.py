"""
The Python client of Concord (docs/client.md): `Client`, its typed results, and the
module-level API over a default client (`concord.client.api`).

Depends only on concord.net (the wire table and envelope) and concord.errors; the
optional same-host shared-memory reads (concord.client.local) also use concord.shm and
concord.kv to decode stored values.
"""

from __future__ import annotations

from concord.client.client import OPS_KIND, Client, OpKind, Outcome
from concord.client.results import (
    MISSING,
    BulkDeleteResult,
    DeleteResult,
    Event,
    EventsPage,
    KeysPage,
    Missing,
    Page,
    ValueWithMeta,
    ValueWithTTL,
)

__all__ = [
    "Client",
    "OpKind",
    "Outcome",
    "OPS_KIND",
    "MISSING",
    "Missing",
    "ValueWithMeta",
    "ValueWithTTL",
    "DeleteResult",
    "BulkDeleteResult",
    "Page",
    "KeysPage",
    "Event",
    "EventsPage",
]
