"""
Commands: the bytes of a NORMAL log entry, built on the leader, decoded strictly by apply.

Pure. No clock, no randomness. The leader turns a client request into a command with
`encode_request` (or `encode_command`); it validates everything it can, encodes the value
once (msgpack) and decides compression once, so that `apply()` on every replica stores
the bytes as they are. Compressing on the leader, not in apply, keeps apply cheap, makes
the log entry smaller, and keeps replicas bit-identical even if their zlib builds differ.

Layout (format version 1): one msgpack map with string keys, each op's fields in
docs/formats/kv.md "Command format, version 1" (the auth ops and the optional "auth"
credential: "Auth records and tenant keys" there, and concord.auth.commands).

Unknown keys, missing keys and wrong types are errors: `decode_command` raises
InvalidRequestError (or InvalidKeyError, ValueTooLargeError, TooManyItemsError), which
apply turns into an error result that changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from concord.auth.commands import (
    AUTH_OPS,
    build_auth_command,
    decode_auth_command,
    decode_credential,
    encode_credential,
)
from concord.auth.tokens import Credential
from concord.errors import InvalidRequestError
from concord.kv.builders import (
    _args_only,
    _build_counter,
    _build_create_index,
    _build_delete_where,
    _build_key,
    _build_keys,
    _build_lease,
    _build_leases,
    _build_name,
    _build_put,
    _build_put_many,
    _build_touch_many,
)
from concord.kv.command_checks import (  # public names re-exported: their old home
    _INT64_MAX,
    _INT64_MIN,
    _check_count,
    _check_stored,
    _check_ttl_ms,
    _decode_keys,
    _int,
    _no_duplicates,
    check_key as check_key,
    check_name as check_name,
    ttl_to_ms as ttl_to_ms,
)
from concord.kv.command_types import (  # the decoded commands, re-exported: their old home
    Command as Command,
    Condition as Condition,
    CreateIndex as CreateIndex,
    Delete as Delete,
    DeleteIf as DeleteIf,
    DeleteMany as DeleteMany,
    DeleteWhere as DeleteWhere,
    DropIndex as DropIndex,
    Envelope as Envelope,
    Expire as Expire,
    Incr as Incr,
    LeaseExpire as LeaseExpire,
    LeaseGrant as LeaseGrant,
    LeaseKeepalive as LeaseKeepalive,
    LeaseRevoke as LeaseRevoke,
    Put as Put,
    PutIf as PutIf,
    PutMany as PutMany,
    Touch as Touch,
    TouchMany as TouchMany,
)
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.query import QUERY_ARGS, parse_query
from concord.kv.values import decode_stored, parse_path

FORMAT_VERSION: Final = 1

_MAX_CLIENT_ID_BYTES: Final = 256


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



def _packed(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


# A Packer per thread, reused: msgpack.packb builds a new one per call (0.86 us to pack a
# short key, against 0.07 us with a reused Packer, on this machine). Per thread: a
# Packer's buffer is not to be shared.
_packers = threading.local()


def _thread_packer() -> Callable[[object], bytes]:
    try:
        pack: Callable[[object], bytes] = _packers.pack
    except AttributeError:
        pack = _packers.pack = msgpack.Packer(use_bin_type=True).pack
    return pack


# The constant parts of a plain put's command, as `encode_command` packs its map:
# {"v": FORMAT_VERSION, "op": "put", "key": K, "value": V, "flags": 0, "ttl_ms": 0}.
_PLAIN_PUT_HEAD: Final = b"\x86" + b"".join(map(_packed, ("v", FORMAT_VERSION, "op", "put", "key")))
_PLAIN_PUT_VALUE: Final = _packed("value")
_PLAIN_PUT_TAIL: Final = b"".join(map(_packed, ("flags", 0, "ttl_ms", 0)))


def encode_plain_put(key: object, value: object, config: KvConfig = DEFAULT_CONFIG) -> bytes | None:
    """
    The write hot path: `encode_command("put", {"key": key, "value": value})`, the same
    bytes, for an ASCII key within the limit and a bytes or str value stored uncompressed
    (its encoding within `compress_threshold_bytes`), without building the command map.

    Returns:
        The command, or None for anything else (`encode_command` judges and explains it).
    """
    if not (type(key) is str and key.isascii() and 0 < len(key) <= config.max_key_bytes):
        return None
    if type(value) is not bytes and type(value) is not str:
        return None
    pack = _thread_packer()
    stored = pack(value)
    if len(stored) > config.max_value_bytes or len(stored) > config.compress_threshold_bytes:
        return None
    return b"".join((_PLAIN_PUT_HEAD, pack(key), _PLAIN_PUT_VALUE, pack(stored), _PLAIN_PUT_TAIL))

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
