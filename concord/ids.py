"""
Identifier types shared by every layer.

`NodeId` is the member id string from the config ("n1"); it is never reused and is a
different type from an endpoint address.
"""

from __future__ import annotations

from typing import Final, NewType

NodeId = NewType("NodeId", str)
Term = NewType("Term", int)
Index = NewType("Index", int)
RequestId = NewType("RequestId", int)

#: The rule for a member id (config, `add_member`), as error messages state it. Every
#: name derived from an id (shm segments, ipc folders, routing ids, the shm status) is
#: sized for the longest id it allows.
NODE_ID_RULE: Final = (
    "1-64 characters, each a letter or digit (any script), '_', '.' or '-', "
    "at most 128 bytes in UTF-8"
)
NODE_ID_MAX_CHARS: Final = 64
NODE_ID_MAX_BYTES: Final = 128


def is_node_id(value: object) -> bool:
    """Whether `value` is a valid member id (NODE_ID_RULE); ids compare exactly."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= NODE_ID_MAX_CHARS
        and all(c.isalnum() or c in "_.-" for c in value)
        and len(value.encode("utf-8")) <= NODE_ID_MAX_BYTES
    )


__all__ = [
    "NODE_ID_MAX_BYTES",
    "NODE_ID_MAX_CHARS",
    "NODE_ID_RULE",
    "NodeId",
    "Term",
    "Index",
    "RequestId",
    "is_node_id",
]
