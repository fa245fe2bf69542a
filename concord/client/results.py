"""
Typed results of the client ops (reply shapes: docs/protocol.md, docs/formats/kv.md).

Pure data: frozen dataclasses built from decoded reply maps. A reply that lacks a field
the op promises, or carries one of the wrong type, raises RemoteProtocolError naming the
op and the field: a malformed server answer never turns into a silent wrong value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Mapping

from concord.errors import RemoteProtocolError
from concord.kv.record import MISSING, ChangeType, Missing

__all__ = [
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


# `MISSING` is also passed to a `put_if(..., condition=fn)` callable when the key is absent.


@dataclass(frozen=True, slots=True)
class ValueWithMeta:
    """
    A value with its key's metadata (`get(key, meta=True)`).

    Attributes:
        value: the value.
        revision: the key's mod_revision (store revision of its last put or touch).
        version: puts since the key was created (1 after the first).
        create_revision: store revision of the put that created the key.
        ttl: seconds left before expiry, None if the key never expires.
    """

    value: object
    revision: int
    version: int
    create_revision: int
    ttl: float | None


@dataclass(frozen=True, slots=True)
class ValueWithTTL:
    """A value and its seconds left (`get_with_ttl`); ttl None: never expires."""

    value: object
    ttl: float | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """`delete` / `delete_if`: whether the key existed, and the store revision after."""

    deleted: bool
    revision: int


@dataclass(frozen=True, slots=True)
class BulkDeleteResult:
    """`delete_many` / `delete_where`: how many keys were deleted, and the store revision."""

    deleted: int
    revision: int


@dataclass(frozen=True, slots=True)
class Page:
    """`get_all` / `query`: (key, value) pairs in key order; `more`: matches follow."""

    items: tuple[tuple[str, object], ...]
    more: bool


@dataclass(frozen=True, slots=True)
class KeysPage:
    """`keys`: matching keys in key order; `more`: matches follow."""

    keys: tuple[str, ...]
    more: bool


@dataclass(frozen=True, slots=True)
class Event:
    """
    One change from the retained history (`events`), same fields as the PUB payload.

    Attributes:
        type: "put", "delete", "expire" or "touch" (a server sending
            concord.kv.record.ChangeType numbers is understood too).
        key: the key.
        value: the new value for put, else None.
        revision: the store revision of the change (bulk ops share one).
        ts: the entry's leader timestamp, milliseconds.
        ttl: seconds of life given by the change, None if none.
        batch_index: position of this change among the user changes of its revision
            (0-based; change stream v1 field `i`).
        batch_size: number of user changes of its revision (field `n`), so
            (revision, batch_index) orders every change and tells a revision complete.
    """

    type: str
    key: str
    value: object
    revision: int
    ts: int
    ttl: float | None
    batch_index: int = 0
    batch_size: int = 1


@dataclass(frozen=True, slots=True)
class EventsPage:
    """
    `events`: changes after `since_revision`.

    Attributes:
        events: the changes, in revision order.
        next_revision: pass it as `since_revision` to continue.
        compacted: history before the asked revision is gone (catch up with a read).
    """

    events: tuple[Event, ...]
    next_revision: int
    compacted: bool


_CHANGE_NAMES: Final = {int(t): t.name.lower() for t in ChangeType}


# -- reply field accessors ---------------------------------------------------------


def field(reply: Mapping[str, object], op: str, name: str) -> object:
    """The field `name` of an ok reply to `op`, or RemoteProtocolError if absent."""
    if name not in reply:
        raise RemoteProtocolError(f"reply to {op} lacks field {name}")
    return reply[name]


def int_field(reply: Mapping[str, object], op: str, name: str) -> int:
    value = field(reply, op, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError(f"reply to {op}: field {name} is {type(value).__name__}, not int")
    return value


def bool_field(reply: Mapping[str, object], op: str, name: str) -> bool:
    value = field(reply, op, name)
    if not isinstance(value, bool):
        raise RemoteProtocolError(f"reply to {op}: field {name} is {type(value).__name__}, not bool")
    return value


def ttl_field(reply: Mapping[str, object], op: str, name: str = "ttl") -> float | None:
    """Seconds left (None: never expires); an absent field counts as None."""
    value = reply.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RemoteProtocolError(f"reply to {op}: field {name} is {type(value).__name__}, not a number")
    return float(value)


def list_field(reply: Mapping[str, object], op: str, name: str) -> list[object]:
    value = field(reply, op, name)
    if not isinstance(value, list):
        raise RemoteProtocolError(f"reply to {op}: field {name} is {type(value).__name__}, not a list")
    return value


def pairs(reply: Mapping[str, object], op: str) -> tuple[tuple[str, object], ...]:
    """The `items` field as ((key, value), ...)."""
    out: list[tuple[str, object]] = []
    for item in list_field(reply, op, "items"):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise RemoteProtocolError(f"reply to {op}: an item is not a [key, value] pair")
        out.append((item[0], item[1]))
    return tuple(out)


def event_from(obj: object) -> Event:
    """One event map of an `events` reply."""
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"reply to events: an event is a {type(obj).__name__}, not a map")
    kind = field(obj, "events", "type")
    key = field(obj, "events", "key")
    if isinstance(kind, int) and not isinstance(kind, bool) and kind in _CHANGE_NAMES:
        kind = _CHANGE_NAMES[kind]  # a server sending ChangeType numbers
    if not isinstance(kind, str) or not isinstance(key, str):
        raise RemoteProtocolError("reply to events: event type and key must be strings")
    return Event(
        type=kind,
        key=key,
        value=obj.get("value"),
        revision=int_field(obj, "events", "revision"),
        ts=int_field(obj, "events", "ts"),
        ttl=ttl_field(obj, "events"),
        batch_index=int_field(obj, "events", "i") if "i" in obj else 0,
        batch_size=int_field(obj, "events", "n") if "n" in obj else 1,
    )
