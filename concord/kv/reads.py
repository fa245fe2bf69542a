"""
Read operations over any `KeySource`, evaluated at a given cluster time.

Pure. Serves get, get_many, get_with_ttl, ttl, get_all, hash_content, keys, query, count,
list_indexes and index_lookup with the reply maps of docs/protocol.md (errors as {"error": code,
"message": text}). The raft worker calls it on the state machine for leader and strong
reads; read workers call it on the shared-memory store. TTLs in replies are seconds
remaining (float, millisecond precision), nil when the key never expires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from concord.errors import ClientError, InvalidRequestError, NotFoundError, TooManyItemsError
from concord.kv.commands import ENVELOPE_FIELDS, check_key, check_name
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.content import CONTENT_MASK, content_digest
from concord.kv.query import QUERY_ARGS, KeySource, count, is_live, parse_query, select
from concord.kv.record import KeyRecord
from concord.kv.values import MISSING, record_value

Reply = dict[str, object]

def error_reply(exc: ClientError) -> Reply:
    """The reply map of an error."""
    return {"error": exc.code, "message": exc.message}


def ttl_seconds(record: KeyRecord, now_ms: int) -> float | None:
    """Seconds until `record` expires (nil if never)."""
    if record.expires_at_ms == 0:
        return None
    return max(0, record.expires_at_ms - now_ms) / 1000


def _allowed(op: str, args: Mapping[str, object], names: frozenset[str]) -> None:
    for name in args:
        if name not in names:
            raise InvalidRequestError(f"{op} does not take argument {name!r}")


def _live(source: KeySource, key: str, now_ms: int) -> KeyRecord:
    record = source.get_record(key)
    if record is None or not is_live(record, now_ms):
        raise NotFoundError(f"key {key!r} not found")
    return record


def _value(record: KeyRecord) -> object:
    try:
        return record_value(record)
    except ValueError as exc:
        raise InvalidRequestError(f"stored value of key {record.key!r} does not decode") from exc


def _items(rows: list[tuple[KeyRecord, object]]) -> list[list[object]]:
    return [[r.key, _value(r) if v is MISSING else v] for r, v in rows]


def _get(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    meta = args.get("meta")
    if meta is not None and not isinstance(meta, bool):
        raise InvalidRequestError(f"meta must be true or false, got {meta!r}")
    record = _live(source, check_key(args.get("key"), config), now_ms)
    reply: Reply = {"value": _value(record)}
    if meta:
        reply["revision"] = record.mod_revision
        reply["version"] = record.version
        reply["create_revision"] = record.create_revision
        reply["ttl"] = ttl_seconds(record, now_ms)
    return reply


def _get_with_ttl(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    record = _live(source, check_key(args.get("key"), config), now_ms)
    return {"value": _value(record), "ttl": ttl_seconds(record, now_ms)}


def _ttl(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    record = _live(source, check_key(args.get("key"), config), now_ms)
    return {"ttl": ttl_seconds(record, now_ms)}


def _get_many(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    keys = args.get("keys")
    if not isinstance(keys, (list, tuple)):
        raise InvalidRequestError("get_many needs a list of keys")
    if len(keys) > config.max_items:
        raise TooManyItemsError(f"{len(keys)} keys, more than the maximum {config.max_items}")
    values: dict[str, object] = {}
    for key in keys:
        found = source.get_record(check_key(key, config))
        if found is not None and is_live(found, now_ms):
            values[found.key] = _value(found)
    return {"values": values}


def _get_all(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise InvalidRequestError(f"after must be a string, got {after!r}")
    limit = _limit(args.get("limit"), config)
    items: list[list[object]] = []
    more = False
    for key in source.iter_keys(after, inclusive=False):
        row = source.get_record(key)
        if row is None or not is_live(row, now_ms):
            continue
        if len(items) == limit:
            more = True
            break
        items.append([key, _value(row)])
    return {"items": items, "more": more}


def _keys(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    rows, more = select(source, parse_query(args, config), now_ms, config.default_limit)
    return {"keys": [r.key for r, _ in rows], "more": more}


def _query(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    rows, more = select(source, parse_query(args, config), now_ms, config.default_limit)
    return {"items": _items(rows), "more": more}


def _count(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    return {"count": count(source, parse_query(args, config), now_ms)}


def _list_indexes(source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig) -> Reply:
    indexes = source.index_set()
    defs = indexes.definitions() if indexes is not None else []
    return {"indexes": [{"name": d.name, "field": d.field} for d in defs]}


def _limit(raw: object, config: KvConfig) -> int:
    if raw is None:
        return config.default_limit
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= config.max_limit:
        raise InvalidRequestError(f"limit must be an integer in 0..{config.max_limit}, got {raw!r}")
    return raw


def _hash_content(
    source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig
) -> Reply:
    """One page of the content hash (concord.kv.content): the live keys after `after`."""
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise InvalidRequestError(f"after must be a string, got {after!r}")
    limit = _limit(args.get("limit"), config)
    total = keys = 0
    last: str | None = None
    more = False
    for key in source.iter_keys(after, inclusive=False):
        row = source.get_record(key)
        if row is None or not is_live(row, now_ms):
            continue
        if keys == limit:
            more = True
            break
        try:
            total += content_digest(row)
        except ValueError as exc:
            raise InvalidRequestError(f"stored value of key {key!r} does not decode") from exc
        keys += 1
        last = key
    return {"hash": total & CONTENT_MASK, "keys": keys, "last": last, "more": more}


def _index_lookup(
    source: KeySource, args: Mapping[str, object], now_ms: int, config: KvConfig
) -> Reply:
    name = check_name(args.get("name"))
    indexes = source.index_set()
    index = indexes.get(name) if indexes is not None else None
    if index is None:
        raise NotFoundError(f"index {name!r} not found")
    if ("value" in args) == ("range" in args):
        raise InvalidRequestError("index_lookup takes value or range, not both or neither")
    if "value" in args:
        keys = index.equal(args["value"])
    else:
        rng = args["range"]
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise InvalidRequestError("range must be [lo, hi]")
        lo = MISSING if rng[0] is None else rng[0]
        hi = MISSING if rng[1] is None else rng[1]
        keys = index.range(lo, hi)
    limit = _limit(args.get("limit"), config)
    # The index is a candidate list: each record is re-checked for liveness below.
    items: list[list[object]] = []
    more = False
    for key in keys:
        record = source.get_record(key)
        if record is None or not is_live(record, now_ms):
            continue
        if len(items) == limit:
            more = True
            break
        items.append([key, _value(record)])
    return {"items": items, "more": more}


ReadHandler = Callable[[KeySource, Mapping[str, object], int, KvConfig], Reply]


@dataclass(frozen=True, slots=True)
class ReadOp:
    """How kv serves one read op: the arguments it takes (wire names) and its handler."""

    args: frozenset[str]
    serve: ReadHandler


def _read(serve: ReadHandler, *args: str) -> ReadOp:
    return ReadOp(frozenset(args), serve)


# One row per read op of the wire table (concord.net.wire.OPS, backend "read"); the
# `consistency` envelope argument is the caller's. tests/test_optable.py checks that the
# two agree.
_READERS: Final[Mapping[str, ReadOp]] = {
    "get": _read(_get, "key", "meta"),
    "get_many": _read(_get_many, "keys"),
    "get_with_ttl": _read(_get_with_ttl, "key"),
    "ttl": _read(_ttl, "key"),
    "get_all": _read(_get_all, "limit", "after"),
    "hash_content": _read(_hash_content, "limit", "after"),
    "keys": _read(_keys, *QUERY_ARGS),
    "query": _read(_query, *QUERY_ARGS),
    "count": _read(_count, *QUERY_ARGS),
    "list_indexes": _read(_list_indexes),
    "index_lookup": _read(_index_lookup, "name", "value", "range", "limit"),
}

#: The read ops kv serves (derived from its handlers).
READ_OPS: Final = frozenset(_READERS)

#: The arguments each read op takes (wire names, without `consistency`).
READ_ARGS: Final[Mapping[str, frozenset[str]]] = {op: r.args for op, r in _READERS.items()}


def _dispatch(
    source: KeySource, op: str, args: Mapping[str, object], now_ms: int, config: KvConfig
) -> Reply:
    reader = _READERS.get(op)
    if reader is None:
        raise InvalidRequestError(f"unknown read op {op!r}")
    _allowed(op, args, reader.args)
    return reader.serve(source, args, now_ms, config)


def serve_read(
    source: KeySource,
    op: str,
    args: Mapping[str, object],
    now_ms: int,
    config: KvConfig = DEFAULT_CONFIG,
) -> Reply:
    """
    Evaluate one read op at cluster time `now_ms`.

    Args:
        source: the store to read.
        op: one of READ_OPS.
        args: the op's arguments (wire names), without envelope fields.
        now_ms: cluster time; keys due at or before it are hidden.
        config: limits.

    Returns:
        The reply map, or {"error": code, "message": text}.
    """
    try:
        return _dispatch(source, op, args, now_ms, config)
    except ClientError as exc:
        return error_reply(exc)


def serve_request(
    source: KeySource, request: Mapping[str, object], now_ms: int, config: KvConfig = DEFAULT_CONFIG
) -> Reply:
    """`serve_read` for a whole wire request map (envelope fields are ignored)."""
    op = request.get("op")
    if not isinstance(op, str) or op not in READ_OPS:
        return error_reply(InvalidRequestError(f"{op!r} is not a read op"))
    args = {k: v for k, v in request.items() if k not in ENVELOPE_FIELDS}
    return serve_read(source, op, args, now_ms, config)
