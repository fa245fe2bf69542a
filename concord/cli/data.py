"""
Data commands of `concord`: get, put, del, touch, ttl, bulk, query, count, watch.

Each turns its arguments into one wire op (docs/protocol.md) through the client and its
reply into an Output; docs/cli.md documents them with examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from concord.cli.main import (
    CliError,
    Context,
    non_negative_int,
    positive_float,
)
from concord.cli.output import Output, Streamer

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]

#: Items per bulk request: the node's default limits.max_batch_items.
BULK_BATCH = 500
CONSISTENCY = ("eventual", "leader", "strong")


def _json_arg(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}") from None


def _value(text: str, as_json: bool, what: str = "value") -> object:
    if text == "-":
        text = sys.stdin.read()
    return _json_arg(text, what) if as_json else text


def _where(args: argparse.Namespace) -> object:
    if getattr(args, "where", None) is None:
        return None
    return _json_arg(args.where, "--where")


def _selectors(args: argparse.Namespace) -> dict[str, object]:
    """The query arguments given (prefix, suffix, contains, pattern, range, where)."""
    out: dict[str, object] = {}
    for name in ("prefix", "suffix", "contains", "pattern"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if getattr(args, "range", None) is not None:
        lo, hi = args.range
        out["range"] = [lo or None, hi or None]
    where = _where(args)
    if where is not None:
        out["where"] = where
    return out


def _pages(ctx: Context, op: str, args: dict[str, object], follow: bool) -> Iterator[dict[str, object]]:
    """Replies of `op`, following `more` by offset when `follow`."""
    raw_offset = args.get("offset")
    offset = raw_offset if isinstance(raw_offset, int) else 0
    while True:
        reply = ctx.client.call(op, {**args, "offset": offset or None})
        yield reply
        page = reply.get("keys" if op == "keys" else "items")
        if not follow or not reply.get("more") or not isinstance(page, list) or not page:
            return
        offset += len(page)


def _listing(ctx: Context, args: argparse.Namespace, selectors: dict[str, object]) -> Output:
    op = "keys" if args.keys_only else "query"
    request: dict[str, object] = {**selectors, "limit": args.limit, "offset": args.offset or None,
                                  "consistency": args.consistency}
    rows: list[dict[str, object]] = []
    more = False
    for reply in _pages(ctx, op, request, args.all):
        more = bool(reply.get("more"))
        if op == "keys":
            rows.extend({"key": k} for k in reply.get("keys") or [])  # type: ignore[attr-defined]
        else:
            rows.extend({"key": k, "value": v} for k, v in reply.get("items") or [])  # type: ignore[attr-defined]
    columns = ("key",) if args.keys_only else ("key", "value")
    note = ""
    if more:
        note = f"more results follow: --offset {(args.offset or 0) + len(rows)} (or --all)"
    return Output(columns, rows, data={"items": rows, "more": more}, note=note)


def cmd_get(ctx: Context, args: argparse.Namespace) -> Output:
    selectors = _selectors(args)
    if args.prefix_flag:
        if args.key is None:
            raise CliError("get --prefix needs a KEY (the prefix)")
        selectors["prefix"] = args.key
    elif args.key is not None and args.range_end is not None:
        selectors["range"] = [args.key, args.range_end or None]
    elif args.key is None and not selectors:
        raise CliError("get needs a KEY, or --prefix/--range-end/--where to select keys")
    if selectors:
        if args.meta:
            raise CliError("--meta works with a single key, not with --prefix, --range-end or --where")
        return _listing(ctx, args, selectors)
    reply = ctx.client.call("get", {"key": args.key, "meta": True if args.meta else None,
                                    "consistency": args.consistency})
    row: dict[str, object] = {"key": args.key, "value": reply.get("value")}
    columns: tuple[str, ...] = ("value",)
    if args.meta:
        for name in ("revision", "version", "create_revision", "ttl"):
            row[name] = reply.get(name)
        columns = ("key", "value", "revision", "version", "create_revision", "ttl")
    return Output(columns, [row], data=row, single=not args.meta)


def cmd_put(ctx: Context, args: argparse.Namespace) -> Output:
    value = _value(args.value, args.json)
    request: dict[str, object] = {"key": args.key, "value": value, "ttl": args.ttl}
    op = "put"
    if args.if_absent:
        op, request["absent"] = "put_if", True
    elif args.if_version is not None:
        op, request["version"] = "put_if", args.if_version
    elif args.if_mod_revision is not None:
        op, request["mod_revision"] = "put_if", args.if_mod_revision
    elif args.if_value is not None:
        op, request["expected"] = "put_if", _value(args.if_value, args.json, "--if-value")
    if value is None:
        # NB: Client.call leaves out None arguments; a nil value is sent explicitly.
        from concord.client.client import explicit  # noqa: PLC0415
        request["value"] = explicit(None)
    reply = ctx.client.call(op, request)
    row = {"key": args.key, "revision": reply.get("revision")}
    return Output(("revision",), [row], data=row, single=True)


def cmd_del(ctx: Context, args: argparse.Namespace) -> Output:
    selectors = _selectors(args)
    if args.prefix_flag:
        selectors["prefix"] = args.key
    elif args.range_end is not None:
        selectors["range"] = [args.key, args.range_end or None]
    if selectors:
        reply = ctx.client.call("delete_where", selectors)
    else:
        request: dict[str, object] = {"key": args.key}
        op = "delete"
        if args.if_version is not None:
            op, request["version"] = "delete_if", args.if_version
        elif args.if_mod_revision is not None:
            op, request["mod_revision"] = "delete_if", args.if_mod_revision
        elif args.if_value is not None:
            op, request["expected"] = "delete_if", _value(args.if_value, args.json, "--if-value")
        reply = ctx.client.call(op, request)
    row = {"deleted": reply.get("deleted"), "revision": reply.get("revision")}
    return Output(("deleted", "revision"), [row], data=row)


def _ttl_arg(text: str) -> float | None:
    if text.lower() in ("none", "never", "0"):
        return None
    return positive_float(text)


def cmd_touch(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.client.client import explicit  # noqa: PLC0415 (an explicit nil ttl)

    ttl = args.ttl
    reply = ctx.client.call("touch", {"key": args.key, "ttl": explicit(None) if ttl is None else ttl})
    row = {"key": args.key, "revision": reply.get("revision")}
    return Output(("revision",), [row], data=row, single=True)


def cmd_ttl(ctx: Context, args: argparse.Namespace) -> Output:
    reply = ctx.client.call("ttl", {"key": args.key, "consistency": args.consistency})
    row = {"key": args.key, "ttl": reply.get("ttl")}
    return Output(("ttl",), [row], data=row, single=True)


def _json_lines(stream: TextIO, name: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}:{number}: not a JSON line ({exc.msg})") from None


def _bulk_items(args: argparse.Namespace) -> Iterator[tuple[int, object]]:
    if args.file == "-":
        yield from _json_lines(sys.stdin, "<stdin>")
        return
    with open(args.file, encoding="utf-8") as stream:
        yield from _json_lines(stream, args.file)


def _bulk_rows(args: argparse.Namespace) -> list[list[object]]:
    """Every line as [key, value, ttl] (put) or [key] (get, del), checked first."""
    rows: list[list[object]] = []
    name = "<stdin>" if args.file == "-" else args.file
    for number, obj in _bulk_items(args):
        if isinstance(obj, str) and args.action != "put":
            rows.append([obj])
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            raise CliError(f"{name}:{number}: expected an object with a string \"key\"")
        if args.action == "put":
            if "value" not in obj:
                raise CliError(f"{name}:{number}: a put line needs a \"value\"")
            ttl = obj.get("ttl")
            if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0):
                raise CliError(f"{name}:{number}: \"ttl\" must be a positive number")
            rows.append([obj["key"], obj["value"], ttl])
        else:
            rows.append([obj["key"]])
    return rows


def _batches(rows: list[list[object]], size: int) -> Iterable[list[list[object]]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def cmd_bulk(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.client.client import explicit  # noqa: PLC0415 (user values may be nil)

    rows = _bulk_rows(args)
    out: list[dict[str, object]] = []
    count = 0
    revision: object = None
    for batch in _batches(rows, args.batch):
        if args.action == "put":
            items = [[k, explicit(v)] if ttl is None else [k, explicit(v), ttl] for k, v, ttl in batch]
            revision = ctx.client.call("put_many", {"items": items}).get("revision")
            count += len(batch)
        elif args.action == "del":
            reply = ctx.client.call("delete_many", {"keys": [r[0] for r in batch]})
            count += int(reply.get("deleted") or 0)  # type: ignore[call-overload]
            revision = reply.get("revision")
        else:
            reply = ctx.client.call("get_many", {"keys": [r[0] for r in batch],
                                                 "consistency": args.consistency})
            values = reply.get("values")
            assert isinstance(values, dict)
            for (key,) in batch:
                if key in values:
                    out.append({"key": key, "value": values[key]})
    if args.action == "get":
        return Output(("key", "value"), out, data=out)
    verb = "put" if args.action == "put" else "deleted"
    row = {verb: count, "revision": revision}
    return Output((verb, "revision"), [row], data=row)


def cmd_query(ctx: Context, args: argparse.Namespace) -> Output:
    return _listing(ctx, args, _selectors(args))


def cmd_count(ctx: Context, args: argparse.Namespace) -> Output:
    reply = ctx.client.call("count", {**_selectors(args), "consistency": args.consistency})
    row = {"count": reply.get("count")}
    return Output(("count",), [row], data=row, single=True)


def cmd_watch(ctx: Context, args: argparse.Namespace) -> None:
    from concord.errors import CompactedError  # noqa: PLC0415

    columns = ("type", "key", "value", "revision", "ttl")
    streamer = Streamer(columns, ctx.fmt)
    seen = 0
    since = args.rev
    with ctx.client.subscribe(prefix=args.prefix, since_revision=since) as sub:
        while args.max_events is None or seen < args.max_events:
            try:
                event = sub.next(args.idle_timeout if args.idle_timeout else 3600.0)
            except CompactedError as exc:
                raise CliError(f"cannot watch from revision {since}: {exc}", 1) from exc
            if event is None:
                if args.idle_timeout:
                    return
                continue
            streamer.emit({"type": event.type, "key": event.key, "value": event.value,
                           "revision": event.revision, "ttl": event.ttl})
            seen += 1


# --- argument parsing -------------------------------------------------------------------


def _consistency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--consistency", choices=CONSISTENCY, default=None,
                        help="read consistency (default leader)")


def _filters(parser: argparse.ArgumentParser, with_prefix: bool = True) -> None:
    if with_prefix:
        parser.add_argument("--prefix", help="keys starting with this")
    parser.add_argument("--suffix", help="keys ending with this")
    parser.add_argument("--contains", help="keys containing this")
    parser.add_argument("--pattern", help="regular expression searched in the key")
    parser.add_argument("--range", nargs=2, metavar=("LO", "HI"),
                        help="keys in [LO, HI] inclusive; '' for an open end")
    parser.add_argument("--where", metavar="JSON",
                        help='value filter, e.g. \'["ge", "age", 18]\' (docs/formats/kv.md)')


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=non_negative_int, help="results per page (node default 1000)")
    parser.add_argument("--offset", type=non_negative_int, help="skip this many results")
    parser.add_argument("--all", action="store_true", help="follow every page")
    parser.add_argument("--keys-only", action="store_true", help="keys without values")


def _conditions(parser: argparse.ArgumentParser, absent: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    if absent:
        group.add_argument("--if-absent", action="store_true", help="only if the key does not exist")
    group.add_argument("--if-version", type=non_negative_int, metavar="N",
                       help="only if the key's version is N (0: absent)")
    group.add_argument("--if-mod-revision", type=non_negative_int, metavar="REV",
                       help="only if the key's mod_revision is REV (0: absent)")
    group.add_argument("--if-value", metavar="VALUE", help="only if the current value equals VALUE")
    parser.add_argument("--json", action="store_true", help="VALUE arguments are JSON, not text")


def register(commands: Subparsers) -> None:
    """Add the data commands to the `concord` parser."""
    p = commands.add_parser("get", help="read a key, or keys by --prefix/--range-end/--where")
    p.add_argument("key", nargs="?", metavar="KEY")
    p.add_argument("--prefix", dest="prefix_flag", action="store_true", help="KEY is a prefix")
    p.add_argument("--range-end", metavar="END", help="keys in [KEY, END] inclusive ('' : no end)")
    p.add_argument("--where", metavar="JSON", help="value filter (docs/formats/kv.md)")
    p.add_argument("--meta", action="store_true", help="also revision, version, create_revision, ttl")
    _consistency(p)
    _paging(p)
    p.set_defaults(handler=cmd_get)

    p = commands.add_parser("put", help="write a key (optionally conditional, with a ttl)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", help="text, JSON with --json, '-' for stdin")
    p.add_argument("--ttl", type=positive_float, help="seconds to live")
    _conditions(p, absent=True)
    p.set_defaults(handler=cmd_put)

    p = commands.add_parser("del", help="delete a key, or keys by --prefix/--range-end")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", dest="prefix_flag", action="store_true", help="KEY is a prefix")
    p.add_argument("--range-end", metavar="END", help="keys in [KEY, END] inclusive")
    _conditions(p, absent=False)
    p.set_defaults(handler=cmd_del)

    p = commands.add_parser("touch", help="give a key a new ttl")
    p.add_argument("key", metavar="KEY")
    p.add_argument("ttl", metavar="TTL", type=_ttl_arg, help="seconds, or 'none' for no expiry")
    p.set_defaults(handler=cmd_touch)

    p = commands.add_parser("ttl", help="seconds left before a key expires")
    p.add_argument("key", metavar="KEY")
    _consistency(p)
    p.set_defaults(handler=cmd_ttl)

    p = commands.add_parser("bulk", help="put, get or del many keys from JSON lines")
    p.add_argument("action", choices=("put", "get", "del"))
    p.add_argument("file", metavar="FILE", nargs="?", default="-", help="JSON lines ('-': stdin)")
    p.add_argument("--batch", type=non_negative_int, default=BULK_BATCH,
                   help=f"items per atomic request (default {BULK_BATCH})")
    _consistency(p)
    p.set_defaults(handler=cmd_bulk)

    p = commands.add_parser("query", help="keys and values matching filters")
    _filters(p)
    _paging(p)
    _consistency(p)
    p.set_defaults(handler=cmd_query)

    p = commands.add_parser("count", help="how many keys match filters")
    _filters(p)
    _consistency(p)
    p.set_defaults(handler=cmd_count)

    p = commands.add_parser("watch", help="follow changes (from a revision)")
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    p.add_argument("--rev", type=non_negative_int, help="replay changes after this revision first")
    p.add_argument("--max-events", type=non_negative_int, help="exit after this many events")
    p.add_argument("--idle-timeout", type=positive_float, help="exit after this many quiet seconds")
    p.set_defaults(handler=cmd_watch)
