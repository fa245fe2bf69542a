"""
`concord auth|token|role|tenant|quota ...`: tokens, roles, tenants and quotas
(docs/cli.md "Auth and tenants", docs/security.md). An adapter: each command is one or
two auth ops through the public client; the node decides.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from concord.cli.main import CliError, Context, non_negative_int, positive_float
from concord.cli.output import Output

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

_TOKEN_COLUMNS = ("token_id", "role", "tenant", "state", "expires_at_ms", "description")
_TENANT_COLUMNS = ("name", "keys", "bytes", "max_keys", "max_bytes", "write_rate", "read_rate")
_QUOTAS = ("max_keys", "max_bytes", "write_rate", "read_rate")


def _one(row: dict[str, object], columns: tuple[str, ...], single: bool = False) -> Output:
    return Output(columns, [row], data=row, single=single)


def rule(text: str) -> list[str]:
    """PATTERN,PERM,EFFECT (e.g. "feature:*,read,allow")."""
    parts = text.rsplit(",", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not PATTERN,PERM,EFFECT")
    return parts


def cmd_auth(ctx: Context, args: argparse.Namespace) -> Output:
    if args.action == "generate":
        from concord.auth.tokens import new_token  # noqa: PLC0415

        row: dict[str, object] = {"token": new_token()[0]}
        return _one(row, ("token",), single=True)
    if args.action == "bootstrap":
        reply = ctx.client.bootstrap(args.description)
        return _one({"token": reply.get("token"), "token_id": reply.get("token_id")},
                    ("token", "token_id"), single=True)
    reply = ctx.client.whoami()
    return _one(reply, ("token_id", "role", "tenant", "auth"))


def cmd_token(ctx: Context, args: argparse.Namespace) -> Output:
    client = ctx.client
    if args.action == "create":
        reply = client.token_create(args.role, args.tenant, args.ttl, args.description)
        row = {k: reply.get(k) for k in ("token", "token_id", "expires_at_ms")}
        return _one(row, ("token", "token_id", "expires_at_ms"), single=True)
    if args.action == "revoke":
        revoked = client.token_revoke(args.token_id)
        return _one({"token_id": args.token_id, "revoked": revoked}, ("token_id", "revoked"))
    return Output(_TOKEN_COLUMNS, client.token_list())


def cmd_role(ctx: Context, args: argparse.Namespace) -> Output:
    client = ctx.client
    if args.action == "put":
        created = client.role_put(args.name, args.rule or [])
        return _one({"name": args.name, "created": created}, ("name", "created"))
    if args.action == "delete":
        deleted = client.role_delete(args.name)
        return _one({"name": args.name, "deleted": deleted}, ("name", "deleted"))
    roles = client.role_list()
    rows = [{**r, "rules": "; ".join(_rule_text(x) for x in _list(r.get("rules")))} for r in roles]
    return Output(("name", "builtin", "rules"), rows, data=roles)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _rule_text(rule_row: object) -> str:
    return ",".join(map(str, _list(rule_row)))


def cmd_tenant(ctx: Context, args: argparse.Namespace) -> Output:
    client = ctx.client
    if args.action == "create":
        created = client.tenant_put(args.name, args.max_keys, args.max_bytes, args.write_rate,
                                    args.read_rate)
        return _one({"name": args.name, "created": created}, ("name", "created"))
    if args.action == "delete":
        deleted = client.tenant_delete(args.name)
        return _one({"name": args.name, "deleted": deleted}, ("name", "deleted"))
    if args.action == "usage":
        return _one(client.tenant_usage(args.name), _TENANT_COLUMNS)
    return Output(_TENANT_COLUMNS, client.tenant_list())


def cmd_quota(ctx: Context, args: argparse.Namespace) -> Output:
    """`quota set` changes only the quotas given (the others keep their values)."""
    client = ctx.client
    current = client.tenant_usage(args.tenant)
    if args.action == "set":
        given = {q: getattr(args, q) for q in _QUOTAS if getattr(args, q) is not None}
        if not given:
            raise CliError("quota set: give at least one of --max-keys, --max-bytes, "
                           "--write-rate, --read-rate")
        merged = {q: given.get(q, current.get(q)) for q in _QUOTAS}
        client.tenant_put(args.tenant, max_keys=_int(merged["max_keys"]),
                          max_bytes=_int(merged["max_bytes"]),
                          write_rate=_float(merged["write_rate"]), read_rate=_float(merged["read_rate"]))
        current = client.tenant_usage(args.tenant)
    return _one(current, _TENANT_COLUMNS)


def _quota_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-keys", type=non_negative_int, help="0: unlimited")
    p.add_argument("--max-bytes", type=non_negative_int, help="0: unlimited")
    p.add_argument("--write-rate", type=float, help="writes per second, cluster-wide; 0: unlimited")
    p.add_argument("--read-rate", type=float, help="reads per second, per node; 0: unlimited")


def register(commands: Subparsers) -> None:
    """Add the auth commands to the `concord` parser."""
    p = commands.add_parser("auth", help="bootstrap, whoami, generate a token for a config file")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    boot = actions.add_parser("bootstrap", help="create the first admin token (only while none exists)")
    boot.add_argument("--description")
    actions.add_parser("whoami", help="the token in use: id, role, tenant")
    actions.add_parser("generate", help="print a new token (for [auth] bootstrap_token_file); "
                       "contacts no node")
    p.set_defaults(handler=cmd_auth)

    p = commands.add_parser("token", help="create, list or revoke tokens (admin)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    create = actions.add_parser("create", help="a new token; its secret is printed once")
    create.add_argument("role", metavar="ROLE")
    create.add_argument("--tenant")
    create.add_argument("--ttl", type=positive_float, help="seconds until it expires")
    create.add_argument("--description")
    actions.add_parser("list", help="every token (never secrets)")
    revoke = actions.add_parser("revoke", help="refuse a token from now on, on every node")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    p.set_defaults(handler=cmd_token)

    p = commands.add_parser("role", help="custom roles of ACL rules (admin)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    put = actions.add_parser("put", help="create or replace a role")
    put.add_argument("name", metavar="NAME")
    put.add_argument("--rule", type=rule, action="append",
                     help="PATTERN,PERM,EFFECT, e.g. 'feature:*,read,allow' (repeat)")
    actions.add_parser("list", help="built-in and custom roles")
    delete = actions.add_parser("delete", help="delete a custom role")
    delete.add_argument("name", metavar="NAME")
    p.set_defaults(handler=cmd_role)

    p = commands.add_parser("tenant", help="tenants and their usage")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    create = actions.add_parser("create", help="create a tenant, or replace all its quotas")
    create.add_argument("name", metavar="NAME")
    _quota_options(create)
    actions.add_parser("list", help="every tenant with quotas and usage (admin)")
    delete = actions.add_parser("delete", help="delete an empty tenant without live tokens")
    delete.add_argument("name", metavar="NAME")
    usage = actions.add_parser("usage", help="one tenant's usage (default: the token's)")
    usage.add_argument("name", metavar="NAME", nargs="?")
    p.set_defaults(handler=cmd_tenant)

    p = commands.add_parser("quota", help="a tenant's quotas")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    get = actions.add_parser("get", help="quotas and usage")
    get.add_argument("tenant", metavar="TENANT")
    set_ = actions.add_parser("set", help="change the quotas given, keep the others")
    set_.add_argument("tenant", metavar="TENANT")
    _quota_options(set_)
    p.set_defaults(handler=cmd_quota)
