"""
Concord: a distributed, strongly consistent key-value store for coordination data.

The public API is what `__all__` lists; a test asserts it. Names from the client and the
embedded node are imported on first use, so that importing a subpackage (`concord.raft`,
`concord.kv`, ...) loads nothing else. Module-level functions
(`concord.put`, `concord.get`, ...) use the default client set by `concord.connect`, or by
`concord.start`, which runs a node as a child of the application.
"""

from __future__ import annotations

import importlib
import logging
import typing

from concord import errors
from concord.errors import ConcordError

if typing.TYPE_CHECKING:
    from concord.client import (
        MISSING,
        BulkDeleteResult,
        Client,
        DeleteResult,
        Event,
        EventsPage,
        KeysPage,
        Page,
        ValueWithMeta,
        ValueWithTTL,
    )
    from concord.client.api import (
        add_member,
        connect,
        count,
        default_client,
        delete,
        delete_if,
        delete_many,
        delete_where,
        disconnect,
        events,
        get,
        get_all,
        get_many,
        get_with_ttl,
        keys,
        members,
        promote_member,
        put,
        put_if,
        put_many,
        query,
        remove_member,
        status,
        touch,
        touch_many,
        transfer_leader,
        ttl,
    )
    from concord.embedded import EmbeddedNode, start

__version__ = "0.1.0"

# A library logs through a NullHandler: an application that has not configured logging
# gets no "No handlers could be found" fallback lines on stderr (Python logging HOWTO,
# "Configuring Logging for a Library"). Node processes configure the root logger.
logging.getLogger("concord").addHandler(logging.NullHandler())
logging.getLogger("supervisor").addHandler(logging.NullHandler())

#: Where each lazily imported public name lives. `import concord.raft` (or any other
#: subpackage) runs this file, and must not pull in the client, pyzmq, msgpack or xxhash:
#: they are imported on first use of a name (PEP 562).
_LAZY: dict[str, str] = {
    "MISSING": "concord.client",
    "BulkDeleteResult": "concord.client",
    "Client": "concord.client",
    "DeleteResult": "concord.client",
    "Event": "concord.client",
    "EventsPage": "concord.client",
    "KeysPage": "concord.client",
    "Page": "concord.client",
    "ValueWithMeta": "concord.client",
    "ValueWithTTL": "concord.client",
    "add_member": "concord.client.api",
    "connect": "concord.client.api",
    "count": "concord.client.api",
    "default_client": "concord.client.api",
    "delete": "concord.client.api",
    "delete_if": "concord.client.api",
    "delete_many": "concord.client.api",
    "delete_where": "concord.client.api",
    "disconnect": "concord.client.api",
    "events": "concord.client.api",
    "get": "concord.client.api",
    "get_all": "concord.client.api",
    "get_many": "concord.client.api",
    "get_with_ttl": "concord.client.api",
    "keys": "concord.client.api",
    "members": "concord.client.api",
    "promote_member": "concord.client.api",
    "put": "concord.client.api",
    "put_if": "concord.client.api",
    "put_many": "concord.client.api",
    "query": "concord.client.api",
    "remove_member": "concord.client.api",
    "status": "concord.client.api",
    "touch": "concord.client.api",
    "touch_many": "concord.client.api",
    "transfer_leader": "concord.client.api",
    "ttl": "concord.client.api",
    "EmbeddedNode": "concord.embedded",
    "start": "concord.embedded",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'concord' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConcordError",
    "errors",
    "__version__",
    "Client",
    "start",
    "EmbeddedNode",
    "MISSING",
    "ValueWithMeta",
    "ValueWithTTL",
    "DeleteResult",
    "BulkDeleteResult",
    "Page",
    "KeysPage",
    "Event",
    "EventsPage",
    "connect",
    "disconnect",
    "default_client",
    "put",
    "get",
    "delete",
    "put_many",
    "get_many",
    "delete_many",
    "touch",
    "touch_many",
    "ttl",
    "get_with_ttl",
    "get_all",
    "put_if",
    "delete_if",
    "keys",
    "query",
    "count",
    "delete_where",
    "events",
    "status",
    "members",
    "add_member",
    "remove_member",
    "promote_member",
    "transfer_leader",
]
