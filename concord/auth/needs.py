"""
Request-level checks: authenticate a wire request and check the permission its op
declares (`OpSpec.access` in concord.net.wire, the one op table) for the keys or the
range it names. Used by the raft worker and the read workers alike.

Pure. Ranges: a `prefix` covers the keys starting with it; a `range` [lo, hi] is checked
as the longest common prefix of lo and hi (a superset of the range: a rule set that
allows only part of that prefix refuses the request; conservative, never too lenient);
an open end, or an op with neither (`get_all`, `hash_content`, suffix/contains/pattern/
where-only queries, index ops), covers every key of the requester's keyspace.
"""

from __future__ import annotations

from collections.abc import Mapping

from concord.auth.rules import Perm, common_prefix
from concord.auth.state import AuthState, Principal
from concord.auth.tenants import key_prefix
from concord.auth.tokens import parse_token
from concord.errors import ForbiddenError, InvalidRequestError
from concord.net.wire import Access, OpSpec, Request

_INDEX_OPS = frozenset({"create_index", "drop_index", "list_indexes", "index_lookup"})


def request_keys(args: Mapping[str, object]) -> list[str]:
    """The keys a key-naming op names (`key`, `keys`, the first field of `items`)."""
    keys: list[str] = []
    key = args.get("key")
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
          now_ms: int) -> Principal | None:
    """
    Authenticate and authorize one request at cluster time `now_ms`.

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
    credential = None if request.token is None else parse_token(request.token)
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
    access = spec.access
    if access in (Access.PUBLIC, Access.TOKEN):
        return
    if access is Access.ADMIN:
        principal.check_cluster_admin(spec.name)
        return
    if principal.tenant is not None and spec.name in _INDEX_OPS:
        raise ForbiddenError(f"{spec.name}: secondary indexes span every tenant; "
                             f"tenant tokens cannot use them")
    perm = Perm.READ if access in (Access.READ_KEYS, Access.READ_RANGE) else Perm.WRITE
    if access in (Access.READ_KEYS, Access.WRITE_KEYS):
        principal.check_keys(request_keys(args), perm)
    else:
        principal.check_prefix(range_prefix(args), perm)


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

