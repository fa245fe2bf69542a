"""
The HTTP routes of the gateway: ONE table mapping each route to the wire op it sends
(docs/http.md). The handlers (concord.gateway.app), the OpenAPI document
(concord.gateway.openapi) and docs/http.md are derived from it; the op arguments of
every route come from the wire op table (concord.net.wire.OPS), and a test checks that
every op there is either routed here or listed in `NOT_ROUTED` with the reason.

Pure data: no sockets, no Starlette.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from concord.net.wire import OPS, Arg

__all__ = ["API", "NOT_ROUTED", "ROUTES", "Route", "Source", "op_args", "route_args"]

#: Every route's path starts with this.
API = "/api/v1"

JsonSchema = Mapping[str, object]


class Source(enum.Enum):
    """Where a route takes its op's arguments from (path parameters apart)."""

    QUERY = "query"
    """Query parameters, each parsed by its declared type (docs/http.md "Parameters")."""
    BODY = "body"
    """A JSON (or msgpack) object whose fields are the op's arguments."""
    NONE = "none"
    """No arguments."""


@dataclass(frozen=True, slots=True)
class Route:
    """
    One HTTP route.

    Attributes:
        method: GET, PUT, POST or DELETE.
        path: under API; `{key}` and `{name}` match ONE percent-encoded UTF-8 path
            segment (a "/" in a key is sent as %2F) and become the op argument of that
            name.
        op: the wire op sent; None for the routes the gateway answers itself.
        summary: one line for the OpenAPI document and docs/http.md.
        source: where the other arguments come from.
        conditional_op: sent instead of `op` when one of its `one_of` arguments (a
            condition) is given, in the arguments or as If-Match / If-None-Match.
        local: always served by this node, never forwarded to the leader (like every
            `consistency=eventual` read).
        result: JSON schema of the 200 body (the wire reply without `id` and `ok`).
        ignored: query parameters the gateway consumes itself (not sent to the node).
    """

    method: str
    path: str
    op: str | None
    summary: str
    source: Source = Source.QUERY
    conditional_op: str | None = None
    local: bool = False
    result: JsonSchema = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))

    @property
    def operation_id(self) -> str:
        words = [p.strip("{}") for p in self.path.split("/") if p]
        return "_".join([self.method.lower(), *words])


def _obj(required: tuple[str, ...], **props: JsonSchema) -> JsonSchema:
    return {"type": "object", "required": list(required), "properties": props}


_INT: JsonSchema = {"type": "integer"}
_BOOL: JsonSchema = {"type": "boolean"}
_ANY: JsonSchema = {}
_TTL: JsonSchema = {"type": ["number", "null"], "description": "seconds left; null: no expiry"}
_REVISION = _obj(("revision",), revision=_INT)
_DELETED = _obj(("deleted", "revision"), deleted=_BOOL, revision=_INT)
_COUNT_DELETED = _obj(("deleted", "revision"), deleted=_INT, revision=_INT)
_ITEMS = _obj(("items", "more"), items={"type": "array", "items": {
    "type": "array", "prefixItems": [{"type": "string"}, _ANY], "minItems": 2, "maxItems": 2}},
    more=_BOOL)
_GET = _obj(("value",), value=_ANY, revision=_INT, version=_INT, create_revision=_INT, ttl=_TTL)
_EVENT = _obj(("type", "key", "revision", "ts"), type={"type": "string"}, key={"type": "string"},
              value=_ANY, revision=_INT, ts=_INT, ttl=_TTL, i=_INT, n=_INT)
_MEMBER = _obj(("id",), id={"type": "string"}, role={"type": "string"},
               client={"type": ["string", "null"]}, peer={"type": ["string", "null"]},
               events={"type": ["string", "null"]})

_COUNTER = _obj(("value", "revision"), value=_INT, revision=_INT)
_LEASE = _obj(("lease", "ttl", "revision"), lease=_INT, ttl={"type": "number"}, revision=_INT)
_AUTH: JsonSchema = {"type": "object", "description": "see docs/protocol.md \"Auth ops\""}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", None, "alive: the gateway and its node answer",
          source=Source.NONE, local=True,
          result=_obj(("status", "node"), status={"const": "alive"}, node={"type": "string"})),
    Route("GET", "/ready", None, "ready: a leader is known and this node applied up to its commit",
          source=Source.NONE, local=True,
          result=_obj(("status", "node", "leader", "applied", "commit"), status={"const": "ready"},
                      node={"type": "string"}, leader={"type": "string"}, applied=_INT,
                      commit=_INT)),
    Route("GET", "/status", "status", "this node's status (role, term, indexes, members)",
          source=Source.NONE, local=True,
          result=_obj(("node", "role", "term", "commit", "applied", "revision"),
                      node={"type": "string"}, role={"type": "string"}, term=_INT, commit=_INT,
                      applied=_INT, revision=_INT)),
    Route("GET", "/members", "members", "the cluster's members", source=Source.NONE, local=True,
          result=_obj(("members",), members={"type": "array", "items": _MEMBER})),
    Route("GET", "/kv", "get_all", "every key and value, in key order, a page at a time",
          result=_ITEMS),
    Route("GET", "/kv/{key}", "get", "read a key (revisions in ETag and X-Concord-* headers)",
          result=_GET),
    Route("PUT", "/kv/{key}", "put",
          "write a key; with a condition (body, If-Match or If-None-Match: *) a put_if",
          source=Source.BODY, conditional_op="put_if", result=_REVISION),
    Route("DELETE", "/kv/{key}", "delete",
          "delete a key; with a condition (query or If-Match) a delete_if",
          conditional_op="delete_if", result=_DELETED),
    Route("GET", "/kv/{key}/ttl", "ttl", "seconds left before the key expires",
          result=_obj(("ttl",), ttl=_TTL)),
    Route("PUT", "/kv/{key}/ttl", "touch", "set a new TTL (null: never expire)",
          source=Source.BODY, result=_REVISION),
    Route("GET", "/kv/{key}/with_ttl", "get_with_ttl", "value and seconds left",
          result=_obj(("value", "ttl"), value=_ANY, ttl=_TTL)),
    Route("POST", "/bulk/put", "put_many", "atomic put of up to 500 items", source=Source.BODY,
          result=_REVISION),
    Route("POST", "/bulk/get", "get_many", "read up to 500 keys (absent keys left out)",
          source=Source.BODY, result=_obj(("values",), values={"type": "object"})),
    Route("POST", "/bulk/delete", "delete_many", "atomic delete of up to 500 keys",
          source=Source.BODY, result=_COUNT_DELETED),
    Route("POST", "/bulk/touch", "touch_many", "atomic TTL change of up to 500 keys",
          source=Source.BODY, result=_REVISION),
    Route("GET", "/keys", "keys", "keys matching a query",
          result=_obj(("keys", "more"), keys={"type": "array", "items": {"type": "string"}},
                      more=_BOOL)),
    Route("GET", "/query", "query", "keys and values matching a query", result=_ITEMS),
    Route("GET", "/count", "count", "how many keys match a query",
          result=_obj(("count",), count=_INT)),
    Route("POST", "/delete_where", "delete_where", "delete every key matching a query",
          source=Source.BODY, result=_COUNT_DELETED),
    Route("GET", "/indexes", "list_indexes", "the secondary indexes",
          result=_obj(("indexes",), indexes={"type": "array", "items": {"type": "object"}})),
    Route("PUT", "/indexes/{name}", "create_index", "create a secondary index on a value field",
          source=Source.BODY, result=_obj(("created", "revision"), created=_BOOL, revision=_INT)),
    Route("DELETE", "/indexes/{name}", "drop_index", "drop a secondary index",
          source=Source.NONE, result=_obj(("dropped", "revision"), dropped=_BOOL, revision=_INT)),
    Route("GET", "/indexes/{name}/lookup", "index_lookup", "keys by indexed value or range",
          result=_ITEMS),
    Route("GET", "/events", "events", "the retained change history after a revision",
          local=True, result=_obj(("events", "next_revision", "compacted"),
                                  events={"type": "array", "items": _EVENT},
                                  next_revision=_INT, compacted=_BOOL)),
    Route("GET", "/watch", None, "live changes under a prefix as Server-Sent Events "
          "(resumable with Last-Event-ID)", local=True,
          result={"type": "string", "description": "text/event-stream"}),
    Route("POST", "/kv/{key}/incr", "incr", "add delta (default 1) to an integer, atomically",
          source=Source.BODY, result=_COUNTER),
    Route("POST", "/kv/{key}/decr", "decr", "subtract delta (default 1) from an integer",
          source=Source.BODY, result=_COUNTER),
    Route("POST", "/leases", "lease_grant", "grant a lease that keys can share",
          source=Source.BODY, result=_LEASE),
    Route("GET", "/leases", "lease_list", "the live leases with their keys",
          result=_obj(("leases",), leases={"type": "array", "items": {"type": "object"}})),
    Route("POST", "/leases/keepalive", "lease_keepalive", "renew a lease for its ttl",
          source=Source.BODY, result=_LEASE),
    Route("POST", "/leases/revoke", "lease_revoke", "drop a lease and delete its keys",
          source=Source.BODY, result=_COUNT_DELETED),
    Route("POST", "/auth/bootstrap", "bootstrap", "the first admin token (only while none exists)",
          source=Source.BODY, result=_AUTH),
    Route("GET", "/auth/whoami", "whoami", "the requesting token: id, role, tenant",
          source=Source.NONE, result=_AUTH),
    Route("POST", "/auth/tokens", "token_create", "create a token (its secret is shown once)",
          source=Source.BODY, result=_AUTH),
    Route("GET", "/auth/tokens", "token_list", "every token, never a secret",
          source=Source.NONE, result=_AUTH),
    Route("POST", "/auth/tokens/revoke", "token_revoke", "revoke a token on every node",
          source=Source.BODY, result=_AUTH),
    Route("PUT", "/auth/roles/{name}", "role_put", "create or replace a custom role",
          source=Source.BODY, result=_AUTH),
    Route("GET", "/auth/roles", "role_list", "the built-in and custom roles",
          source=Source.NONE, result=_AUTH),
    Route("DELETE", "/auth/roles/{name}", "role_delete", "delete a custom role",
          source=Source.NONE, result=_AUTH),
    Route("PUT", "/auth/tenants/{name}", "tenant_put", "create a tenant or replace its quotas",
          source=Source.BODY, result=_AUTH),
    Route("GET", "/auth/tenants", "tenant_list", "every tenant with its quotas and usage",
          source=Source.NONE, result=_AUTH),
    Route("DELETE", "/auth/tenants/{name}", "tenant_delete", "delete an empty tenant",
          source=Source.NONE, result=_AUTH),
    Route("GET", "/auth/usage", "tenant_usage", "a tenant's usage and quotas (default: the token's)",
          result=_AUTH),
)

#: Wire ops with no route, and why (a test checks OPS == routed + these).
NOT_ROUTED: Mapping[str, str] = {
    "hash_content": "consistency check of the CLI (`concord check hash --content`)",
    "backup": "binary snapshot transfer of the CLI (`concord backup create`)",
    "hash_kv": "consistency check of the CLI (`concord check hash`)",
    "add_member": "membership change: an operator action (`concord member add`)",
    "remove_member": "membership change: an operator action (`concord member remove`)",
    "promote_member": "membership change: an operator action (`concord member promote`)",
    "transfer_leader": "leadership transfer: an operator action (`concord leader transfer`)",
    "fault": "test-only fault injection",
}


def op_args(route: Route) -> tuple[Arg, ...]:
    """The op arguments a route accepts (both ops' for a conditional route), path ones too."""
    args: dict[str, Arg] = {}
    for op in (route.op, route.conditional_op):
        if op is not None:
            for arg in OPS[op].args:
                args.setdefault(arg.name, arg)
    return tuple(args.values())


def route_args(route: Route) -> tuple[Arg, ...]:
    """The arguments a route takes from its query or body (not from its path)."""
    skip = set(route.path_params) | set(route.ignored)
    return tuple(a for a in op_args(route) if a.name not in skip)


def conditions(route: Route) -> tuple[str, ...]:
    """The condition arguments that turn `op` into `conditional_op`."""
    if route.conditional_op is None:
        return ()
    return tuple(name for group in OPS[route.conditional_op].one_of for name in group)
