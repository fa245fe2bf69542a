"""
The typed ops of the Python clients: for each method, the wire request it sends and how
its reply becomes a typed result. Shared by `concord.Client` and `concord.aio.Client`,
whose methods are one line each over these, so both send the same requests and return
the same results. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Mapping, Sequence, TypeVar

from concord.client.plan import _Value
from concord.client.results import (
    BulkDeleteResult,
    DeleteResult,
    EventsPage,
    KeysPage,
    Page,
    ValueWithMeta,
    ValueWithTTL,
    bool_field,
    event_from,
    field,
    int_field,
    list_field,
    pairs,
    ttl_field,
)
from concord.errors import RemoteProtocolError

T = TypeVar("T")

#: An argument that was not given (None may be a value: a stored nil, an expected nil).
NO_DEFAULT = object()

#: An inclusive key range [lo, hi] (None: open end, per docs/formats/kv.md).
Range = tuple["str | None", "str | None"]
#: A declarative value filter (docs/formats/kv.md): ["eq", field, value], ["and", ...], ...
Filter = Sequence[object] | Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Req(Generic[T]):
    """
    One typed op: `op` and `args` go on the wire (None-valued args left out); `decode`
    turns the ok reply into the method's result. `consistency` is set for reads that may
    be served from same-host shared memory (the sync client's `local` reads).
    """

    op: str
    args: dict[str, object]
    decode: Callable[[dict[str, object]], T]
    consistency: str | None = None


def _strip(reply: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


def _revision(op: str) -> Callable[[dict[str, object]], int]:
    return lambda reply: int_field(reply, op, "revision")


def _deleted(op: str) -> Callable[[dict[str, object]], DeleteResult]:
    return lambda reply: DeleteResult(bool_field(reply, op, "deleted"), int_field(reply, op, "revision"))


def _bulk_deleted(op: str) -> Callable[[dict[str, object]], BulkDeleteResult]:
    return lambda reply: BulkDeleteResult(int_field(reply, op, "deleted"), int_field(reply, op, "revision"))


def conditions(
    expected: object, version: int | None, mod_revision: int | None, absent: bool | None
) -> dict[str, object]:
    """The condition args of put_if / delete_if (an expected nil is sent)."""
    conds: dict[str, object] = {}
    if expected is not NO_DEFAULT:
        conds["expected"] = _Value(expected)
    if version is not None:
        conds["version"] = version
    if mod_revision is not None:
        conds["mod_revision"] = mod_revision
    if absent is not None:
        conds["absent"] = absent
    return conds


def query_args(
    prefix: str | None, suffix: str | None, contains: str | None, pattern: str | None,
    range_: Range | None, where: Filter | None, limit: int | None, offset: int | None,
) -> dict[str, object]:
    """The filter args of keys / query / count / delete_where."""
    return {
        "prefix": prefix, "suffix": suffix, "contains": contains, "pattern": pattern,
        "range": None if range_ is None else list(range_),
        "where": None if where is None else dict(where) if isinstance(where, Mapping) else list(where),
        "limit": limit, "offset": offset,
    }


def put(key: str, value: object, ttl: float | None, compress: bool | None,
        lease: int | None = None) -> Req[int]:
    return Req("put", {"key": key, "value": _Value(value), "ttl": ttl, "compress": compress,
                       "lease": lease}, _revision("put"))


def get_meta(reply: dict[str, object]) -> ValueWithMeta:
    """A `get` reply with meta as a ValueWithMeta."""
    return ValueWithMeta(
        value=field(reply, "get", "value"),
        revision=int_field(reply, "get", "revision"),
        version=int_field(reply, "get", "version"),
        create_revision=int_field(reply, "get", "create_revision"),
        ttl=ttl_field(reply, "get"),
    )


def get(key: str, consistency: str, meta: bool) -> Req[object]:
    args: dict[str, object] = {"key": key}
    if meta:
        args["meta"] = True
        return Req("get", args, get_meta, consistency)
    return Req("get", args, lambda reply: field(reply, "get", "value"), consistency)


def delete(key: str) -> Req[DeleteResult]:
    return Req("delete", {"key": key}, _deleted("delete"))


def put_many(items: Iterable[tuple[str, object] | tuple[str, object, float | None]]) -> Req[int]:
    wire_items: list[object] = []
    for item in items:
        if len(item) == 2:
            wire_items.append([item[0], _Value(item[1])])
        else:
            wire_items.append([item[0], _Value(item[1]), item[2]])
    return Req("put_many", {"items": wire_items}, _revision("put_many"))


def _values(reply: dict[str, object]) -> dict[str, object]:
    values = field(reply, "get_many", "values")
    if not isinstance(values, dict):
        raise RemoteProtocolError("reply to get_many: field values is not a map")
    return dict(values)


def get_many(keys: Iterable[str], consistency: str) -> Req[dict[str, object]]:
    return Req("get_many", {"keys": list(keys)}, _values, consistency)


def delete_many(keys: Iterable[str]) -> Req[BulkDeleteResult]:
    return Req("delete_many", {"keys": list(keys)}, _bulk_deleted("delete_many"))


def touch(key: str, ttl: float | None) -> Req[int]:
    # NB: a nil ttl is sent (it clears the key's expiry), never left out.
    return Req("touch", {"key": key, "ttl": _Value(ttl)}, _revision("touch"))


def touch_many(items: Iterable[tuple[str, float]]) -> Req[int]:
    return Req("touch_many", {"items": [[key, ttl] for key, ttl in items]}, _revision("touch_many"))


def _ttl(reply: dict[str, object]) -> float | None:
    field(reply, "ttl", "ttl")
    return ttl_field(reply, "ttl")


def ttl(key: str, consistency: str) -> Req[float | None]:
    return Req("ttl", {"key": key}, _ttl, consistency)


def get_with_ttl(key: str, consistency: str) -> Req[ValueWithTTL]:
    return Req("get_with_ttl", {"key": key}, lambda reply: ValueWithTTL(
        field(reply, "get_with_ttl", "value"), ttl_field(reply, "get_with_ttl")), consistency)


def _page(op: str) -> Callable[[dict[str, object]], Page]:
    return lambda reply: Page(pairs(reply, op), bool_field(reply, op, "more"))


def get_all(limit: int | None, after: str | None, consistency: str) -> Req[Page]:
    return Req("get_all", {"limit": limit, "after": after}, _page("get_all"), consistency)


def put_if(key: str, value: object, conds: Mapping[str, object], ttl: float | None,
           lease: int | None = None) -> Req[int]:
    return Req("put_if", {"key": key, "value": _Value(value), "ttl": ttl, "lease": lease, **conds},
               _revision("put_if"))


def incr(key: str, delta: int, ttl: float | None) -> Req[int]:
    """The new value."""
    return Req("incr", {"key": key, "delta": delta, "ttl": ttl}, lambda reply: int_field(reply, "incr", "value"))


def decr(key: str, delta: int, ttl: float | None) -> Req[int]:
    """The new value."""
    return Req("decr", {"key": key, "delta": delta, "ttl": ttl}, lambda reply: int_field(reply, "decr", "value"))


def lease_grant(ttl: float) -> Req[int]:
    return Req("lease_grant", {"ttl": ttl}, lambda reply: int_field(reply, "lease_grant", "lease"))


def lease_keepalive(lease: int) -> Req[float]:
    def decode(reply: dict[str, object]) -> float:
        ttl = ttl_field(reply, "lease_keepalive")
        if ttl is None:
            raise RemoteProtocolError("reply to lease_keepalive: field ttl is nil")
        return ttl
    return Req("lease_keepalive", {"lease": lease}, decode)


def lease_revoke(lease: int) -> Req[int]:
    return Req("lease_revoke", {"lease": lease}, lambda reply: int_field(reply, "lease_revoke", "deleted"))


def delete_if(key: str, conds: Mapping[str, object]) -> Req[DeleteResult]:
    return Req("delete_if", {"key": key, **conds}, _deleted("delete_if"))


def _keys(reply: dict[str, object]) -> KeysPage:
    raw = list_field(reply, "keys", "keys")
    if not all(isinstance(k, str) for k in raw):
        raise RemoteProtocolError("reply to keys: a key is not a string")
    return KeysPage(tuple(str(k) for k in raw), bool_field(reply, "keys", "more"))


def keys(args: dict[str, object], consistency: str) -> Req[KeysPage]:
    return Req("keys", args, _keys, consistency)


def query(args: dict[str, object], consistency: str) -> Req[Page]:
    return Req("query", args, _page("query"), consistency)


def count(args: dict[str, object], consistency: str) -> Req[int]:
    return Req("count", args, lambda reply: int_field(reply, "count", "count"), consistency)


def delete_where(args: dict[str, object]) -> Req[BulkDeleteResult]:
    return Req("delete_where", args, _bulk_deleted("delete_where"))


def events(since_revision: int, prefix: str | None, limit: int | None) -> Req[EventsPage]:
    return Req("events", {"since_revision": since_revision, "prefix": prefix, "limit": limit},
               lambda reply: EventsPage(
                   tuple(event_from(e) for e in list_field(reply, "events", "events")),
                   int_field(reply, "events", "next_revision"),
                   bool_field(reply, "events", "compacted"),
               ))


def create_index(name: str, field_path: str | Sequence[str | int]) -> Req[bool]:
    path = field_path if isinstance(field_path, str) else list(field_path)
    return Req("create_index", {"name": name, "field": path},
               lambda reply: bool_field(reply, "create_index", "created"))


def drop_index(name: str) -> Req[bool]:
    return Req("drop_index", {"name": name}, lambda reply: bool_field(reply, "drop_index", "dropped"))


def _maps(op: str, name: str) -> Callable[[dict[str, object]], list[dict[str, object]]]:
    def decode(reply: dict[str, object]) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for item in list_field(reply, op, name):
            if not isinstance(item, dict):
                raise RemoteProtocolError(f"reply to {op}: an entry of {name} is not a map")
            out.append(item)
        return out
    return decode


def list_indexes(consistency: str) -> Req[list[dict[str, object]]]:
    # NB: not in local.LOCAL_OPS: always over the wire (consistency=None here).
    return Req("list_indexes", {"consistency": consistency}, _maps("list_indexes", "indexes"))


def index_lookup(
    name: str, value: object, range_: tuple[object, object] | None, limit: int | None, consistency: str
) -> Req[Page]:
    args: dict[str, object] = {"name": name, "limit": limit, "consistency": consistency}
    if value is not NO_DEFAULT:
        args["value"] = _Value(value)
    if range_ is not None:
        args["range"] = [_Value(range_[0]), _Value(range_[1])]
    return Req("index_lookup", args, _page("index_lookup"))


def lease_list(consistency: str) -> Req[list[dict[str, object]]]:
    return Req("lease_list", {"consistency": consistency}, _maps("lease_list", "leases"))


def status() -> Req[dict[str, object]]:
    return Req("status", {}, _strip)


def members() -> Req[list[dict[str, object]]]:
    return Req("members", {}, _maps("members", "members"))


def add_member(
    member_id: str, host: str, client_port: int, peer_port: int, events_port: int, learner: bool | None
) -> Req[dict[str, object]]:
    return Req("add_member", {
        "member_id": member_id, "host": host, "client_port": client_port,
        "peer_port": peer_port, "events_port": events_port, "learner": learner,
    }, _strip)


def remove_member(member_id: str) -> Req[dict[str, object]]:
    return Req("remove_member", {"member_id": member_id}, _strip)


def promote_member(member_id: str) -> Req[dict[str, object]]:
    return Req("promote_member", {"member_id": member_id}, _strip)


def transfer_leader(member_id: str | None) -> Req[dict[str, object]]:
    return Req("transfer_leader", {"member_id": member_id}, _strip)
