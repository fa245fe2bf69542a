"""
Identifier types shared by every layer.

`NodeId` is the member id string from the config ("n1"); it is never reused and is a
different type from an endpoint address.
"""

from __future__ import annotations

from typing import NewType

NodeId = NewType("NodeId", str)
Term = NewType("Term", int)
Index = NewType("Index", int)
RequestId = NewType("RequestId", int)

__all__ = ["NodeId", "Term", "Index", "RequestId"]
