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

#: Where the public names of `__all__` not defined here live. `import concord.raft` (or
#: any other subpackage) runs this file, and must not pull in the client, pyzmq, msgpack
#: or xxhash: a name is imported from these modules on its first use (PEP 562).
_LAZY_MODULES = ("concord.client", "concord.client.api", "concord.embedded")


def __getattr__(name: str) -> object:
    if name in __all__:
        for module_name in _LAZY_MODULES:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value  # later lookups skip __getattr__
                return value
    raise AttributeError(f"module 'concord' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
