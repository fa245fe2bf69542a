"""
Auth in the node's processes: the raft worker's and the read workers' side of
concord.auth (docs/security.md).

Every request is checked where it is served, against the replicated auth tables: the raft
worker's state machine (`kv.auth`), or a read worker's copy rebuilt from shared memory.
Writes are checked again, authoritatively, at apply on every replica; the raft worker's
check only refuses early and applies the leader's cluster-wide write rate limit.

- `NodeAuth` (raft worker): admits requests, turns writes and auth ops into commands that
  carry the requester's credential (token id + secret hash, never the secret), answers
  the auth tables' read ops, proposes the configured bootstrap token, and limits each
  tenant's write rate (only the leader accepts writes, so the limit holds cluster-wide;
  a new leader starts with full buckets).
- `RateLimiter`: token buckets per tenant (burst: one second's worth).
- `admit` / `authorize`: the request-level checks, for the raft worker and the read
  workers alike: authenticate a wire request and check the permission its op declares
  (`OpSpec.access` in concord.net.wire, the one op table) for the keys or the range it
  names. Ranges: a `prefix` covers the keys starting with it; a `range` [lo, hi] is
  checked as the longest common prefix of lo and hi (a superset of the range: a rule set
  that allows only part of that prefix refuses the request; conservative, never too
  lenient); an open end, or an op with neither (`get_all`, `hash_content`,
  suffix/contains/pattern/where-only queries, index ops), covers every key of the
  requester's keyspace.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack

from concord.auth.commands import build_auth_command, encode_credential
from concord.auth.rules import BUILTIN_ROLES, Perm
from concord.auth.tenants import TENANT_MARK, key_prefix
from concord.auth.rules import common_prefix
from concord.auth.state import AuthState, Principal
from concord.auth.tokens import Credential, new_token, parse_token
from concord.config import AuthSection, read_bootstrap_token
from concord.errors import (
    ClientError,
    ConfigError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    UnauthorizedError,
)
from concord.kv import KvStateMachine, encode_request
from concord.kv.commands import encode_plain_put
from concord.net.events import AUTH_TOPIC
from concord.net.wire import OPS, Access, OpSpec, Request

logger = logging.getLogger(__name__)

#: Auth wire ops that become log entries, and their command op (concord.auth.commands).
AUTH_WRITE_OPS: Mapping[str, str] = {
    "bootstrap": "auth_bootstrap",
    "token_create": "token_put",
    "token_revoke": "token_revoke",
    "role_put": "role_put",
    "role_delete": "role_delete",
    "tenant_put": "tenant_put",
    "tenant_delete": "tenant_delete",
}
#: Auth wire ops the raft worker answers from its state at once.
AUTH_READ_OPS = frozenset({"whoami", "token_list", "role_list", "tenant_list", "tenant_usage"})


def load_bootstrap_token(config: AuthSection) -> Credential | None:
    """
    The configured first admin token (file, else environment variable), or None.

    Raises:
        ConfigError: the file cannot be read, or holds no well-formed token.
    """
    text, where = read_bootstrap_token(config)
    if text is None:
        return None
    if config.bootstrap_token_file:
        try:
            mode = os.stat(config.bootstrap_token_file).st_mode
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("bootstrap token file is readable by others path=%s mode=%o",
                           config.bootstrap_token_file, stat.S_IMODE(mode))
    try:
        return parse_token(text)
    except UnauthorizedError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


class RateLimiter:
    """Token buckets keyed by tenant; `rate` <= 0 means unlimited. Not thread-safe."""

    def __init__(self, clock_s: Callable[[], float]) -> None:
        self._clock_s = clock_s
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at_s)

    def take(self, tenant: str, rate: float, what: str) -> None:
        """
        Spend one token of `tenant`'s bucket.

        Raises:
            QuotaExceededError: the bucket is empty.
        """
        if rate <= 0:
            return
        now = self._clock_s()
        burst = max(1.0, rate)
        tokens, at = self._buckets.get(tenant, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            raise QuotaExceededError(f"tenant {tenant!r} is over its {what} rate of {rate:g}/s")
        self._buckets[tenant] = (tokens - 1.0, now)


@dataclass(frozen=True, slots=True)
class Proposal:
    """An auth op turned into a command; `token` is the new secret token, shown once."""

    command: bytes
    token: str | None = None


class NodeAuth:
    """
    The raft worker's auth (module docstring).

    Args:
        config: the [auth] section.
        kv: the raft worker's state machine (its `auth` tables are the replicated ones).
        now_ms: cluster time (the shm clock), for token expiry.
        clock_s: a monotonic clock, for rate limits.
    """

    def __init__(self, config: AuthSection, kv: KvStateMachine, now_ms: Callable[[], int],
                 clock_s: Callable[[], float]) -> None:
        self.required = config.enabled
        self.bootstrap = load_bootstrap_token(config)
        self._kv = kv
        self._now_ms = now_ms
        self.writes = RateLimiter(clock_s)
        self._last_token: str | None = None
        self._last_credential: Credential | None = None

    @property
    def state(self) -> AuthState:
        return self._kv.auth

    def admit(self, request: Request) -> Principal | None:
        """
        Raises:
            UnauthorizedError, ForbiddenError.
        """
        return admit(self.state, self.required, request, OPS[request.op], self._now_ms(),
                     self._parse)

    def write_command(self, request: Request, principal: Principal | None) -> bytes:
        """
        The command of a data write: keys in the requester's keyspace, its credential.

        Raises:
            InvalidRequestError (or a subclass), QuotaExceededError (write rate).
        """
        if principal is not None and principal.tenant is not None:
            quota = self.state.tenants.get(principal.tenant)
            if quota is not None:
                self.writes.take(principal.tenant, quota.write_rate, "write")
        args = request.args
        if (request.op == "put" and principal is None and request.token is None
                and request.client_id is None and len(args) == 2):
            plain = encode_plain_put(args.get("key"), args.get("value"), self._kv.config)
            if plain is not None:
                return plain  # the same bytes as below, without the command map
        body: dict[str, object] = {"op": request.op, **stored_args(principal, args)}
        if request.client_id is not None:
            body["client_id"] = request.client_id
            body["seq"] = request.seq
            if request.min_seq is not None:
                body["min_seq"] = request.min_seq
        return encode_request(body, self._kv.config, auth=self._credential(request))

    def auth_command(self, request: Request) -> Proposal:
        """
        The command of an auth op (AUTH_WRITE_OPS); a new token's secret is drawn here,
        on the leader, and only its hash enters the log.

        Raises:
            InvalidRequestError.
        """
        op = AUTH_WRITE_OPS[request.op]
        args = dict(request.args)
        token = None
        if op in ("auth_bootstrap", "token_put"):
            token, fresh = new_token()
            args["id"], args["hash"] = fresh.token_id, fresh.secret_hash
        command = build_auth_command(op, args)
        requester = self._credential(request)
        if requester is not None and op != "auth_bootstrap":
            command["auth"] = encode_credential(requester)
        packed: bytes = msgpack.packb(command, use_bin_type=True)
        return Proposal(packed, token)

    def bootstrap_command(self) -> bytes | None:
        """The configured first admin token's bootstrap command while no token exists."""
        if self.bootstrap is None or self.state.active:
            return None
        command = build_auth_command("auth_bootstrap", {
            "id": self.bootstrap.token_id, "hash": self.bootstrap.secret_hash,
            "description": "bootstrap token from the node config"})
        packed: bytes = msgpack.packb(command, use_bin_type=True)
        return packed

    def read_reply(self, request: Request, principal: Principal | None) -> dict[str, object]:
        """The result of an AUTH_READ_OPS op (its permission already checked)."""
        state, now = self.state, self._now_ms()
        op = request.op
        if op == "whoami":
            if principal is None:
                return {"token_id": None, "role": None, "tenant": None, "auth": state.active}
            return {"token_id": principal.token_id, "role": principal.role, "tenant": principal.tenant,
                    "auth": True}
        if op == "token_list":
            return {"tokens": [state.tokens[t].public(now) for t in sorted(state.tokens)]}
        if op == "role_list":
            roles = [{"name": n, "builtin": True, "rules": [r.to_list() for r in rules]}
                     for n, rules in BUILTIN_ROLES.items()]
            roles += [{"name": n, "builtin": False, "rules": [r.to_list() for r in state.roles[n]]}
                      for n in sorted(state.roles)]
            return {"roles": roles}
        if op == "tenant_list":
            return {"tenants": [self.usage(n) for n in sorted(state.tenants)]}
        name = request.args.get("name")
        if principal is not None and not principal.is_cluster_admin:
            if name is not None and name != principal.tenant:
                raise ForbiddenError(f"token {principal.token_id} may see only its own tenant's usage")
            name = principal.tenant
        if not isinstance(name, str) or name not in state.tenants:
            raise NotFoundError(f"tenant {name!r} does not exist")
        return self.usage(name)

    def usage(self, name: str) -> dict[str, object]:
        """A tenant's quota and usage."""
        quota = self.state.tenants[name]
        used = self._kv.usage.get(name)
        return {"name": name, **quota.to_map(), "keys": 0 if used is None else used.keys,
                "bytes": 0 if used is None else used.bytes}

    @property
    def guards_stream(self) -> bool:
        """Whether change-stream subscriptions must authenticate (concord.net.events)."""
        return self.required or self.state.active

    def subscription(self, topic: bytes) -> tuple[bytes, int] | None:
        """
        The events Guard: the prefix a subscription topic may subscribe and its token's
        expiry (cluster ms, 0 never), or None to refuse it. An authenticated topic is
        AUTH_TOPIC + token + 0x1f + prefix; a tenant's prefix is stored-key form. A root
        token other than admin may not subscribe a prefix that could hold tenant keys
        ("" or one starting with TENANT_MARK): XPUB cannot hide them.
        """
        if not topic.startswith(AUTH_TOPIC):
            return None if self.guards_stream else (topic, 0)
        token, sep, raw_prefix = topic[len(AUTH_TOPIC):].partition(b"\x1f")
        try:
            prefix = raw_prefix.decode("utf-8")
            credential = parse_token(token.decode("ascii"))
            principal = self.state.authenticate(credential, self._now_ms())
            principal.check_prefix(prefix, Perm.READ)
        except (UnicodeDecodeError, ClientError):
            return None
        if not sep:
            return None
        if principal.tenant is not None:
            prefix = key_prefix(principal.tenant) + prefix
        elif not principal.is_cluster_admin and (not prefix or prefix.startswith(TENANT_MARK)):
            return None
        return prefix.encode("utf-8"), self.state.tokens[credential.token_id].expires_at_ms

    def status(self) -> dict[str, object]:
        """What `status` shows of auth: whether it is on, and usage per tenant."""
        state = self.state
        return {"required": self.required, "active": state.active, "tokens": len(state.tokens),
                "tenants": {n: {"keys": u.keys, "bytes": u.bytes}
                            for n, u in sorted(self._kv.usage.items())}}

    def _credential(self, request: Request) -> Credential | None:
        return None if request.token is None else self._parse(request.token)

    def _parse(self, token: str) -> Credential:
        """
        parse_token, once per request: `admit` and then `write_command` / `auth_command`
        need the same request's credential. Remembers only the last token OBJECT (an
        identity test: the same request's string, never a lookup by secret).
        """
        if token is not self._last_token or self._last_credential is None:
            self._last_credential = parse_token(token)
            self._last_token = token
        return self._last_credential


_INDEX_OPS = frozenset({"create_index", "drop_index", "list_indexes", "index_lookup"})


def request_keys(args: Mapping[str, object]) -> list[str]:
    """The keys a key-naming op names (`key`, `keys`, the first field of `items`)."""
    key = args.get("key")
    if "keys" not in args and "items" not in args:  # one key: the common case
        return [key] if isinstance(key, str) else []
    keys: list[str] = []
    if isinstance(key, str):
        keys.append(key)
    names = args.get("keys")
    if isinstance(names, list):
        keys.extend(k for k in names if isinstance(k, str))
    items = args.get("items")
    if isinstance(items, list):
        keys.extend(i[0] for i in items if isinstance(i, list) and i and isinstance(i[0], str))
    return keys


def range_prefix(args: Mapping[str, object]) -> str:
    """The prefix a range op is checked on (module docstring)."""
    prefix = args.get("prefix")
    prefix = prefix if isinstance(prefix, str) else ""
    rng = args.get("range")
    if isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, str) for x in rng):
        within = common_prefix(str(rng[0]), str(rng[1]))
        if within.startswith(prefix):
            return within
    return prefix


def admit(state: AuthState, required: bool, request: Request, spec: OpSpec,
          now_ms: int, parse: Callable[[str], Credential] = parse_token) -> Principal | None:
    """
    Authenticate and authorize one request at cluster time `now_ms` (`parse`: how the
    token becomes a credential, parse_token or a caller's once-per-request form).

    Returns:
        The principal, or None when auth is neither required by this node's config nor
        active in the replicated state (no token exists yet).

    Raises:
        UnauthorizedError: no token, or not a valid one.
        ForbiddenError: the token may not do this.
    """
    if not (required or state.active):
        # NB: refused, never ignored: a client that believes it is authenticated or
        # confined to a tenant must learn that it is not (docs/protocol.md "Envelope").
        for name, value, what in (("token", request.token, "authentication is"),
                                  ("ns", request.ns, "tenants are")):
            if value is not None:
                raise InvalidRequestError(f"request carries {name!r} but {what} not enabled "
                                          f"on this node; send it without {name!r}", request.id)
        return None
    if spec.access is Access.PUBLIC:
        return None
    credential = None if request.token is None else parse(request.token)
    principal = state.authenticate(credential, now_ms)
    if request.ns is not None and request.ns != principal.tenant:
        raise ForbiddenError(f"token {principal.token_id} is bound to "
                             + (f"tenant {principal.tenant!r}" if principal.tenant else "no tenant")
                             + f", not {request.ns!r}")
    authorize(principal, spec, request.args)
    return principal


def authorize(principal: Principal, spec: OpSpec, args: Mapping[str, object]) -> None:
    """
    Raise ForbiddenError unless `principal` may run op `spec` with `args` (keys as the
    client names them, in its own keyspace).
    """
    perm, on_keys = _NEEDS[spec.access]
    if perm is None:  # public, token
        return
    if perm is Perm.ADMIN:
        principal.check_cluster_admin(spec.name)
        return
    if principal.tenant is not None and spec.name in _INDEX_OPS:
        raise ForbiddenError(f"{spec.name}: secondary indexes span every tenant; "
                             f"tenant tokens cannot use them")
    if on_keys:
        principal.check_keys(request_keys(args), perm)
    else:
        principal.check_prefix(range_prefix(args), perm)


#: What each access level needs: the perm (None: nothing beyond a valid token, or none)
#: and whether it is checked on the keys named (else on the range covered).
_NEEDS: Mapping[Access, tuple[Perm | None, bool]] = {
    Access.PUBLIC: (None, False),
    Access.TOKEN: (None, False),
    Access.ADMIN: (Perm.ADMIN, False),
    Access.READ_KEYS: (Perm.READ, True),
    Access.WRITE_KEYS: (Perm.WRITE, True),
    Access.READ_RANGE: (Perm.READ, False),
    Access.WRITE_RANGE: (Perm.WRITE, False),
}


def stored_args(principal: Principal | None, args: Mapping[str, object]) -> dict[str, object]:
    """
    A write's arguments with the tenant prefix added to every key it names (`key`,
    `keys`, `items`); unchanged for root tokens. `delete_where` is scoped at apply.
    """
    out = dict(args)
    if principal is None or principal.tenant is None:
        return out
    prefix = key_prefix(principal.tenant)
    if isinstance(out.get("key"), str):
        out["key"] = prefix + str(out["key"])
    keys = out.get("keys")
    if isinstance(keys, list):
        out["keys"] = [prefix + k if isinstance(k, str) else k for k in keys]
    items = out.get("items")
    if isinstance(items, list):
        out["items"] = [[prefix + i[0], *i[1:]] if isinstance(i, list) and i and isinstance(i[0], str)
                        else i for i in items]
    return out
