"""
Commands: the bytes of a NORMAL log entry, built on the leader, decoded strictly by apply.

Pure. No clock, no randomness. The leader turns a client request into a command with
`encode_request` (or `encode_command`); it validates everything it can, encodes the value
once (msgpack) and decides compression once, so that `apply()` on every replica stores
the bytes as they are. Compressing on the leader, not in apply, keeps apply cheap, makes
the log entry smaller, and keeps replicas bit-identical even if their zlib builds differ.

Layout (format version 1): one msgpack map with string keys.

    common     "v": 1                     format version (required)
               "op": str                  one of WRITE_OPS (required)
               "client_id": str, "seq": int >= 0   optional exactly-once session pair
               "min_seq": int, 0 <= min_seq <= seq  optional with the pair: the client's lowest
                                          unacknowledged seq (default seq; kv/sessions.py)
    put        "key": str, "value": bin, "flags": int (RecordFlags), "ttl_ms": int >= 0,
               "lease"?: int > 0          attach the key to a live lease (kv/leases.py)
    delete     "key": str
    touch      "key": str, "ttl_ms": int >= 0          (0: the key no longer expires)
    put_many   "items": [[key, value bin, flags, ttl_ms], ...]
    delete_many "keys": [str, ...]
    touch_many "items": [[key, ttl_ms], ...]
    put_if     as put, plus "cond": {"expected": bin} | {"version": int}
                                    | {"mod_revision": int} | {"absent": true}
    delete_if  "key": str, "cond": as put_if
    expire     "keys": [str, ...]        delete each key only if due at the entry's time
    delete_where "query": map            the query arguments of docs/formats/kv.md
    create_index "name": str, "field": str | [str | int, ...]
    drop_index "name": str
    incr       "key": str, "delta": int, "ttl_ms": int >= 0
                                         add delta to an integer value (absent: 0); ttl_ms
                                         applies only when the incr creates the key
                                         (a client's decr is logged as an incr of -delta)
    lease_grant "ttl_ms": int > 0        the lease id is the entry's index
    lease_keepalive "lease": int         deadline := entry time + the lease's ttl
    lease_revoke "lease": int            drop the lease, delete its keys
    lease_expire "leases": [int, ...]    drop each lease only if due at the entry's time
                                         (proposed by the leader), delete its keys
    auth ops   token_put, token_revoke, role_put, role_delete, tenant_put,
               tenant_delete, auth_bootstrap: see concord.auth.commands
    common     "auth": [token_id: str, secret_hash: bin(32)]   optional credential,
               checked at apply (concord.auth); never the secret itself

Unknown keys, missing keys and wrong types are errors: `decode_command` raises
InvalidRequestError (or InvalidKeyError, ValueTooLargeError, TooManyItemsError), which
apply turns into an error result that changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Union

import msgpack

from concord.auth.commands import (
    AUTH_OPS,
    AuthCommand,
    build_auth_command,
    decode_auth_command,
    decode_credential,
    encode_credential,
)
from concord.auth.tokens import Credential
from concord.errors import (
    InvalidKeyError,
    InvalidRequestError,
    TooManyItemsError,
    ValueTooLargeError,
)
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.query import QUERY_ARGS, QuerySpec, parse_query
from concord.kv.record import RecordFlags
from concord.kv.values import Path, decode_stored, encode_value, pack_value, parse_path

FORMAT_VERSION: Final = 1

#: The range of an integer a counter may hold (msgpack's signed 64-bit).
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1

_INDEX_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_MAX_CLIENT_ID_BYTES: Final = 256


# --- decoded commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    flags: int
    ttl_ms: int
    lease: int = 0  # the lease the key is attached to, 0 for none


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Touch:
    key: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class PutMany:
    items: tuple[Put, ...]


@dataclass(frozen=True, slots=True)
class DeleteMany:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TouchMany:
    items: tuple[Touch, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    """
    A CAS condition on a key's live state.

    kind is "expected" (operand: the decoded expected value), "version", "mod_revision"
    (operand: int; 0 matches an absent key) or "absent" (operand None).
    """

    kind: str
    operand: object


@dataclass(frozen=True, slots=True)
class PutIf:
    put: Put
    cond: Condition


@dataclass(frozen=True, slots=True)
class DeleteIf:
    key: str
    cond: Condition


@dataclass(frozen=True, slots=True)
class Expire:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteWhere:
    query: QuerySpec


@dataclass(frozen=True, slots=True)
class CreateIndex:
    name: str
    field: str | list[str | int]
    path: Path


@dataclass(frozen=True, slots=True)
class DropIndex:
    name: str


@dataclass(frozen=True, slots=True)
class Incr:
    key: str
    delta: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LeaseKeepalive:
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    lease: int


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    leases: tuple[int, ...]


Command = Union[
    Put,
    Delete,
    Touch,
    PutMany,
    DeleteMany,
    TouchMany,
    PutIf,
    DeleteIf,
    Expire,
    DeleteWhere,
    CreateIndex,
    DropIndex,
    Incr,
    LeaseGrant,
    LeaseKeepalive,
    LeaseRevoke,
    LeaseExpire,
    AuthCommand,
]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded command with its optional exactly-once session pair."""

    command: Command
    client_id: str | None = None
    seq: int | None = None
    auth: Credential | None = None
    min_seq: int | None = None  # the client's lowest unacknowledged seq (kv/sessions.py)


# --- shared validation ------------------------------------------------------------------


def check_key(key: object, config: KvConfig) -> str:
    """
    Validate a key: a str of 1..max_key_bytes UTF-8 bytes.

    Raises:
        InvalidKeyError.
    """
    if type(key) is str and key.isascii() and 0 < len(key) <= config.max_key_bytes:
        return key  # fast path
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string, got {type(key).__name__}")
    n = len(key)
    if n == 0:
        raise InvalidKeyError("key is empty")
    if not key.isascii():
        try:
            n = len(key.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(f"key {key!r} is not valid UTF-8") from exc
    if n > config.max_key_bytes:
        raise InvalidKeyError(f"key is {n} bytes, more than max_key_bytes {config.max_key_bytes}")
    return key


def check_name(name: object) -> str:
    """Validate an index name: 1..128 of [A-Za-z0-9_.-]."""
    if not isinstance(name, str) or _INDEX_NAME.fullmatch(name) is None:
        raise InvalidRequestError(f"index name must match [A-Za-z0-9_.-]{{1,128}}, got {name!r}")
    return name


def _int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def ttl_to_ms(ttl: object, config: KvConfig) -> int:
    """
    Convert a wire `ttl` (seconds, int or float, > 0; nil for none) to milliseconds (0 none).

    Raises:
        InvalidRequestError.
    """
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidRequestError(f"ttl must be a number of seconds, got {ttl!r}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidRequestError(f"ttl must be positive, got {ttl!r}")
    # NB: compare in seconds first: a finite float such as 1e308 overflows to inf when
    # multiplied by 1000, and math.ceil(inf) raises OverflowError (it crashed the leader).
    if ttl > config.max_ttl_ms / 1000 or max(1, math.ceil(ttl * 1000)) > config.max_ttl_ms:
        raise InvalidRequestError(f"ttl {ttl} s exceeds the maximum {config.max_ttl_ms / 1000} s")
    return max(1, math.ceil(ttl * 1000))


def _check_ttl_ms(value: object, config: KvConfig) -> int:
    if type(value) is int and 0 <= value <= config.max_ttl_ms:
        return value  # fast path
    ms = _int(value, "ttl_ms")
    if ms > config.max_ttl_ms:
        raise InvalidRequestError(f"ttl_ms {ms} exceeds max_ttl_ms {config.max_ttl_ms}")
    return ms


def _check_stored(value: object, flags: object, config: KvConfig) -> tuple[bytes, int]:
    if type(value) is bytes and (flags == 0 or flags == 1) and type(flags) is int:
        if len(value) <= config.max_value_bytes:
            return value, flags  # fast path
    if not isinstance(value, bytes):
        raise InvalidRequestError(f"value must be bin, got {type(value).__name__}")
    flags_int = _int(flags, "flags")
    if flags_int & ~int(RecordFlags.COMPRESSED):
        raise InvalidRequestError(f"unknown record flags {flags_int}")
    if len(value) > config.max_value_bytes:
        raise ValueTooLargeError(
            f"value is {len(value)} bytes, more than max_value_bytes {config.max_value_bytes}"
        )
    return value, flags_int


def _check_count(items: object, what: str, config: KvConfig) -> list[object]:
    if not isinstance(items, list):
        raise InvalidRequestError(f"{what} must be a list")
    if len(items) > config.max_items:
        raise TooManyItemsError(f"{len(items)} {what}, more than the maximum {config.max_items}")
    return items


# --- decoding (apply side) --------------------------------------------------------------


_COMMON: Final = frozenset({"v", "op", "client_id", "seq", "min_seq", "auth"})


def _fields(m: Mapping[str, object], op: str, required: frozenset[str], allowed: frozenset[str]) -> None:
    keys = m.keys()
    if not keys >= required:
        missing = sorted(required - keys)
        raise InvalidRequestError(f"command {op!r} lacks field {missing[0]!r}")
    if not keys <= allowed:
        unknown = sorted(str(k) for k in keys - allowed)
        raise InvalidRequestError(f"command {op!r} has unknown field {unknown[0]!r}")


def _decode_cond(raw: object) -> Condition:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidRequestError("cond must be a map with exactly one entry")
    ((kind, operand),) = raw.items()
    if kind == "expected":
        if not isinstance(operand, bytes):
            raise InvalidRequestError("cond expected must be bin (a packed value)")
        try:
            expected = decode_stored(operand, 0)
        except ValueError as exc:
            raise InvalidRequestError("cond expected is not a packed value") from exc
        return Condition("expected", expected)
    if kind in ("version", "mod_revision"):
        return Condition(kind, _int(operand, f"cond {kind}"))
    if kind == "absent":
        if operand is not True:
            raise InvalidRequestError("cond absent must be true")
        return Condition("absent", None)
    raise InvalidRequestError(f"unknown condition {kind!r}")


def _decode_put(m: Mapping[str, object], config: KvConfig) -> Put:
    key = check_key(m["key"], config)
    value, flags = _check_stored(m["value"], m["flags"], config)
    lease = _int(m.get("lease", 0), "lease")
    return Put(key, value, flags, _check_ttl_ms(m["ttl_ms"], config), lease)


def _decode_keys(raw: object, config: KvConfig, limited: bool = True) -> tuple[str, ...]:
    keys = _check_count(raw, "keys", config) if limited else raw
    if not isinstance(keys, list):
        raise InvalidRequestError("keys must be a list")
    return tuple(check_key(k, config) for k in keys)


def _decode_put_many(m: Mapping[str, object], config: KvConfig) -> PutMany:
    puts = []
    for item in _check_count(m["items"], "items", config):
        if not isinstance(item, list) or len(item) != 4:
            raise InvalidRequestError("put_many items must be [key, value, flags, ttl_ms]")
        value, flags = _check_stored(item[1], item[2], config)
        puts.append(Put(check_key(item[0], config), value, flags, _check_ttl_ms(item[3], config)))
    _no_duplicates([p.key for p in puts])
    return PutMany(tuple(puts))


def _decode_touch_many(m: Mapping[str, object], config: KvConfig) -> TouchMany:
    touches = []
    for item in _check_count(m["items"], "items", config):
        if not isinstance(item, list) or len(item) != 2:
            raise InvalidRequestError("touch_many items must be [key, ttl_ms]")
        touches.append(Touch(check_key(item[0], config), _check_ttl_ms(item[1], config)))
    _no_duplicates([t.key for t in touches])
    return TouchMany(tuple(touches))


def _decode_delete_where(m: Mapping[str, object], config: KvConfig) -> DeleteWhere:
    query = m["query"]
    if not isinstance(query, dict):
        raise InvalidRequestError("delete_where query must be a map")
    return DeleteWhere(parse_query(query, config))


def _decode_create_index(m: Mapping[str, object], config: KvConfig) -> CreateIndex:
    field = m["field"]
    path = parse_path(field)
    if not path:
        raise InvalidRequestError("an index needs a non-empty field path")
    assert isinstance(field, (str, list))
    return CreateIndex(check_name(m["name"]), field, path)


def decode_command(data: bytes, config: KvConfig = DEFAULT_CONFIG) -> Envelope:
    """
    Decode and validate the bytes of a command.

    Raises:
        InvalidRequestError (or a subclass): anything malformed, with a clear message.
    """
    try:
        m = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidRequestError(f"command is not valid msgpack: {exc}") from exc
    if not isinstance(m, dict):
        raise InvalidRequestError("command must be a msgpack map")
    if m.get("op") == "put" and (len(m) == 6 or (len(m) == 7 and "auth" in m)):
        fast = _fast_put(m, config)
        if fast is not None:
            return fast if len(m) == 6 else Envelope(fast.command, auth=decode_credential(m["auth"]))
    version = m.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise InvalidRequestError(f"unsupported command format version {version!r}")
    op = m.get("op")
    client_id = m.get("client_id")
    seq = m.get("seq")
    if (client_id is None) != (seq is None):
        raise InvalidRequestError("client_id and seq go together")
    min_seq = m.get("min_seq")
    if client_id is not None:
        client_id = _check_client_id(client_id)
        seq = _int(seq, "seq")
        min_seq = _check_min_seq(min_seq, seq)
    elif min_seq is not None:
        raise InvalidRequestError("min_seq needs client_id and seq")
    auth = None if "auth" not in m else decode_credential(m["auth"])
    if op in AUTH_OPS:
        return Envelope(decode_auth_command(m), client_id, seq, auth, min_seq)
    write = _WRITES.get(op) if isinstance(op, str) else None
    if write is None or write.decode is None:
        raise InvalidRequestError(f"unknown command op {op!r}")
    assert isinstance(op, str)
    _fields(m, op, write.fields, write.allowed)
    command = write.decode(m, config)
    return Envelope(command, client_id, seq, auth, min_seq)


def _fast_put(m: dict[str, object], config: KvConfig) -> Envelope | None:
    """
    The write hot path: a plain put (no session) whose fields are all well-formed.

    Returns:
        The envelope, or None to let the full decoder judge (and explain) the command.
    """
    version, key, value, flags, ttl_ms = (
        m.get("v"), m.get("key"), m.get("value"), m.get("flags"), m.get("ttl_ms")
    )
    if (
        type(version) is int
        and version == FORMAT_VERSION
        and type(key) is str
        and key.isascii()
        and 0 < len(key) <= config.max_key_bytes
        and type(value) is bytes
        and len(value) <= config.max_value_bytes
        and type(flags) is int
        and (flags == 0 or flags == 1)
        and type(ttl_ms) is int
        and 0 <= ttl_ms <= config.max_ttl_ms
    ):
        return Envelope(Put(key, value, flags, ttl_ms))
    return None


def _check_client_id(client_id: object) -> str:
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= _MAX_CLIENT_ID_BYTES:
        raise InvalidRequestError(
            f"client_id must be a string of 1..256 characters, got {client_id!r}"
        )
    return client_id


def _check_min_seq(min_seq: object, seq: int) -> int:
    if min_seq is None:
        return seq
    value = _int(min_seq, "min_seq")
    if value > seq:
        raise InvalidRequestError(f"min_seq {value} is above seq {seq}")
    return value


def _no_duplicates(keys: list[str]) -> None:
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise InvalidRequestError(f"key {key!r} appears twice")
            seen.add(key)


# --- encoding (leader side) -------------------------------------------------------------


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


def _decode_counter(m: Mapping[str, object], config: KvConfig) -> Incr:
    delta = _int(m["delta"], "delta", _INT64_MIN)
    if delta > _INT64_MAX:
        raise InvalidRequestError(f"delta {delta} is out of the signed 64-bit range")
    return Incr(check_key(m["key"], config), delta, _check_ttl_ms(m["ttl_ms"], config))


def _decode_lease_expire(m: Mapping[str, object], config: KvConfig) -> LeaseExpire:
    leases = m["leases"]
    if not isinstance(leases, list):
        raise InvalidRequestError("lease_expire leases must be a list")
    return LeaseExpire(tuple(_int(lease, "lease", 1) for lease in leases))


# --- the write ops ----------------------------------------------------------------------

Builder = Callable[[str, Mapping[str, object], KvConfig, dict[str, object]], None]
Decoder = Callable[[Mapping[str, object], KvConfig], Command]


@dataclass(frozen=True, slots=True)
class WriteOp:
    """
    How kv builds and decodes one write op.

    `args`: the wire arguments a request may carry; `fields`: the command's fields
    (besides v, op, client_id, seq, min_seq; all required); `allowed`: every field a
    command may hold (`optional` ones too); `leader_only`: proposed by the leader, never
    by a client; `decode` None: a client op logged as another op's command (decr: incr).
    """

    args: frozenset[str]
    fields: frozenset[str]
    allowed: frozenset[str]
    build: Builder
    decode: Decoder | None
    leader_only: bool = False


def _write(args: Iterable[str], fields: Iterable[str], build: Builder, decode: Decoder | None,
           leader_only: bool = False, optional: Iterable[str] = ()) -> WriteOp:
    allowed = frozenset(fields) | frozenset(optional) | _COMMON
    return WriteOp(frozenset(args), frozenset(fields), allowed, build, decode, leader_only)


_PUT_ARGS: Final = ("key", "value", "ttl", "compress", "lease")
_PUT_FIELDS: Final = ("key", "value", "flags", "ttl_ms")
_COND_ARGS: Final = ("expected", "version", "mod_revision", "absent")

# One row per write op: each client write is a row of the wire table too
# (concord.net.wire.OPS, kind "write"); tests/test_optable.py checks that the two agree.
_WRITES: Final[Mapping[str, WriteOp]] = {
    "put": _write(_PUT_ARGS, _PUT_FIELDS, _build_put, _decode_put, optional=("lease",)),
    "delete": _write(("key",), ("key",), _build_key, lambda m, c: Delete(check_key(m["key"], c))),
    "touch": _write(("key", "ttl"), ("key", "ttl_ms"), _build_key,
                    lambda m, c: Touch(check_key(m["key"], c), _check_ttl_ms(m["ttl_ms"], c))),
    "put_many": _write(("items", "compress"), ("items",), _build_put_many, _decode_put_many),
    "delete_many": _write(("keys",), ("keys",), _build_keys,
                          lambda m, c: DeleteMany(_decode_keys(m["keys"], c))),
    "touch_many": _write(("items", "keys", "ttl"), ("items",), _build_touch_many, _decode_touch_many),
    "put_if": _write((*_PUT_ARGS, *_COND_ARGS), (*_PUT_FIELDS, "cond"), _build_put,
                     lambda m, c: PutIf(_decode_put(m, c), _decode_cond(m["cond"])),
                     optional=("lease",)),
    "delete_if": _write(("key", *_COND_ARGS), ("key", "cond"), _build_key,
                        lambda m, c: DeleteIf(check_key(m["key"], c), _decode_cond(m["cond"]))),
    "expire": _write(("keys",), ("keys",), _build_keys,
                     lambda m, c: Expire(_decode_keys(m["keys"], c, limited=False)), leader_only=True),
    "delete_where": _write(QUERY_ARGS, ("query",), _build_delete_where, _decode_delete_where),
    "create_index": _write(("name", "field"), ("name", "field"), _build_create_index, _decode_create_index),
    "drop_index": _write(("name",), ("name",), _build_name, lambda m, c: DropIndex(check_name(m["name"]))),
    "incr": _write(("key", "delta", "ttl"), ("key", "delta", "ttl_ms"), _build_counter, _decode_counter),
    "decr": _write(("key", "delta", "ttl"), ("key", "delta", "ttl_ms"), _build_counter, None),
    "lease_grant": _write(("ttl",), ("ttl_ms",), _build_lease,
                          lambda m, c: LeaseGrant(_int(m["ttl_ms"], "ttl_ms", 1))),
    "lease_keepalive": _write(("lease",), ("lease",), _build_lease,
                              lambda m, c: LeaseKeepalive(_int(m["lease"], "lease", 1))),
    "lease_revoke": _write(("lease",), ("lease",), _build_lease,
                           lambda m, c: LeaseRevoke(_int(m["lease"], "lease", 1))),
    "lease_expire": _write(("leases",), ("leases",), _build_leases, _decode_lease_expire,
                           leader_only=True),
}

#: Every write op kv applies (derived from its table; decr is applied as an incr).
WRITE_OPS: Final = frozenset(op for op, w in _WRITES.items() if w.decode is not None)

#: Write ops a client may send (`expire` and `lease_expire` are proposed by the leader
#: only; `decr` is sent by clients and logged as an `incr` of the negated delta).
CLIENT_WRITE_OPS: Final = frozenset(op for op, w in _WRITES.items() if not w.leader_only)

#: The wire arguments each client write op takes.
WRITE_ARGS: Final[Mapping[str, frozenset[str]]] = {
    op: w.args for op, w in _WRITES.items() if not w.leader_only
}


def build_command(
    op: str, args: Mapping[str, object], config: KvConfig = DEFAULT_CONFIG
) -> dict[str, object]:
    """
    Turn a write request's arguments (wire names, docs/formats/kv.md) into the command map.

    Raises:
        InvalidRequestError (or a subclass).
    """
    if op in AUTH_OPS:
        return build_auth_command(op, args)
    write = _WRITES.get(op)
    if write is None:
        raise InvalidRequestError(f"unknown write op {op!r}")
    _args_only(args, op, write.args)
    cmd: dict[str, object] = {"v": FORMAT_VERSION, "op": op}
    write.build(op, args, config, cmd)
    return cmd


def encode_command(
    op: str,
    args: Mapping[str, object],
    *,
    client_id: str | None = None,
    seq: int | None = None,
    min_seq: int | None = None,
    config: KvConfig = DEFAULT_CONFIG,
    auth: Credential | None = None,
) -> bytes:
    """
    Encode a write op as the bytes of a log entry.

    Args:
        op: a write op (WRITE_OPS), e.g. "put".
        args: its arguments by their wire names, e.g. {"key": "a", "value": 1, "ttl": 5}.
        client_id, seq: optional exactly-once session pair (both or neither).
        min_seq: with the pair, the client's lowest unacknowledged seq (default: seq).
        config: limits and compression settings.
        auth: the requester's credential (token id and secret hash), checked at apply.

    Raises:
        InvalidRequestError (or InvalidKeyError, ValueTooLargeError, TooManyItemsError).
    """
    cmd = build_command(op, args, config)
    if (client_id is None) != (seq is None):
        raise InvalidRequestError("client_id and seq go together")
    if client_id is not None:
        cmd["client_id"] = _check_client_id(client_id)
        seq_int = cmd["seq"] = _int(seq, "seq")
        if min_seq is not None:
            cmd["min_seq"] = _check_min_seq(min_seq, seq_int)
    elif min_seq is not None:
        raise InvalidRequestError("min_seq needs client_id and seq")
    if auth is not None:
        cmd["auth"] = encode_credential(auth)
    packed: bytes = msgpack.packb(cmd, use_bin_type=True)
    return packed


#: Request fields that are not arguments of an op (the wire envelope, and a read's
#: consistency, which is its caller's to honour).
ENVELOPE_FIELDS: Final = frozenset(
    {"op", "id", "token", "ns", "timeout_ms", "client_id", "seq", "min_seq", "traceparent",
     "consistency"}
)


def encode_request(request: Mapping[str, object], config: KvConfig = DEFAULT_CONFIG,
                   auth: Credential | None = None) -> bytes:
    """
    Encode a wire request map ({"op": ..., "id": ..., args..., "client_id"?, "seq"?}) as a
    command. Envelope fields (id, token, ns, timeout_ms, traceparent) are not replicated.

    Raises:
        InvalidRequestError (or a subclass).
    """
    op = request.get("op")
    if not isinstance(op, str) or op not in CLIENT_WRITE_OPS:
        raise InvalidRequestError(f"{op!r} is not a write op")
    args = {k: v for k, v in request.items() if k not in ENVELOPE_FIELDS}
    client_id = request.get("client_id")
    if isinstance(client_id, int) and not isinstance(client_id, bool):
        client_id = str(client_id)
    if client_id is not None and not isinstance(client_id, str):
        raise InvalidRequestError(f"client_id must be a string, got {client_id!r}")
    seq = request.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise InvalidRequestError(f"seq must be an integer, got {seq!r}")
    min_seq = request.get("min_seq")
    if min_seq is not None and (isinstance(min_seq, bool) or not isinstance(min_seq, int)):
        raise InvalidRequestError(f"min_seq must be an integer, got {min_seq!r}")
    return encode_command(op, args, client_id=client_id, seq=seq, min_seq=min_seq, config=config,
                          auth=auth)


def lease_expire_command(leases: Sequence[int]) -> bytes:
    """The command the leader proposes to expire due leases (and delete their keys)."""
    packed: bytes = msgpack.packb(
        {"v": FORMAT_VERSION, "op": "lease_expire", "leases": list(leases)}, use_bin_type=True
    )
    return packed


def expire_command(keys: Sequence[str]) -> bytes:
    """The command the leader proposes to expire `keys` (from `due_expirations`)."""
    packed: bytes = msgpack.packb(
        {"v": FORMAT_VERSION, "op": "expire", "keys": list(keys)}, use_bin_type=True
    )
    return packed
