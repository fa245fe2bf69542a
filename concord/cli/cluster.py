"""
Cluster commands of `concord`: status, members, move-leader, endpoint health, check hash.

Per-node questions go to each member's own client endpoint (`Client.call_at`, no
redirect); membership changes go to the leader through the client's redirects.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import TYPE_CHECKING

from concord.cli.main import EXIT_CHECK_FAILED, EXIT_UNREACHABLE, CliError, Context, non_negative_int
from concord.cli.output import Output

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["content_hash", "judge", "member_endpoints", "node_statuses", "register"]

#: Keys per `hash_content` page.
CONTENT_PAGE_KEYS = 10_000

#: Seconds a single node has to answer `status` in a cluster-wide command.
NODE_TIMEOUT_S = 2.0

STATUS_COLUMNS = ("node", "endpoint", "role", "term", "leader", "commit", "applied",
                  "revision", "lag", "keys", "db_size", "health")


def member_endpoints(ctx: Context) -> list[tuple[str, str]]:
    """(member id, client endpoint) of every member the cluster lists, else of the flags."""
    from concord.errors import ClientError  # noqa: PLC0415

    try:
        members = ctx.client.call("members").get("members")
    except ClientError:
        return [(ep, ep) for ep in ctx.endpoints]
    out = []
    for member in members if isinstance(members, list) else []:
        if isinstance(member, dict) and isinstance(member.get("client"), str):
            out.append((str(member.get("id")), str(member["client"])))
    return out or [(ep, ep) for ep in ctx.endpoints]


def node_statuses(ctx: Context, targets: list[tuple[str, str]]) -> list[tuple[str, str, dict[str, object] | str]]:
    """(id, endpoint, status map or error text) of each target."""
    from concord.errors import ClientError  # noqa: PLC0415

    out: list[tuple[str, str, dict[str, object] | str]] = []
    for member, endpoint in targets:
        try:
            reply = ctx.client.call_at(endpoint, "status", timeout_s=min(ctx.timeout_s, NODE_TIMEOUT_S))
        except ClientError as exc:
            out.append((member, endpoint, exc.message))
            continue
        out.append((member, endpoint, reply))
    return out


def _size(n: object) -> str:
    if not isinstance(n, int):
        return ""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def cmd_status(ctx: Context, args: argparse.Namespace) -> Output:
    results = node_statuses(ctx, member_endpoints(ctx))
    commits = [s["commit"] for _, _, s in results
               if isinstance(s, dict) and s.get("role") == "leader" and isinstance(s.get("commit"), int)]
    leader_commit = max(commits) if commits else None  # type: ignore[type-var]
    rows: list[dict[str, object]] = []
    unhealthy = 0
    for member, endpoint, st in results:
        if not isinstance(st, dict):
            rows.append({"node": member, "endpoint": endpoint, "health": f"unreachable: {st}"})
            unhealthy += 1
            continue
        applied = st.get("applied")
        lag = (leader_commit - applied if isinstance(leader_commit, int) and isinstance(applied, int)
               else None)
        health = "ok" if st.get("leader") is not None else "no leader"
        unhealthy += health != "ok"
        rows.append({"node": st.get("node"), "endpoint": endpoint, "role": st.get("role"),
                     "term": st.get("term"), "leader": st.get("leader"), "commit": st.get("commit"),
                     "applied": applied, "revision": st.get("revision"), "lag": lag,
                     "keys": st.get("keys"), "db_size": _size(st.get("db_bytes")),
                     "db_bytes": st.get("db_bytes"), "cluster_id": st.get("cluster_id"),
                     "health": health})
    return Output(STATUS_COLUMNS, rows, exit_code=EXIT_CHECK_FAILED if unhealthy else 0)


def _member_rows(members: object) -> Output:
    rows = [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []
    return Output(("id", "role", "client", "peer", "events"), rows)


def cmd_members(ctx: Context, args: argparse.Namespace) -> Output:
    action = args.action
    if action == "list":
        return _member_rows(ctx.client.call("members").get("members"))
    if action == "add":
        from concord.client.client import explicit  # noqa: PLC0415
        reply = ctx.client.call("add_member", {
            "member_id": args.id, "host": args.host, "client_port": args.client_port,
            "peer_port": args.peer_port, "events_port": args.events_port,
            "learner": explicit(True) if args.learner else None})
    else:
        op = {"remove": "remove_member", "promote": "promote_member"}[action]
        reply = ctx.client.call(op, {"member_id": args.id})
    return _member_rows(reply.get("members"))


def cmd_move_leader(ctx: Context, args: argparse.Namespace) -> Output:
    reply = ctx.client.call("transfer_leader", {"member_id": args.id})
    row = {"transferring_to": reply.get("transferring_to")}
    return Output(("transferring_to",), [row], data=row, single=True)


def cmd_endpoint_health(ctx: Context, args: argparse.Namespace) -> Output:
    targets = member_endpoints(ctx) if args.cluster else [(ep, ep) for ep in ctx.endpoints]
    rows: list[dict[str, object]] = []
    bad = 0
    for member, endpoint in targets:
        started = time.monotonic()
        [(_, _, st)] = node_statuses(ctx, [(member, endpoint)])
        took_ms = round((time.monotonic() - started) * 1000, 1)
        if not isinstance(st, dict):
            rows.append({"endpoint": endpoint, "health": False, "took_ms": took_ms, "error": st})
            bad += 1
        elif st.get("leader") is None:
            rows.append({"endpoint": endpoint, "health": False, "took_ms": took_ms,
                         "error": "no leader known"})
            bad += 1
        else:
            rows.append({"endpoint": endpoint, "health": True, "took_ms": took_ms, "error": ""})
    return Output(("endpoint", "health", "took_ms", "error"), rows,
                  exit_code=EXIT_CHECK_FAILED if bad else 0)


def _hash_at(ctx: Context, endpoint: str, index: int, deadline: float) -> dict[str, object]:
    """The node's `hash_kv` at `index`, waiting while it has not applied that far."""
    while True:
        reply = ctx.client.call_at(endpoint, "hash_kv", {"index": index},
                                   timeout_s=min(ctx.timeout_s, NODE_TIMEOUT_S))
        if reply.get("hash") is not None or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)  # the node applies the index within a heartbeat or two


def judge(rows: list[dict[str, object]]) -> list[str]:
    """
    Set each compared row's verdict: "ok" when its hash is the one a majority of ALL
    members (compared or not) reported, "DIVERGED" when another hash has that majority,
    "no majority" when no hash has one. Returns the nodes not "ok" among those compared.
    """
    votes = Counter(r["hash"] for r in rows if r["hash"] is not None)
    majority, count = votes.most_common(1)[0] if votes else (None, 0)
    has_majority = count * 2 > len(rows)
    diverged = []
    for row in rows:
        if row["hash"] is None:
            continue
        if has_majority and row["hash"] == majority:
            row["verdict"] = "ok"
        else:
            row["verdict"] = "DIVERGED" if has_majority else "no majority"
            diverged.append(str(row["node"]))
    return diverged


def content_hash(ctx: Context) -> tuple[int, int]:
    """
    (content hash, live keys) of the cluster (docs/formats/kv.md "Content hash"): the
    `hash_content` pages, strongly consistent each, added up. Pages are read one after
    another, so the result is a point in time only while no one writes.
    """
    total = keys = 0
    after: str | None = None
    while True:
        args: dict[str, object] = {"limit": CONTENT_PAGE_KEYS, "consistency": "strong"}
        if after is not None:
            args["after"] = after
        reply = ctx.client.call("hash_content", args)
        page, count, last = reply.get("hash"), reply.get("keys"), reply.get("last")
        if not isinstance(page, int) or not isinstance(count, int):
            raise CliError(f"malformed hash_content reply: {reply!r}", EXIT_CHECK_FAILED)
        total, keys = (total + page) & ((1 << 64) - 1), keys + count
        if not reply.get("more") or not isinstance(last, str):
            return total, keys
        after = last


def _check_content(ctx: Context, args: argparse.Namespace) -> Output:
    if args.index is not None:
        raise CliError("--content hashes the current state; it takes no --index")
    digest, keys = content_hash(ctx)
    row: dict[str, object] = {"content_hash": f"{digest:016x}", "keys": keys}
    return Output(("content_hash", "keys"), [row], data=row)


def cmd_check_hash(ctx: Context, args: argparse.Namespace) -> Output:
    """Compare every member's kv state hash at one applied index; name a diverged node."""
    from concord.errors import ClientError  # noqa: PLC0415

    if args.content:
        return _check_content(ctx, args)

    statuses = node_statuses(ctx, member_endpoints(ctx))
    reachable = [(m, ep, st) for m, ep, st in statuses if isinstance(st, dict)]
    if not reachable:
        raise CliError("no member answered status: " + "; ".join(f"{m}: {st}" for m, _, st in statuses),
                       EXIT_UNREACHABLE)
    index = args.index
    if index is None:  # every reachable node has applied it, so all still remember it
        index = min(int(st["applied"]) for _, _, st in reachable)  # type: ignore[call-overload]
    deadline = time.monotonic() + ctx.timeout_s
    rows: list[dict[str, object]] = []
    for member, endpoint, st in statuses:
        if not isinstance(st, dict):
            rows.append({"node": member, "endpoint": endpoint, "index": index, "hash": None,
                         "verdict": f"unreachable: {st}"})
            continue
        try:
            reply = _hash_at(ctx, endpoint, index, deadline)
        except ClientError as exc:
            rows.append({"node": st.get("node"), "endpoint": endpoint, "index": index,
                         "hash": None, "verdict": f"no hash: {exc.message}"})
            continue
        value = reply.get("hash")
        rows.append({"node": st.get("node"), "endpoint": endpoint, "index": index,
                     "hash": f"{value:016x}" if isinstance(value, int) else None,
                     "verdict": "" if isinstance(value, int) else "not applied yet"})
    if not any(r["hash"] is not None for r in rows):
        raise CliError(f"no member could report a state hash at index {index}", EXIT_CHECK_FAILED)
    diverged = judge(rows)
    incomplete = [r for r in rows if r["hash"] is None]
    note = ""
    if diverged:
        note = f"diverged at index {index}: {', '.join(diverged)}"
    elif incomplete:
        note = f"not compared at index {index}: {', '.join(str(r['node']) for r in incomplete)}"
    code = EXIT_CHECK_FAILED if diverged or incomplete else 0
    return Output(("node", "endpoint", "index", "hash", "verdict"), rows,
                  data={"index": index, "members": rows, "diverged": diverged}, note=note,
                  exit_code=code)


def register(commands: Subparsers) -> None:
    """Add the cluster commands to the `concord` parser."""
    p = commands.add_parser("status", help="one line per node: role, term, leader, lag, health")
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser("members", help="list, add, remove or promote members")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    actions.add_parser("list", help="the members and their endpoints")
    add = actions.add_parser("add", help="add a node (start it with concord-node --join)")
    add.add_argument("id", metavar="ID")
    add.add_argument("host", metavar="HOST")
    add.add_argument("client_port", metavar="CLIENT_PORT", type=non_negative_int)
    add.add_argument("peer_port", metavar="PEER_PORT", type=non_negative_int)
    add.add_argument("events_port", metavar="EVENTS_PORT", type=non_negative_int)
    add.add_argument("--learner", action="store_true", help="stay a learner (no auto-promotion)")
    for name, text in (("remove", "remove a member (the leader too)"),
                       ("promote", "make a learner a voter")):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id", metavar="ID")
    p.set_defaults(handler=cmd_members)

    p = commands.add_parser("move-leader", help="hand leadership to a member (default: best follower)")
    p.add_argument("id", metavar="ID", nargs="?")
    p.set_defaults(handler=cmd_move_leader)

    p = commands.add_parser("endpoint", help="per-endpoint checks")
    what = p.add_subparsers(dest="what", metavar="CHECK", parser_class=type(p))
    what.required = True
    health = what.add_parser("health", help="does each endpoint answer and know a leader")
    health.add_argument("--cluster", action="store_true", help="every member, not only -e")
    health.set_defaults(handler=cmd_endpoint_health)
    status = what.add_parser("status", help="same as `concord status`")
    status.set_defaults(handler=cmd_status)

    p = commands.add_parser("check", help="cluster checks: hash (replicas agree), perf")
    checks = p.add_subparsers(dest="check", metavar="CHECK", parser_class=type(p))
    checks.required = True
    hashp = checks.add_parser("hash", help="compare every member's state hash at one index")
    hashp.add_argument("--index", type=non_negative_int,
                       help="log index to compare at (default: the lowest applied index)")
    hashp.add_argument("--content", action="store_true",
                       help="instead: the cluster's content hash (keys, values, TTL or not; "
                            "no revisions), to compare with a backup's")
    hashp.set_defaults(handler=cmd_check_hash)
    from concord.cli import perf  # noqa: PLC0415

    perf.register_check(checks)
