"""
The leader's side of kv commands: one builder per write op, turning a client request's
wire args into the command map (checked, the value encoded and its compression decided
once). The write op table in concord.kv.commands names each op's builder.

Pure. No clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping

from concord.errors import InvalidRequestError
from concord.kv.command_checks import (
    _INT64_MAX,
    _INT64_MIN,
    _check_count,
    _decode_keys,
    _int,
    _no_duplicates,
    check_key,
    check_name,
    ttl_to_ms,
)
from concord.kv.config import KvConfig
from concord.kv.query import parse_query
from concord.kv.values import encode_value, pack_value, parse_path


def _args_only(args: Mapping[str, object], op: str, allowed: frozenset[str]) -> None:
    for name in args:
        if name not in allowed:
            raise InvalidRequestError(f"{op} does not take argument {name!r}")


def _encode_value(value: object, compress: object, config: KvConfig) -> tuple[bytes, int]:
    if compress is not None and not isinstance(compress, bool):
        raise InvalidRequestError(f"compress must be true, false or nil, got {compress!r}")
    data, flags = encode_value(
        value,
        max_value_bytes=config.max_value_bytes,
        threshold_bytes=config.compress_threshold_bytes,
        level=config.compress_level,
        compress=compress,
    )
    return data, int(flags)


def _encode_cond(args: Mapping[str, object]) -> dict[str, object]:
    given = [n for n in ("expected", "version", "mod_revision", "absent") if n in args]
    if len(given) != 1:
        raise InvalidRequestError(
            "give exactly one of expected, version, mod_revision, absent; got "
            + (", ".join(given) or "none")
        )
    kind = given[0]
    operand = args[kind]
    if kind == "expected":
        return {"expected": pack_value(operand)}
    if kind == "absent":
        if operand is not True:
            raise InvalidRequestError("absent must be true")
        return {"absent": True}
    return {kind: _int(operand, kind)}


def _build_put(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    if "value" not in args:
        raise InvalidRequestError(f"{op} needs a value")
    cmd["key"] = check_key(args.get("key"), config)
    cmd["value"], cmd["flags"] = _encode_value(args["value"], args.get("compress"), config)
    cmd["ttl_ms"] = ttl_to_ms(args.get("ttl"), config)
    if args.get("lease") is not None:
        if cmd["ttl_ms"]:
            raise InvalidRequestError(f"{op} takes ttl or lease, not both")
        cmd["lease"] = _int(args["lease"], "lease", 1)
    if op == "put_if":
        cmd["cond"] = _encode_cond(args)


def _build_key(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    cmd["key"] = check_key(args.get("key"), config)
    if op == "delete_if":
        cmd["cond"] = _encode_cond(args)
    elif op == "touch":
        cmd["ttl_ms"] = ttl_to_ms(args.get("ttl"), config)


def _build_put_many(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    items = []
    for item in _check_count(args.get("items"), "items", config):
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
            raise InvalidRequestError("put_many items must be [key, value] or [key, value, ttl]")
        value, flags = _encode_value(item[1], args.get("compress"), config)
        ttl_ms = ttl_to_ms(item[2] if len(item) == 3 else None, config)
        items.append([check_key(item[0], config), value, flags, ttl_ms])
    _no_duplicates([str(i[0]) for i in items])
    cmd["items"] = items


def _build_keys(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    keys = args.get("keys")
    cmd["keys"] = list(_decode_keys(keys if not isinstance(keys, tuple) else list(keys),
                                    config, limited=op != "expire"))


def _build_touch_many(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    if "items" in args:
        if "keys" in args or "ttl" in args:
            raise InvalidRequestError("touch_many takes items, or keys with ttl, not both")
        raw_items = _check_count(args["items"], "items", config)
    else:
        keys_arg = _check_count(args.get("keys"), "keys", config)
        raw_items = [[k, args.get("ttl")] for k in keys_arg]
    touches = []
    for item in raw_items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidRequestError("touch_many items must be [key, ttl]")
        touches.append([check_key(item[0], config), ttl_to_ms(item[1], config)])
    _no_duplicates([str(t[0]) for t in touches])
    cmd["items"] = touches


def _build_delete_where(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    query = dict(args)
    parse_query(query, config)
    cmd["query"] = query


def _build_create_index(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    field = args.get("field")
    if not parse_path(field):
        raise InvalidRequestError("an index needs a non-empty field path")
    cmd["name"] = check_name(args.get("name"))
    cmd["field"] = list(field) if isinstance(field, tuple) else field


def _build_name(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    cmd["name"] = check_name(args.get("name"))


def _build_counter(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    """incr/decr {key, delta?: int (default 1), ttl?}: one `incr` command."""
    delta = args.get("delta", 1)
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise InvalidRequestError(f"delta must be an integer, got {delta!r}")
    delta = -delta if op == "decr" else delta
    if not _INT64_MIN <= delta <= _INT64_MAX:
        raise InvalidRequestError(f"delta {delta} is out of the signed 64-bit range")
    cmd["op"] = "incr"
    cmd["key"] = check_key(args.get("key"), config)
    cmd["delta"] = delta
    cmd["ttl_ms"] = ttl_to_ms(args.get("ttl"), config)


def _build_lease(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    if op == "lease_grant":
        if args.get("ttl") is None:
            raise InvalidRequestError("lease_grant needs a ttl")
        cmd["ttl_ms"] = ttl_to_ms(args["ttl"], config)
        return
    cmd["lease"] = _int(args.get("lease"), "lease", 1)


def _build_leases(op: str, args: Mapping[str, object], config: KvConfig, cmd: dict[str, object]) -> None:
    leases = args.get("leases")
    if not isinstance(leases, (list, tuple)):
        raise InvalidRequestError(f"{op} leases must be a list")
    cmd["leases"] = [_int(lease, "lease", 1) for lease in leases]
