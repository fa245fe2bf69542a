"""
Module-level API over a default client (docs/client.md): `concord.put`, `concord.get`, ...

`connect(endpoints, **options)` creates the default Client (closing a previous one) and
returns it; every function below delegates to it and raises ShuttingDownError if
`connect` was not called (or after `disconnect()`). The default client is process-wide
and thread-safe (threads share it, many requests in flight); `connect` and `disconnect`
themselves are guarded by a module lock.

`DEFAULT_API` lists the delegating functions, in the order of docs/protocol.md.
"""

from __future__ import annotations

import threading
from typing import Iterable, Literal, Mapping, Sequence, overload

from concord.client.client import NO_DEFAULT, Client, Condition, Consistency, Filter, Range
from concord.client.results import (
    BulkDeleteResult,
    DeleteResult,
    EventsPage,
    KeysPage,
    Page,
    ValueWithMeta,
    ValueWithTTL,
)
from concord.errors import ShuttingDownError

__all__ = [
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

_lock = threading.Lock()
_default: Client | None = None


def connect(endpoints: str | Sequence[str], **options: object) -> Client:
    """
    Create the default client (options as for `Client`) and return it; a previous
    default client is closed.
    """
    global _default
    client = Client(endpoints, **options)  # type: ignore[arg-type]
    with _lock:
        previous, _default = _default, client
    if previous is not None:
        previous.close()
    return client


def disconnect() -> None:
    """Close the default client, if any. Idempotent."""
    global _default
    with _lock:
        previous, _default = _default, None
    if previous is not None:
        previous.close()


def default_client() -> Client:
    """
    The client set by `connect`.

    Raises:
        ShuttingDownError: `connect` was not called, or `disconnect` was.
    """
    client = _default
    if client is None:
        raise ShuttingDownError("no default client: call concord.connect(endpoints) first")
    return client


def put(key: str, value: object, ttl: float | None = None, compress: bool | None = None) -> int:
    """Client.put on the default client."""
    return default_client().put(key, value, ttl, compress)


@overload
def get(key: str, consistency: Consistency = ..., *, meta: Literal[True]) -> ValueWithMeta: ...


@overload
def get(key: str, consistency: Consistency = ..., meta: bool = ..., default: object = ...) -> object: ...


def get(
    key: str, consistency: Consistency = "leader", meta: bool = False, default: object = NO_DEFAULT
) -> object:
    """Client.get on the default client (NotFoundError unless `default` is given)."""
    return default_client().get(key, consistency, meta, default)


def delete(key: str) -> DeleteResult:
    """Client.delete on the default client."""
    return default_client().delete(key)


def put_many(items: Iterable[tuple[str, object] | tuple[str, object, float | None]]) -> int:
    """Client.put_many on the default client."""
    return default_client().put_many(items)


def get_many(keys: Iterable[str], consistency: Consistency = "leader") -> dict[str, object]:
    """Client.get_many on the default client."""
    return default_client().get_many(keys, consistency)


def delete_many(keys: Iterable[str]) -> BulkDeleteResult:
    """Client.delete_many on the default client."""
    return default_client().delete_many(keys)


def touch(key: str, ttl: float) -> int:
    """Client.touch on the default client."""
    return default_client().touch(key, ttl)


def touch_many(items: Iterable[tuple[str, float]]) -> int:
    """Client.touch_many on the default client."""
    return default_client().touch_many(items)


def ttl(key: str, consistency: Consistency = "leader") -> float | None:
    """Client.ttl on the default client."""
    return default_client().ttl(key, consistency)


def get_with_ttl(key: str, consistency: Consistency = "leader") -> ValueWithTTL:
    """Client.get_with_ttl on the default client."""
    return default_client().get_with_ttl(key, consistency)


def get_all(limit: int | None = None, after: str | None = None, consistency: Consistency = "leader") -> Page:
    """Client.get_all on the default client."""
    return default_client().get_all(limit, after, consistency)


def put_if(
    key: str,
    value: object,
    *,
    expected: object = NO_DEFAULT,
    version: int | None = None,
    mod_revision: int | None = None,
    absent: bool | None = None,
    ttl: float | None = None,
    condition: Condition | None = None,
) -> int:
    """Client.put_if on the default client."""
    return default_client().put_if(key, value, expected=expected, version=version,
                                   mod_revision=mod_revision, absent=absent, ttl=ttl,
                                   condition=condition)


def delete_if(
    key: str,
    *,
    expected: object = NO_DEFAULT,
    version: int | None = None,
    mod_revision: int | None = None,
    absent: bool | None = None,
) -> DeleteResult:
    """Client.delete_if on the default client."""
    return default_client().delete_if(key, expected=expected, version=version,
                                      mod_revision=mod_revision, absent=absent)


def keys(
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    contains: str | None = None,
    pattern: str | None = None,
    range: Range | None = None,
    where: Filter | None = None,
    limit: int | None = None,
    offset: int | None = None,
    consistency: Consistency = "leader",
) -> KeysPage:
    """Client.keys on the default client."""
    return default_client().keys(prefix=prefix, suffix=suffix, contains=contains, pattern=pattern,
                                 range=range, where=where, limit=limit, offset=offset,
                                 consistency=consistency)


def query(
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    contains: str | None = None,
    pattern: str | None = None,
    range: Range | None = None,
    where: Filter | None = None,
    limit: int | None = None,
    offset: int | None = None,
    consistency: Consistency = "leader",
) -> Page:
    """Client.query on the default client."""
    return default_client().query(prefix=prefix, suffix=suffix, contains=contains, pattern=pattern,
                                  range=range, where=where, limit=limit, offset=offset,
                                  consistency=consistency)


def count(
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    contains: str | None = None,
    pattern: str | None = None,
    range: Range | None = None,
    where: Filter | None = None,
    limit: int | None = None,
    offset: int | None = None,
    consistency: Consistency = "leader",
) -> int:
    """Client.count on the default client."""
    return default_client().count(prefix=prefix, suffix=suffix, contains=contains, pattern=pattern,
                                  range=range, where=where, limit=limit, offset=offset,
                                  consistency=consistency)


def delete_where(
    *,
    prefix: str | None = None,
    suffix: str | None = None,
    contains: str | None = None,
    pattern: str | None = None,
    range: Range | None = None,
    where: Filter | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> BulkDeleteResult:
    """Client.delete_where on the default client."""
    return default_client().delete_where(prefix=prefix, suffix=suffix, contains=contains,
                                         pattern=pattern, range=range, where=where, limit=limit,
                                         offset=offset)


def events(since_revision: int, prefix: str | None = None, limit: int | None = None) -> EventsPage:
    """Client.events on the default client."""
    return default_client().events(since_revision, prefix, limit)


def status(endpoint: str | None = None) -> dict[str, object]:
    """Client.status on the default client."""
    return default_client().status(endpoint)


def members() -> list[dict[str, object]]:
    """Client.members on the default client."""
    return default_client().members()


def add_member(
    member_id: str, host: str, client_port: int, peer_port: int, events_port: int, learner: bool | None = None
) -> dict[str, object]:
    """Client.add_member on the default client."""
    return default_client().add_member(member_id, host, client_port, peer_port, events_port, learner)


def remove_member(member_id: str) -> dict[str, object]:
    """Client.remove_member on the default client."""
    return default_client().remove_member(member_id)


def promote_member(member_id: str) -> dict[str, object]:
    """Client.promote_member on the default client."""
    return default_client().promote_member(member_id)


def transfer_leader(member_id: str | None = None) -> dict[str, object]:
    """Client.transfer_leader on the default client."""
    return default_client().transfer_leader(member_id)
