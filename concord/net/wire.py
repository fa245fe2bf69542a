"""
The client wire envelope (protocol v1, docs/protocol.md): decode, validate and encode.

Pure: no sockets, no clock. The front door, the backends and the Python client all use
this module, so the envelope rules live in exactly one place.

Layout (protocol v1; the version is the op table below, carried by the protocol, since
a client request is a single msgpack map with no header byte; docs/protocol.md is the
contract):

    request  = msgpack map {
        "op": str,                      # a name in OPS
        "id": int,                      # echoed in the reply
        ...op args,                     # per OPS[op].args (declared types, required/optional)
        "token"?: str, "ns"?: str, "timeout_ms"?: int > 0,
        "client_id"?: str|bytes + "seq"?: int >= 0   (both or neither),
        "traceparent"?: str,
    }
    ok reply    = {"id": int, "ok": true, ...result,
                   "leader_client"?: str}   # added by a follower that forwarded it
    error reply = {"id": int|nil, "ok": false, "error": code, "message": str,
                   "leader": str|nil}

Validation is strict: a payload that is not exactly one msgpack map with str keys, an
unknown op, a missing or wrong-typed arg, an arg the op does not declare, an ext type
anywhere, or a payload over `max_request_bytes` is rejected with `InvalidRequestError`
(wire code invalid_request), whose `request_id` is the id when it could be read.

Every op is declared ONCE, in `OPS`: its name, arguments, kind (read, write, admin: the
client's resend rule, and whether it carries a session), the process that serves it
(`Backend`) and whether a same-host client may serve it from shared memory (`local`).
Every other op set is derived from it (`READ_OPS`, `WRITE_OPS`, `ADMIN_OPS`, `LOCAL_OPS`,
`SESSION_OPS` below; the client's `OPS_KIND`); the kv handlers, the client's methods and
docs/protocol.md are checked against it by tests/test_optable.py. docs/protocol.md's op
summary can be generated from it (`describe_ops()`).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Mapping

import msgpack

from concord.errors import ClientError, InvalidRequestError
from concord.net.opspec import (  # the op table's vocabulary, re-exported: its old home
    Access as Access,
    Arg as Arg,
    ArgType as ArgType,
    Backend as Backend,
    CONSISTENCY_LEVELS as CONSISTENCY_LEVELS,
    OpKind as OpKind,
    OpSpec as OpSpec,
    _CHECKS,
    _TYPE_TEXT,
    _is_int,
)

PROTOCOL_VERSION = 1

#: Default cap on a request payload (one frame): a 1 MiB value plus room for its key and
#: envelope. The front door's `max_request_bytes` overrides it.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024 + 64 * 1024

#: Nesting deeper than this is refused (a hostile payload must not blow the stack).
MAX_DEPTH = 64


#: Optional fields allowed on every request (docs/protocol.md "Requests").
ENVELOPE_ARGS: tuple[Arg, ...] = (
    Arg("token", ArgType.STR, doc="auth token"),
    Arg("ns", ArgType.STR, doc="tenant namespace"),
    Arg("timeout_ms", ArgType.POSITIVE_INT, doc="server-side deadline for this request"),
    Arg("client_id", ArgType.STR_OR_BYTES, doc="session id for exactly-once writes (with seq)"),
    Arg("seq", ArgType.NON_NEGATIVE_INT, doc="per-session sequence number (with client_id)"),
    Arg("min_seq", ArgType.NON_NEGATIVE_INT,
        doc="lowest seq of this client_id not yet answered (with seq; default seq)"),
    Arg("traceparent", ArgType.STR, doc="W3C trace context"),
)
_ENVELOPE_INDEX = {a.name: a for a in ENVELOPE_ARGS}

_KEY = Arg("key", ArgType.STR, required=True)
_CONSISTENCY = Arg("consistency", ArgType.CONSISTENCY, doc="default leader")
_TTL = Arg("ttl", ArgType.NUMBER, doc="seconds")
_FILTER_ARGS: tuple[Arg, ...] = (
    Arg("prefix", ArgType.STR),
    Arg("suffix", ArgType.STR),
    Arg("contains", ArgType.STR),
    Arg("pattern", ArgType.STR, doc="regular expression"),
    Arg("range", ArgType.KEY_RANGE, doc="inclusive [lo, hi], nil: open end"),
    Arg("where", ArgType.FILTER, doc="declarative value filter (docs/formats/kv.md)"),
    Arg("limit", ArgType.NON_NEGATIVE_INT),
    Arg("offset", ArgType.NON_NEGATIVE_INT),
)
_CONDITIONS = ("expected", "version", "mod_revision", "absent")
_CONDITION_ARGS: tuple[Arg, ...] = (
    Arg("expected", ArgType.ANY),
    Arg("version", ArgType.NON_NEGATIVE_INT),
    Arg("mod_revision", ArgType.NON_NEGATIVE_INT),
    Arg("absent", ArgType.BOOL),
)
_MEMBER_ID = Arg("member_id", ArgType.STR, required=True)
_LEASE = Arg("lease", ArgType.POSITIVE_INT, doc="attach the key to this lease (not with ttl)")
_COUNTER_ARGS: tuple[Arg, ...] = (
    _KEY, Arg("delta", ArgType.INT, doc="default 1"),
    Arg("ttl", ArgType.NUMBER, doc="seconds; set only when the key is created"),
)

_R = Backend.READ
_W = Backend.RAFT
_WRITE = OpKind.WRITE
_ADMIN = OpKind.ADMIN
_PUB = Access.PUBLIC
_TOK = Access.TOKEN
_RK = Access.READ_KEYS
_WK = Access.WRITE_KEYS
_RR = Access.READ_RANGE
_WR = Access.WRITE_RANGE
_ADM = Access.ADMIN

_OP_LIST: tuple[OpSpec, ...] = (
    OpSpec("put", _W, (_KEY, Arg("value", ArgType.ANY, True), _TTL, Arg("compress", ArgType.BOOL),
                       _LEASE),
           doc="-> {revision}", kind=_WRITE, access=_WK),
    OpSpec("get", _R, (_KEY, _CONSISTENCY, Arg("meta", ArgType.BOOL)),
           doc="-> {value} (+ revision, version, create_revision, ttl with meta), or not_found", local=True, access=_RK,
           inline=True),
    OpSpec("delete", _W, (_KEY,), doc="-> {deleted, revision}", kind=_WRITE, access=_WK),
    OpSpec("put_many", _W, (Arg("items", ArgType.ITEMS, True), Arg("compress", ArgType.BOOL)),
           doc="-> {revision}", kind=_WRITE, access=_WK),
    OpSpec("get_many", _R, (Arg("keys", ArgType.STR_LIST, True), _CONSISTENCY),
           doc="-> {values: {key: value}}", local=True, access=_RK, inline=True),
    OpSpec("delete_many", _W, (Arg("keys", ArgType.STR_LIST, True),), kind=_WRITE, access=_WK),
    OpSpec("touch", _W, (_KEY, Arg("ttl", ArgType.OPT_NUMBER, True, doc="nil: never expire")), kind=_WRITE, access=_WK),
    OpSpec("touch_many", _W, (Arg("items", ArgType.TTL_ITEMS, True),), kind=_WRITE, access=_WK),
    OpSpec("ttl", _R, (_KEY, _CONSISTENCY), doc="-> {ttl}", local=True, access=_RK, inline=True),
    OpSpec("get_with_ttl", _R, (_KEY, _CONSISTENCY), doc="-> {value, ttl}", local=True, access=_RK, inline=True),
    OpSpec("get_all", _R, (Arg("limit", ArgType.NON_NEGATIVE_INT), Arg("after", ArgType.STR),
                           _CONSISTENCY), local=True, access=_RR),
    OpSpec("hash_content", _R, (Arg("limit", ArgType.NON_NEGATIVE_INT), Arg("after", ArgType.STR),
                                _CONSISTENCY),
           doc="-> {hash, keys, last, more}: one page of the content hash (keys after `after`)", access=_RR),
    OpSpec("put_if", _W, (_KEY, Arg("value", ArgType.ANY, True), *_CONDITION_ARGS, _TTL,
                          Arg("compress", ArgType.BOOL), _LEASE),
           one_of=(_CONDITIONS,), kind=_WRITE, access=_WK),
    OpSpec("delete_if", _W, (_KEY, *_CONDITION_ARGS), one_of=(_CONDITIONS,), kind=_WRITE, access=_WK),
    OpSpec("keys", _R, (*_FILTER_ARGS, _CONSISTENCY), local=True, access=_RR),
    OpSpec("query", _R, (*_FILTER_ARGS, _CONSISTENCY), local=True, access=_RR),
    OpSpec("count", _R, (*_FILTER_ARGS, _CONSISTENCY), local=True, access=_RR),
    OpSpec("delete_where", _W, _FILTER_ARGS, kind=_WRITE, access=_WR),
    OpSpec("create_index", _W, (Arg("name", ArgType.STR, True),
                                Arg("field", ArgType.FIELD_PATH, True)), kind=_WRITE, access=_WR),
    OpSpec("drop_index", _W, (Arg("name", ArgType.STR, True),), kind=_WRITE, access=_WR),
    OpSpec("list_indexes", _R, (_CONSISTENCY,), doc="-> {indexes}", access=_RR),
    OpSpec("index_lookup", _R, (Arg("name", ArgType.STR, True), Arg("value", ArgType.ANY),
                                Arg("range", ArgType.ANY, doc="[lo, hi] of index values, nil: open"),
                                Arg("limit", ArgType.NON_NEGATIVE_INT),
                                _CONSISTENCY), access=_RR),
    OpSpec("events", _W, (Arg("since_revision", ArgType.NON_NEGATIVE_INT, True),
                          Arg("prefix", ArgType.STR), Arg("limit", ArgType.NON_NEGATIVE_INT)),
           doc="-> {events, next_revision, compacted}", access=_RR),
    OpSpec("status", _W, access=_TOK),
    OpSpec("members", _W, access=_TOK),
    OpSpec("backup", _W, (Arg("index", ArgType.NON_NEGATIVE_INT, doc="the image to read; absent: start one"),
                          Arg("offset", ArgType.NON_NEGATIVE_INT, doc="byte offset of the chunk")),
           doc="-> {node, index, term, state: pending|ready, size?, offset?, data?}", access=_ADM),
    OpSpec("hash_kv", _W, (Arg("index", ArgType.NON_NEGATIVE_INT, doc="default: applied index"),),
           doc="-> {node, applied, index, hash}: the kv state hash right after `index`", access=_ADM),
    OpSpec("add_member", _W, (_MEMBER_ID, Arg("host", ArgType.STR, True),
                              Arg("client_port", ArgType.NON_NEGATIVE_INT, True),
                              Arg("peer_port", ArgType.NON_NEGATIVE_INT, True),
                              Arg("events_port", ArgType.NON_NEGATIVE_INT, True),
                              Arg("learner", ArgType.BOOL)), kind=_ADMIN, access=_ADM),
    OpSpec("remove_member", _W, (_MEMBER_ID,), kind=_ADMIN, access=_ADM),
    OpSpec("promote_member", _W, (_MEMBER_ID,), kind=_ADMIN, access=_ADM),
    OpSpec("transfer_leader", _W, (Arg("member_id", ArgType.STR, doc="default: best follower"),), kind=_ADMIN, access=_ADM),
    OpSpec("fault", _W, (Arg("command", ArgType.MAP, True),),
           doc="test-only: PeerTransport.apply_fault_command(command); needs faults.enabled", kind=_ADMIN, access=_ADM),
    OpSpec("bootstrap", _W, (Arg("description", ArgType.STR),), kind=_ADMIN, access=_PUB,
           doc="-> {token, token_id}: the first admin token; only while no token exists (docs/security.md)"),
    OpSpec("whoami", _W, doc="-> {token_id, role, tenant, auth}", access=_TOK),
    OpSpec("token_create", _W, (Arg("role", ArgType.STR, True), Arg("tenant", ArgType.STR),
                                Arg("ttl", ArgType.NUMBER, doc="seconds; absent: never expires"),
                                Arg("description", ArgType.STR)), kind=_ADMIN, access=_ADM,
           doc="-> {token, token_id, expires_at_ms}: the secret is shown once"),
    OpSpec("token_list", _W, doc="-> {tokens: [{id, role, tenant, state, ...}]} (never secrets)",
           access=_ADM),
    OpSpec("token_revoke", _W, (Arg("token_id", ArgType.STR, True),), kind=_ADMIN, access=_ADM,
           doc="-> {revoked: bool}"),
    OpSpec("role_put", _W, (Arg("name", ArgType.STR, True), Arg("rules", ArgType.ANY, True, doc="[[pattern, perm, effect], ...]")),
           kind=_ADMIN, access=_ADM, doc="-> {created: bool}"),
    OpSpec("role_list", _W, doc="-> {roles: [{name, builtin, rules}]}", access=_ADM),
    OpSpec("role_delete", _W, (Arg("name", ArgType.STR, True),), kind=_ADMIN, access=_ADM,
           doc="-> {deleted: bool}"),
    OpSpec("tenant_put", _W, (Arg("name", ArgType.STR, True), Arg("max_keys", ArgType.NON_NEGATIVE_INT),
                              Arg("max_bytes", ArgType.NON_NEGATIVE_INT), Arg("write_rate", ArgType.NUMBER),
                              Arg("read_rate", ArgType.NUMBER)), kind=_ADMIN, access=_ADM,
           doc="-> {created: bool}: quotas, 0 or absent: unlimited"),
    OpSpec("tenant_list", _W, doc="-> {tenants: [{name, quota..., keys, bytes}]}", access=_ADM),
    OpSpec("tenant_delete", _W, (Arg("name", ArgType.STR, True),), kind=_ADMIN, access=_ADM,
           doc="-> {deleted: bool}; refused while it holds keys or live tokens"),
    OpSpec("tenant_usage", _W, (Arg("name", ArgType.STR, doc="default: the token's tenant"),),
           doc="-> {name, keys, bytes, max_keys, max_bytes, write_rate, read_rate}", access=_TOK),
    OpSpec("incr", _W, _COUNTER_ARGS, doc="-> {value, revision}: add delta to an integer (absent: 0)",
           kind=_WRITE, access=_WK),
    OpSpec("decr", _W, _COUNTER_ARGS, doc="-> {value, revision}: subtract delta", kind=_WRITE,
           access=_WK),
    OpSpec("lease_grant", _W, (Arg("ttl", ArgType.NUMBER, True, doc="seconds"),),
           doc="-> {lease, ttl, revision}", kind=_WRITE, access=_WR),
    OpSpec("lease_keepalive", _W, (Arg("lease", ArgType.POSITIVE_INT, True),),
           doc="-> {lease, ttl, revision}, or not_found once expired", kind=_WRITE, access=_WR),
    OpSpec("lease_revoke", _W, (Arg("lease", ArgType.POSITIVE_INT, True),),
           doc="-> {deleted, revision}: deletes the lease's keys", kind=_WRITE, access=_WR),
    OpSpec("lease_list", _W, (_CONSISTENCY,), doc="-> {leases: [{lease, ttl, remaining, keys}]}",
           access=_RR),
)

#: The op registry: the ONE table of ops, their args and their backend.
OPS: Mapping[str, OpSpec] = {spec.name: spec for spec in _OP_LIST}

# Every other op set is derived from OPS (never listed again anywhere).

#: Reads a read worker serves from shared memory (kv's read handlers: concord.kv.reads).
READ_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.backend is Backend.READ)
#: Writes a client may send: log entries kv builds and deduplicates (concord.kv.commands).
WRITE_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.kind is OpKind.WRITE)
#: Ops that change the cluster and are never resent after silence.
ADMIN_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.kind is OpKind.ADMIN)
#: Ops a same-host client may serve from the node's shared memory.
LOCAL_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.local)
#: Reads of bounded cost the front door may answer itself from shared memory.
INLINE_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.inline)
#: Ops that carry the (client_id, seq) session pair.
SESSION_OPS: frozenset[str] = frozenset(n for n, s in OPS.items() if s.session)


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request. `args` holds the op's own args (not the envelope fields)."""

    op: str
    id: int
    args: Mapping[str, object]
    token: str | None = None
    ns: str | None = None
    timeout_ms: int | None = None
    client_id: str | bytes | None = None
    seq: int | None = None
    traceparent: str | None = None
    min_seq: int | None = None

    @property
    def consistency(self) -> str:
        """The read consistency asked for (default "leader")."""
        value = self.args.get("consistency", "leader")
        return value if isinstance(value, str) else "leader"


def _reject_ext(code: int, data: bytes) -> object:
    raise InvalidRequestError(f"msgpack ext type {code} is not allowed")


def _check_plain(value: object, depth: int) -> None:
    """Raise if `value` holds anything but nil, bool, int, float, str, bytes, list, map."""
    if depth > MAX_DEPTH:
        raise InvalidRequestError(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float, str, bytes)):
        raise InvalidRequestError(f"value of type {type(value).__name__} is not allowed")


def unpack_map(payload: bytes, max_bytes: int) -> dict[str, object]:
    """
    Decode one msgpack map with str keys and plain values, or raise InvalidRequestError.

    The error carries the map's `id` when the payload decoded to a map with an integer
    `id` (the id could be read), else None.
    """
    if len(payload) > max_bytes:
        raise InvalidRequestError(f"request of {len(payload)} bytes exceeds max_request_bytes {max_bytes}")
    if not payload:
        raise InvalidRequestError("payload is empty")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=False,
            use_list=True,
            timestamp=0,
            ext_hook=_reject_ext,
        )
    except InvalidRequestError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # ExtraData, FormatError, StackError are ValueError subclasses; invalid UTF-8 is
        # UnicodeDecodeError (ValueError).
        raise InvalidRequestError(f"payload is not one msgpack value: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise InvalidRequestError(f"payload is a msgpack {type(obj).__name__}, not a map")
    # The map decoded, so its id can be read: every refusal from here on carries it.
    raw_id = obj.get("id")
    request_id = raw_id if _is_int(raw_id) else None
    for key in obj:
        if not isinstance(key, str):
            raise InvalidRequestError(f"map key {repr(key)[:64]} is not a string", request_id)
    try:
        _check_plain(obj, 0)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, request_id) from None
    return obj


def _split_args(
    obj: Mapping[str, object], spec: OpSpec, request_id: int
) -> tuple[dict[str, object], dict[str, object]]:
    """The op's own args and the envelope fields of a request map, each type-checked."""
    op = spec.name
    args: dict[str, object] = {}
    envelope: dict[str, object] = {}
    for name, value in obj.items():
        if name in ("op", "id"):
            continue
        arg = spec.arg_index.get(name)
        target = args
        if arg is None:
            arg = _ENVELOPE_INDEX.get(name)
            target = envelope
        if arg is None:
            raise InvalidRequestError(f"op {op} does not take argument {name!r}", request_id)
        if not _CHECKS[arg.type](value):
            raise InvalidRequestError(
                f"argument {name} of op {op} must be {_TYPE_TEXT[arg.type]}", request_id
            )
        target[name] = value
    return args, envelope


def validate(obj: Mapping[str, object], registry: Mapping[str, OpSpec] = OPS) -> Request:
    """
    Check a decoded request map against the op registry.

    Raises:
        InvalidRequestError: with `request_id` set when the id could be read.
    """
    raw_id = obj.get("id")
    request_id = raw_id if _is_int(raw_id) else None
    if "id" not in obj:
        raise InvalidRequestError("missing field id")
    if request_id is None:
        raise InvalidRequestError(f"field id must be an integer, got {type(raw_id).__name__}")
    assert isinstance(request_id, int)
    op = obj.get("op")
    if "op" not in obj:
        raise InvalidRequestError("missing field op", request_id)
    if not isinstance(op, str):
        raise InvalidRequestError(f"field op must be a string, got {type(op).__name__}", request_id)
    spec = registry.get(op)
    if spec is None:
        raise InvalidRequestError(f"unknown op {op!r}", request_id)
    args, envelope = _split_args(obj, spec, request_id)
    for arg in spec.args:
        if arg.required and arg.name not in args:
            raise InvalidRequestError(f"op {op} requires argument {arg.name}", request_id)
    for group in spec.one_of:
        present = [name for name in group if name in args]
        if len(present) != 1:
            raise InvalidRequestError(
                f"op {op} takes exactly one of {', '.join(group)}, got {len(present)}", request_id
            )
    if ("client_id" in envelope) != ("seq" in envelope):
        raise InvalidRequestError("client_id and seq go together", request_id)
    if "min_seq" in envelope and ("seq" not in envelope or envelope["min_seq"] > envelope["seq"]):  # type: ignore[operator]
        raise InvalidRequestError("min_seq needs seq and may not exceed it", request_id)
    return _request(op, request_id, args, envelope)


def _request(op: str, request_id: int, args: dict[str, object],
             envelope: Mapping[str, object]) -> Request:
    """A Request of checked parts: the envelope fields a map may carry beside op, id and args."""
    return Request(
        op=op,
        id=request_id,
        args=args,
        token=envelope.get("token"),  # type: ignore[arg-type]
        ns=envelope.get("ns"),  # type: ignore[arg-type]
        timeout_ms=envelope.get("timeout_ms"),  # type: ignore[arg-type]
        client_id=envelope.get("client_id"),  # type: ignore[arg-type]
        seq=envelope.get("seq"),  # type: ignore[arg-type]
        traceparent=envelope.get("traceparent"),  # type: ignore[arg-type]
        min_seq=envelope.get("min_seq"),  # type: ignore[arg-type]
    )


def decode_request(
    payload: bytes,
    registry: Mapping[str, OpSpec] = OPS,
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> Request:
    """
    Decode and validate one request payload.

    A request that is valid in every respect is checked in one pass (`_valid_request`);
    anything else goes through `unpack_map` and `validate`, which name the fault.

    Raises:
        InvalidRequestError: for malformed input of any kind; `request_id` is the id when
            it could be read, else None.
    """
    if 0 < len(payload) <= max_bytes:
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True,
                                  timestamp=0, ext_hook=_reject_ext)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError, InvalidRequestError):
            obj = None
        if type(obj) is dict:
            request = _valid_request(obj, registry)
            if request is not None:
                return request
    return validate(unpack_map(payload, max_bytes), registry)


#: The types of msgpack's scalars that `_check_plain` allows (unpackb makes no subclasses).
_PLAIN_SCALARS = frozenset((str, int, float, bytes, bool, type(None)))
_ENVELOPE_CHECKS = {a.name: _CHECKS[a.type] for a in ENVELOPE_ARGS}


def _is_plain(value: object, depth: int) -> bool:
    """`_check_plain` that answers instead of raising, for a value of a decoded map."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is dict:
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1)
                   for k, v in value.items())  # type: ignore[attr-defined]
    if kind is list:
        return all(_is_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return kind in _PLAIN_SCALARS


def _valid_request(obj: dict[object, object], registry: Mapping[str, OpSpec]) -> Request | None:
    """
    The Request of a decoded map that `unpack_map` and `validate` would accept (the same
    Request), in one pass over it; None for anything they would refuse: they then say why.
    """
    op = obj.get("op")
    request_id = obj.get("id")
    if type(op) is not str or type(request_id) is not int:
        return None
    spec = registry.get(op)
    if spec is None:
        return None
    checks = spec.arg_checks
    args: dict[str, object] = {}
    envelope: dict[str, object] | None = None
    for name, value in obj.items():
        if type(value) not in _PLAIN_SCALARS and not _is_plain(value, 1):
            return None
        if name == "op" or name == "id":
            continue
        check = checks.get(name)  # type: ignore[call-overload]  # a key not a str: not found
        if check is not None:
            if not check(value):
                return None
            args[name] = value  # type: ignore[index]
            continue
        check = _ENVELOPE_CHECKS.get(name)  # type: ignore[call-overload]
        if check is None or not check(value):
            return None
        if envelope is None:
            envelope = {}
        envelope[name] = value  # type: ignore[index]
    for required in spec.required:
        if required not in args:
            return None
    for group in spec.one_of:
        if sum(name in args for name in group) != 1:
            return None
    if envelope is None:
        return Request(op, request_id, args)
    if ("client_id" in envelope) != ("seq" in envelope):
        return None
    if "min_seq" in envelope and ("seq" not in envelope or envelope["min_seq"] > envelope["seq"]):  # type: ignore[operator]
        return None
    return _request(op, request_id, args, envelope)


def decode_validated(payload: bytes, registry: Mapping[str, OpSpec] = OPS) -> Request:
    """
    Decode a request payload the front door already validated (`decode_request`): the
    backend link hands backends nothing else (concord.net.backend). The same Request as
    `decode_request`, without checking every value again; a payload that is not such a
    request map (never from the door) goes through `decode_request`, which names the fault.

    Raises:
        InvalidRequestError: as `decode_request`, for a payload the door did not validate.
    """
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True,
                              timestamp=0, ext_hook=_reject_ext)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError, InvalidRequestError):
        return decode_request(payload, registry, len(payload))
    op = obj.get("op") if type(obj) is dict else None
    spec = registry.get(op) if type(op) is str else None
    request_id = obj.get("id") if spec is not None else None
    if spec is None or type(request_id) is not int:
        return decode_request(payload, registry, len(payload))
    args: dict[str, object] = {}
    envelope: dict[str, object] = {}
    arg_index = spec.arg_index
    for name, value in obj.items():
        if name in arg_index:
            args[name] = value
        elif name != "op" and name != "id":
            envelope[name] = value
    if not envelope:
        return Request(spec.name, request_id, args)
    return _request(spec.name, request_id, args, envelope)


_packers = threading.local()
#: A thread's Packer starts this small and, once a pack outgrew `_PACKER_KEEP_BYTES`, is
#: dropped: no thread keeps a big buffer for a big value it once encoded.
_PACKER_START_BYTES = 4096
_PACKER_KEEP_BYTES = 64 * 1024


def _packer() -> msgpack.Packer:
    """This thread's Packer."""
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, buf_size=_PACKER_START_BYTES)
    return packer


def pack(obj: Mapping[str, object]) -> bytes:
    """Encode a map as msgpack (str as str, bytes as bin)."""
    # NB: one Packer per thread, reused: msgpack.packb builds one per call (with a 256 KiB
    # buffer), which costs twice the encoding of a small reply. A failed pack leaves the
    # Packer empty.
    packer = _packer()
    data: bytes = packer.pack(obj)
    if len(data) > _PACKER_KEEP_BYTES:
        del _packers.packer
    return data


def encode_request(op: str, request_id: int, **args: object) -> bytes:
    """Encode a request map (client side); no validation."""
    return pack({"op": op, "id": request_id, **args})


def ok_reply(request_id: int, result: Mapping[str, object] | None = None) -> bytes:
    """Encode `{"id", "ok": true, ...result}`."""
    reply: dict[str, object] = {"id": request_id, "ok": True}
    if result:
        for reserved in ("id", "ok"):
            if reserved in result:
                raise ValueError(f"result may not carry reserved field {reserved}")
        reply.update(result)
    return pack(reply)


#: ok_reply's bytes around a `{"value": v}` result: map of 3, "id", (the id), "ok": true, "value".
_OK_ID = b"\x83\xa2id"
_OK_VALUE = b"\xa2ok\xc3\xa5value"


def ok_value_reply(request_id: int, value: bytes) -> bytes:
    """
    `ok_reply(request_id, {"value": v})` for the value `v` whose msgpack encoding is
    `value`, spliced in as it is (a stored value's bytes: never decoded and encoded
    again). The same bytes as ok_reply gives for a value in its canonical encoding, which
    is how kv stores every value (concord.kv.values.pack_value).
    """
    head: bytes = _packer().pack(request_id)
    return _OK_ID + head + _OK_VALUE + value


def error_reply(request_id: int | None, code: str, message: str, leader: str | None = None) -> bytes:
    """Encode `{"id", "ok": false, "error", "message", "leader"}`."""
    return pack({"id": request_id, "ok": False, "error": code, "message": message, "leader": leader})


def reply_for_error(exc: ClientError, request_id: int | None = None) -> bytes:
    """Encode the error reply for a ClientError (its code, message and leader hint)."""
    leader = getattr(exc, "leader_hint", None)
    rid = exc.request_id if exc.request_id is not None else request_id
    return error_reply(rid, exc.code, exc.message, leader if isinstance(leader, str) else None)


#: The optional success-reply field naming the leader's client endpoint: added by a
#: follower to the leader's reply to a request it forwarded (`with_leader_client`), and
#: the same field, same meaning, as in the `status` reply (docs/protocol.md "Replies").
LEADER_CLIENT_FIELD = "leader_client"
_LEADER_CLIENT_KEY: bytes = msgpack.packb(LEADER_CLIENT_FIELD)
_MAP16 = struct.Struct(">BH")
_MAP32 = struct.Struct(">BI")


def with_leader_client(reply: bytes, endpoint: str | None) -> bytes:
    """
    `reply` with `"leader_client": endpoint` appended if it is a success map that has no
    such field; anything else (an error reply, a reply that does not decode, no endpoint)
    unchanged. The reply's own bytes are kept as they are: only the map header's count
    changes (fixmap, map16 or map32 in; the smallest form that holds the new count out).
    """
    if endpoint is None or not reply:
        return reply
    try:
        obj = msgpack.unpackb(reply, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return reply
    if not isinstance(obj, dict) or obj.get("ok") is not True or LEADER_CLIENT_FIELD in obj:
        return reply
    first = reply[0]
    if first & 0xF0 == 0x80:
        count, body = first & 0x0F, reply[1:]
    elif first == 0xDE:
        count, body = _MAP16.unpack_from(reply)[1], reply[_MAP16.size:]
    else:  # a dict decoded from a map: 0xDF, map32
        count, body = _MAP32.unpack_from(reply)[1], reply[_MAP32.size:]
    count += 1
    if count <= 0x0F:
        header = bytes((0x80 | count,))
    elif count <= 0xFFFF:
        header = _MAP16.pack(0xDE, count)
    elif count <= 0xFFFF_FFFF:
        header = _MAP32.pack(0xDF, count)
    else:
        return reply
    value: bytes = msgpack.packb(endpoint)
    return header + body + _LEADER_CLIENT_KEY + value


def peek_id(payload: bytes) -> int | None:
    """Best-effort id of a reply or request payload (None if it cannot be read)."""
    if not payload:
        raise InvalidRequestError("payload is empty")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        return rid if _is_int(rid) else None
    return None


def describe_ops(registry: Mapping[str, OpSpec] = OPS) -> str:
    """
    Markdown table of the ops: kind, serving process, local, args and notes. It is
    docs/protocol.md's "Op table" section, checked by tests/test_optable.py; regenerate
    it with `python3 -c "from concord.net.wire import describe_ops; print(describe_ops())"`.
    """
    lines = ["| op | kind | served by | local | args | notes |", "|---|---|---|---|---|---|"]
    for spec in registry.values():
        parts = []
        for arg in spec.args:
            mark = "" if arg.required else "?"
            parts.append(f"`{arg.name}{mark}`: {arg.type.value}")
        notes = spec.doc
        if spec.one_of:
            notes += " exactly one of: " + "; ".join(", ".join(g) for g in spec.one_of)
        notes = notes.strip().replace("|", "\\|")
        local = "yes" if spec.local else ""
        served = "front door, else read worker" if spec.inline else f"{spec.backend.value} worker"
        lines.append(f"| `{spec.name}` | {spec.kind.value} | {served} | {local} "
                     f"| {', '.join(parts)} | {notes} |")
    return "\n".join(lines)
