"""
The auth tables: tokens, custom roles and tenants, as SYSTEM-space records of the
replicated state machine.

Pure. Auth state lives only in Raft: every change is a log entry applied by
`concord.kv.KvStateMachine` (so it is in snapshots, the state hash and shared memory),
and every process that checks a request (raft worker, read workers) holds an `AuthState`
rebuilt from the same records. Record layout (msgpack values of SYSTEM keys; version 1):

    auth/token/<id>      [1, secret_hash: bin(32), role: str, tenant: str|nil,
                          expires_at_ms: int (0 never), created_ms: int,
                          revoked_ms: int (0 not revoked), description: str]
    auth/role/<name>     [1, [[pattern, perm, effect], ...]]
    auth/tenant/<name>   [1, max_keys, max_bytes, write_rate, read_rate]

Auth is *active* once a token record exists: from then on every replica refuses writes
without a valid token at apply time, whatever its node's config says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import msgpack

from concord.auth.rules import (
    BUILTIN_ROLES,
    Effect,
    Perm,
    Rule,
    allows_key,
    allows_prefix,
    parse_rules,
)
from concord.auth.tenants import TENANT_MARK, Quota, check_tenant_name, key_prefix
from concord.auth.tokens import ID_RE, Credential, hashes_equal
from concord.errors import ForbiddenError, InvalidRequestError, UnauthorizedError

logger = logging.getLogger(__name__)

AUTH_PREFIX: Final = "auth/"
TOKEN_PREFIX: Final = "auth/token/"
ROLE_PREFIX: Final = "auth/role/"
TENANT_PREFIX: Final = "auth/tenant/"
RECORD_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    secret_hash: bytes
    role: str
    tenant: str | None
    expires_at_ms: int
    created_ms: int
    revoked_ms: int = 0
    description: str = ""

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [RECORD_VERSION, self.secret_hash, self.role, self.tenant, self.expires_at_ms,
             self.created_ms, self.revoked_ms, self.description], use_bin_type=True)
        return packed

    def public(self, now_ms: int) -> dict[str, object]:
        """What `token_list` shows: never the hash."""
        state = "revoked" if self.revoked_ms else (
            "expired" if self.expired(now_ms) else "active")
        return {"token_id": self.token_id, "role": self.role, "tenant": self.tenant,
                "expires_at_ms": self.expires_at_ms or None, "created_ms": self.created_ms,
                "revoked_ms": self.revoked_ms or None, "description": self.description,
                "state": state}

    def expired(self, now_ms: int) -> bool:
        return 0 < self.expires_at_ms <= now_ms


def decode_token(key: str, value: bytes) -> TokenRecord:
    token_id = key[len(TOKEN_PREFIX):]
    row = _row(value, 8)
    _, secret_hash, role, tenant, expires, created, revoked, description = row
    if (ID_RE.fullmatch(token_id) is None or not isinstance(secret_hash, bytes)
            or not isinstance(role, str) or not (tenant is None or isinstance(tenant, str))
            or not all(_is_int(v) for v in (expires, created, revoked))
            or not isinstance(description, str)):
        raise InvalidRequestError(f"auth record {key!r} is malformed")
    assert isinstance(expires, int) and isinstance(created, int) and isinstance(revoked, int)
    return TokenRecord(token_id, secret_hash, role, tenant, expires, created, revoked, description)


def encode_role(rules: Iterable[Rule]) -> bytes:
    packed: bytes = msgpack.packb([RECORD_VERSION, [r.to_list() for r in rules]],
                                  use_bin_type=True)
    return packed


def encode_tenant(quota: Quota) -> bytes:
    packed: bytes = msgpack.packb([RECORD_VERSION, quota.max_keys, quota.max_bytes,
                                   quota.write_rate, quota.read_rate], use_bin_type=True)
    return packed


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _row(value: bytes, size: int) -> list[object]:
    try:
        row = msgpack.unpackb(value, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidRequestError(f"auth record does not decode: {exc}") from exc
    if not isinstance(row, list) or len(row) != size or row[0] != RECORD_VERSION:
        raise InvalidRequestError(f"auth record is not a version {RECORD_VERSION} row of {size}")
    return row


def decode_quota(value: bytes) -> Quota:
    _, max_keys, max_bytes, write_rate, read_rate = _row(value, 5)
    if not (_is_int(max_keys) and _is_int(max_bytes)
            and isinstance(write_rate, (int, float)) and isinstance(read_rate, (int, float))):
        raise InvalidRequestError("tenant record is malformed")
    assert isinstance(max_keys, int) and isinstance(max_bytes, int)
    return Quota(max_keys, max_bytes, float(write_rate), float(read_rate))


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated token: what it may do, and in which keyspace."""

    token_id: str
    role: str
    rules: tuple[Rule, ...]
    tenant: str | None
    #: The perm granted on every key by rules without a deny (built-in roles), else None:
    #: spares the per-key evaluation on the hot path. Derived from `rules`.
    everywhere: Perm | None = field(init=False, repr=False, compare=False)
    #: A root token with admin on every key (membership, backup, auth ops).
    is_cluster_admin: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = self.rules
        open_perm = None
        if rules and all(r.effect is Effect.ALLOW for r in rules):
            open_perm = max((r.perm for r in rules if r.pattern == "*"), default=None)
        object.__setattr__(self, "everywhere", open_perm)
        object.__setattr__(self, "is_cluster_admin",
                           self.tenant is None and allows_prefix(rules, "", Perm.ADMIN))

    def check_keys(self, keys: Iterable[str], perm: Perm) -> None:
        """
        Raise ForbiddenError unless every key (as the client names it, in its own
        keyspace) is granted `perm`.
        """
        everywhere = self.everywhere
        if everywhere is not None and everywhere >= perm:
            # Every key is granted by the rules; a root token that is not a cluster admin
            # is still kept out of the tenants' keys.
            if self.tenant is None and not self.is_cluster_admin:
                for key in keys:
                    if key.startswith(TENANT_MARK):
                        raise ForbiddenError(f"token {self.token_id} may not {perm.name.lower()} "
                                             f"tenant keys (key {key!r})")
            return
        for key in keys:
            if self.tenant is None and key.startswith(TENANT_MARK) and not self.is_cluster_admin:
                raise ForbiddenError(f"token {self.token_id} may not {perm.name.lower()} "
                                     f"tenant keys (key {key!r})")
            if not allows_key(self.rules, key, perm):
                raise ForbiddenError(
                    f"token {self.token_id} (role {self.role}) may not {perm.name.lower()} key {key!r}")

    def check_prefix(self, prefix: str, perm: Perm) -> None:
        """Raise ForbiddenError unless every key starting with `prefix` is granted `perm`."""
        if not allows_prefix(self.rules, prefix, perm):
            shown = f"keys with prefix {prefix!r}" if prefix else "every key"
            raise ForbiddenError(
                f"token {self.token_id} (role {self.role}) may not {perm.name.lower()} {shown}")

    def check_cluster_admin(self, what: str) -> None:
        if not self.is_cluster_admin:
            raise ForbiddenError(f"{what} needs a cluster admin token; token {self.token_id} "
                                 f"has role {self.role}"
                                 + (f" in tenant {self.tenant}" if self.tenant else ""))

    def check_stored_keys(self, keys: Iterable[str], perm: Perm) -> None:
        """`check_keys` for keys as stored: a tenant's must lie in its keyspace."""
        if self.tenant is None:
            self.check_keys(keys, perm)
            return
        prefix = key_prefix(self.tenant)
        n = len(prefix)
        relative = []
        for key in keys:
            if not key.startswith(prefix):
                raise ForbiddenError(f"token {self.token_id} of tenant {self.tenant!r} may not "
                                     f"touch a key outside its tenant")
            relative.append(key[n:])
        self.check_keys(relative, perm)

    def stored_keys(self, keys: Iterable[str]) -> Iterator[str]:
        """The keys as stored (tenant prefix added)."""
        if self.tenant is None:
            return iter(keys)
        prefix = key_prefix(self.tenant)
        return (prefix + k for k in keys)


class AuthState:
    """The auth tables of one replica or reader (module docstring)."""

    def __init__(self) -> None:
        self.tokens: dict[str, TokenRecord] = {}
        self.roles: dict[str, tuple[Rule, ...]] = {}
        self.tenants: dict[str, Quota] = {}
        # token id -> its Principal, while its record and role are unchanged
        self._principals: dict[str, Principal] = {}

    @property
    def active(self) -> bool:
        """Whether any token exists (bootstrap done): auth is then enforced everywhere."""
        return bool(self.tokens)

    def clear(self) -> None:
        self._principals.clear()
        self.tokens.clear()
        self.roles.clear()
        self.tenants.clear()

    def set_record(self, key: str, value: bytes | None) -> None:
        """
        Apply one SYSTEM record change (None: deleted). A malformed record is logged and
        dropped (it can only come from a bug: apply writes these records itself).
        """
        self._principals.clear()  # NB: auth changes are rare; rebuild on demand
        try:
            if key.startswith(TOKEN_PREFIX):
                token_id = key[len(TOKEN_PREFIX):]
                if value is None:
                    self.tokens.pop(token_id, None)
                else:
                    self.tokens[token_id] = decode_token(key, value)
            elif key.startswith(ROLE_PREFIX):
                name = key[len(ROLE_PREFIX):]
                if value is None:
                    self.roles.pop(name, None)
                else:
                    _, rules = _row(value, 2)
                    self.roles[name] = parse_rules(rules)
            elif key.startswith(TENANT_PREFIX):
                name = key[len(TENANT_PREFIX):]
                if value is None:
                    self.tenants.pop(name, None)
                else:
                    self.tenants[check_tenant_name(name)] = decode_quota(value)
        except InvalidRequestError as exc:
            logger.error("auth record dropped key=%s reason=%s", key, exc.message)

    def role_rules(self, role: str) -> tuple[Rule, ...] | None:
        builtin = BUILTIN_ROLES.get(role)
        return builtin if builtin is not None else self.roles.get(role)

    def authenticate(self, credential: Credential | None, now_ms: int) -> Principal:
        """
        The principal of a presented credential at cluster time `now_ms`.

        Raises:
            UnauthorizedError: no token, unknown id, wrong secret, revoked or expired.
        """
        if credential is None:
            raise UnauthorizedError("authentication is required: send a token")
        record = self.tokens.get(credential.token_id)
        # NB: the same message for an unknown id and a wrong secret.
        if record is None or not hashes_equal(record.secret_hash, credential.secret_hash):
            raise UnauthorizedError(f"token {credential.token_id} is not valid")
        if record.revoked_ms:
            raise UnauthorizedError(f"token {credential.token_id} was revoked")
        if record.expired(now_ms):
            raise UnauthorizedError(f"token {credential.token_id} has expired")
        principal = self._principals.get(record.token_id)
        if principal is None:
            rules = self.role_rules(record.role)
            principal = Principal(record.token_id, record.role, rules or (), record.tenant)
            self._principals[record.token_id] = principal
        return principal
