"""
Read operations over any `KeySource`, evaluated at a given cluster time.

Pure. Serves get, get_many, get_with_ttl, ttl, get_all, hash_content, keys, query, count,
list_indexes and index_lookup with the reply maps of DESIGN.md §7 (errors as {"error": code,
"message": text}). The raft worker calls it on the state machine for leader and strong
reads; read workers call it on the shared-memory store. TTLs in replies are seconds
remaining (float, millisecond precision), nil when the key never expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from concord.errors import ClientError, InvalidRequestError, NotFoundError, TooManyItemsError
from concord.kv.commands import check_key, check_name
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.content import CONTENT_MASK, content_digest
from concord.kv.query import KeySource, count, is_live, parse_query, select
from concord.kv.record import KeyRecord
from concord.kv.values import MISSING, record_value

Reply = dict[str, object]

READ_OPS: Final = frozenset(
    {
        "get",
        "get_many",
        "get_with_ttl",
        "ttl",
        "get_all",
        "hash_content",
        "keys",
        "query",
        "count",
        "list_indexes",
        "index_lookup",
    }
)

#: Request fields that are not arguments of the op.
ENVELOPE_FIELDS: Final = frozenset(
    {"op", "id", "token", "ns", "timeout_ms", "client_id", "seq", "traceparent", "consistency"}
)


def error_reply(exc: ClientError) -> Reply:
    """The reply map of an error."""
    return {"error": exc.code, "message": exc.message}


def ttl_seconds(record: KeyRecord, now_ms: int) -> float | None:
    """Seconds until `record` expires (nil if never)."""
    if record.expires_at_ms == 0:
        return None
    return max(0, record.expires_at_ms - now_ms) / 1000


def _allowed(op: str, args: Mapping[str, object], names: tuple[str, ...]) -> None:
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


def _dispatch(
    source: KeySource, op: str, args: Mapping[str, object], now_ms: int, config: KvConfig
) -> Reply:
    if op in ("get", "get_with_ttl", "ttl"):
        _allowed(op, args, ("key", "meta") if op == "get" else ("key",))
        meta = args.get("meta")
        if meta is not None and not isinstance(meta, bool):
            raise InvalidRequestError(f"meta must be true or false, got {meta!r}")
        record = _live(source, check_key(args.get("key"), config), now_ms)
        if op == "ttl":
            return {"ttl": ttl_seconds(record, now_ms)}
        reply: Reply = {"value": _value(record)}
        if op == "get_with_ttl":
            reply["ttl"] = ttl_seconds(record, now_ms)
        elif meta:
            reply["revision"] = record.mod_revision
            reply["version"] = record.version
            reply["create_revision"] = record.create_revision
            reply["ttl"] = ttl_seconds(record, now_ms)
        return reply
    if op == "get_many":
        _allowed(op, args, ("keys",))
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
    if op == "hash_content":
        return _hash_content(source, args, now_ms, config)
    if op == "get_all":
        _allowed(op, args, ("limit", "after"))
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
    if op in ("keys", "query", "count"):
        spec = parse_query(args, config)
        if op == "count":
            return {"count": count(source, spec, now_ms)}
        rows, more = select(source, spec, now_ms, config.default_limit)
        if op == "keys":
            return {"keys": [r.key for r, _ in rows], "more": more}
        return {"items": _items(rows), "more": more}
    if op == "list_indexes":
        _allowed(op, args, ())
        indexes = source.index_set()
        defs = indexes.definitions() if indexes is not None else []
        return {"indexes": [{"name": d.name, "field": d.field} for d in defs]}
    if op == "index_lookup":
        return _index_lookup(source, args, now_ms, config)
    raise InvalidRequestError(f"unknown read op {op!r}")


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
    _allowed("hash_content", args, ("limit", "after"))
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
    _allowed("index_lookup", args, ("name", "value", "range", "limit"))
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
