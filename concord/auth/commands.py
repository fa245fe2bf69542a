"""
Auth commands: the log entries that change the auth tables, and how apply runs them.

Pure. Built by the leader from a validated wire request (`build_auth_command`), decoded
strictly at apply (`decode_auth_command`), run by `apply_auth` against an `AuthState`,
which returns the SYSTEM records to write (the state machine stores them, so they are
hashed, snapshotted and published to shared memory like every record). Layout (command
format version 1, a msgpack map as every kv command, docs/formats/kv.md):

    auth_bootstrap  "id": str, "hash": bin(32), "description": str
    token_put       "id", "hash", "role": str, "tenant": str|nil, "ttl_ms": int >= 0,
                    "description": str
    token_revoke    "id": str
    role_put        "name": str, "rules": [[pattern, perm, effect], ...]
    role_delete     "name": str
    tenant_put      "name": str, "max_keys": int, "max_bytes": int,
                    "write_rate": number, "read_rate": number
    tenant_delete   "name": str

Every command (data ones too) may carry "auth": [token_id, secret_hash]: the credential
apply checks (the secret itself never enters the log). `auth_bootstrap` needs none and
succeeds only while no token exists; the others need a cluster admin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from concord.auth.rules import BUILTIN_ROLES, Rule, check_role_name, parse_rules
from concord.auth.state import (
    ROLE_PREFIX,
    TENANT_PREFIX,
    TOKEN_PREFIX,
    AuthState,
    Principal,
    TokenRecord,
    encode_role,
    encode_tenant,
)
from concord.auth.tenants import Quota, Usage, check_tenant_name
from concord.auth.tokens import ID_RE, Credential
from concord.errors import ForbiddenError, InvalidRequestError

AUTH_COMMAND_FIELDS: Final[dict[str, frozenset[str]]] = {
    "auth_bootstrap": frozenset({"id", "hash", "description"}),
    "token_put": frozenset({"id", "hash", "role", "tenant", "ttl_ms", "description"}),
    "token_revoke": frozenset({"id"}),
    "role_put": frozenset({"name", "rules"}),
    "role_delete": frozenset({"name"}),
    "tenant_put": frozenset({"name", "max_keys", "max_bytes", "write_rate", "read_rate"}),
    "tenant_delete": frozenset({"name"}),
}
AUTH_OPS: Final = frozenset(AUTH_COMMAND_FIELDS)
_MAX_DESCRIPTION: Final = 256
MAX_TOKEN_TTL_S: Final = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class AuthCommand:
    """A decoded auth command: its op and its checked fields."""

    op: str
    fields: Mapping[str, object]


def decode_credential(raw: object) -> Credential:
    """The "auth" field of a command: [token_id, secret_hash]."""
    if (not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], str)
            or ID_RE.fullmatch(raw[0]) is None or not isinstance(raw[1], bytes)
            or len(raw[1]) != 32):
        raise InvalidRequestError("command auth must be [token_id, secret_hash]")
    return Credential(raw[0], raw[1])


def encode_credential(credential: Credential) -> list[object]:
    return [credential.token_id, credential.secret_hash]


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{what} must be an integer >= 0, got {value!r}")
    return value


def _rate(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        raise InvalidRequestError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


def _description(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_DESCRIPTION:
        raise InvalidRequestError(f"description must be a string of at most {_MAX_DESCRIPTION} characters")
    return value


def _token_id(value: object) -> str:
    if not isinstance(value, str) or ID_RE.fullmatch(value) is None:
        raise InvalidRequestError(f"token id must be 16 hex digits, got {value!r}")
    return value


def decode_auth_command(m: Mapping[str, object]) -> AuthCommand:
    """
    Check an auth command's fields (the map's "v", "op", "client_id", "seq", "auth" are
    the caller's).

    Raises:
        InvalidRequestError: naming the bad field.
    """
    op = str(m["op"])
    wanted = AUTH_COMMAND_FIELDS[op]
    given = {k: v for k, v in m.items() if k not in ("v", "op", "client_id", "seq", "auth")}
    if given.keys() != wanted:
        missing = sorted(wanted - given.keys())
        extra = sorted(given.keys() - wanted)
        raise InvalidRequestError(f"command {op!r} " + (
            f"lacks field {missing[0]!r}" if missing else f"has unknown field {extra[0]!r}"))
    checked: dict[str, object] = {}
    for name, value in given.items():
        if name == "id":
            checked[name] = _token_id(value)
        elif name == "hash":
            if not isinstance(value, bytes) or len(value) != 32:
                raise InvalidRequestError("hash must be 32 bytes")
            checked[name] = value
        elif name == "role":
            checked[name] = check_role_name(value)
        elif name == "name":
            checked[name] = check_role_name(value) if op.startswith("role") else check_tenant_name(value)
        elif name == "tenant":
            checked[name] = None if value is None else check_tenant_name(value)
        elif name in ("ttl_ms", "max_keys", "max_bytes"):
            checked[name] = _int(value, name)
        elif name in ("write_rate", "read_rate"):
            checked[name] = _rate(value, name)
        elif name == "description":
            checked[name] = _description(value)
        elif name == "rules":
            checked[name] = parse_rules(value)
    return AuthCommand(op, checked)


def build_auth_command(op: str, args: Mapping[str, object]) -> dict[str, object]:
    """
    The command map of an auth wire op whose secret part (`id`, `hash` of new tokens) the
    leader has already added to `args`. Validates everything (the same checks as apply).

    Raises:
        InvalidRequestError.
    """
    cmd: dict[str, object] = {"v": 1, "op": op}
    if op in ("auth_bootstrap", "token_put"):
        cmd["id"], cmd["hash"] = args["id"], args["hash"]
        cmd["description"] = args.get("description", "")
    if op == "token_put":
        cmd["role"] = args.get("role")
        cmd["tenant"] = args.get("tenant")
        cmd["ttl_ms"] = _ttl_ms(args.get("ttl"))
    elif op == "token_revoke":
        cmd["id"] = args.get("token_id")
    elif op in ("role_put", "role_delete", "tenant_put", "tenant_delete"):
        cmd["name"] = args.get("name")
        if op == "role_put":
            cmd["rules"] = args.get("rules")
        if op == "tenant_put":
            for name in ("max_keys", "max_bytes"):
                cmd[name] = args.get(name, 0)
            for name in ("write_rate", "read_rate"):
                cmd[name] = args.get(name, 0.0)
    decode_auth_command(cmd)
    return cmd


def _ttl_ms(ttl: object) -> int:
    """A token ttl in seconds (absent: never expires) as milliseconds (0: never)."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TOKEN_TTL_S:
        raise InvalidRequestError(f"token ttl must be a number of seconds in (0, {MAX_TOKEN_TTL_S}], got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))

Records = list[tuple[str, bytes | None]]


def apply_auth(
    state: AuthState,
    command: AuthCommand,
    principal: Principal | None,
    usage: Mapping[str, Usage],
    ts: int,
) -> tuple[dict[str, object], Records]:
    """
    Decide an auth command at entry time `ts`: its result and the SYSTEM records to write
    (None: delete). Changes nothing itself.

    Raises:
        ForbiddenError, UnauthorizedError, InvalidRequestError: the command is refused.
    """
    op, f = command.op, command.fields
    if op == "auth_bootstrap":
        if state.active:
            raise ForbiddenError("bootstrap is refused: tokens already exist")
        record = TokenRecord(str(f["id"]), _hash(f), "admin", None, 0, ts,
                             0, str(f["description"]))
        return {"token_id": record.token_id}, [(TOKEN_PREFIX + record.token_id, record.encode())]
    if principal is None:
        raise ForbiddenError(f"{op} needs a cluster admin token")
    principal.check_cluster_admin(op)
    return _DECIDE[op](state, f, usage, ts)


Decision = tuple[dict[str, object], Records]


def _token_put(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
               ts: int) -> Decision:
    role, tenant = str(f["role"]), f["tenant"]
    if state.role_rules(role) is None:
        raise InvalidRequestError(f"role {role!r} does not exist")
    if tenant is not None and tenant not in state.tenants:
        raise InvalidRequestError(f"tenant {tenant!r} does not exist")
    token_id = str(f["id"])
    if token_id in state.tokens:
        raise InvalidRequestError(f"token id {token_id} already exists")
    ttl_ms = int(str(f["ttl_ms"]))
    record = TokenRecord(token_id, _hash(f), role,
                         None if tenant is None else str(tenant),
                         ts + ttl_ms if ttl_ms else 0, ts, 0, str(f["description"]))
    return ({"token_id": token_id, "expires_at_ms": record.expires_at_ms or None},
            [(TOKEN_PREFIX + token_id, record.encode())])


def _token_revoke(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
                  ts: int) -> Decision:
    token_id = str(f["id"])
    old = state.tokens.get(token_id)
    if old is None or old.revoked_ms:
        return {"revoked": False}, []
    revoked = TokenRecord(old.token_id, old.secret_hash, old.role, old.tenant,
                          old.expires_at_ms, old.created_ms, ts, old.description)
    return {"revoked": True}, [(TOKEN_PREFIX + token_id, revoked.encode())]


def _role_put(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
              ts: int) -> Decision:
    name = str(f["name"])
    if name in BUILTIN_ROLES:
        raise InvalidRequestError(f"role {name!r} is built in and cannot be changed")
    rules = f["rules"]
    assert isinstance(rules, tuple)
    created = name not in state.roles
    return {"created": created}, [(ROLE_PREFIX + name, encode_role(_rules(rules)))]


def _role_delete(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
                 ts: int) -> Decision:
    name = str(f["name"])
    if name in BUILTIN_ROLES:
        raise InvalidRequestError(f"role {name!r} is built in and cannot be deleted")
    if name not in state.roles:
        return {"deleted": False}, []
    return {"deleted": True}, [(ROLE_PREFIX + name, None)]


def _tenant_put(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
                ts: int) -> Decision:
    name = str(f["name"])
    quota = Quota(int(str(f["max_keys"])), int(str(f["max_bytes"])),
                  float(str(f["write_rate"])), float(str(f["read_rate"])))
    created = name not in state.tenants
    return {"created": created}, [(TENANT_PREFIX + name, encode_tenant(quota))]


def _tenant_delete(state: AuthState, f: Mapping[str, object], usage: Mapping[str, Usage],
                   ts: int) -> Decision:
    name = str(f["name"])
    if name not in state.tenants:
        return {"deleted": False}, []
    if usage.get(name, Usage()).keys:
        raise InvalidRequestError(f"tenant {name!r} still holds keys; delete them first")
    live = [t.token_id for t in state.tokens.values()
            if t.tenant == name and not t.revoked_ms and not t.expired(ts)]
    if live:
        raise InvalidRequestError(f"tenant {name!r} has live tokens ({', '.join(sorted(live))});"
                                  f" revoke them first")
    return {"deleted": True}, [(TENANT_PREFIX + name, None)]


#: How each admin-only auth command is decided (its cluster admin token already checked).
_DECIDE: dict[str, Callable[[AuthState, Mapping[str, object], Mapping[str, Usage], int], Decision]] = {
    "token_put": _token_put,
    "token_revoke": _token_revoke,
    "role_put": _role_put,
    "role_delete": _role_delete,
    "tenant_put": _tenant_put,
    "tenant_delete": _tenant_delete,
}


def _hash(f: Mapping[str, object]) -> bytes:
    value = f["hash"]
    assert isinstance(value, bytes)  # decode_auth_command checked it
    return value


def _rules(rules: tuple[object, ...]) -> list[Rule]:
    return [r for r in rules if isinstance(r, Rule)]
