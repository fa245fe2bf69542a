"""
`concord audit query|export|hash|verify`: the audit log, offline (docs/cli.md, "audit";
the format: docs/observability-audit.md).

Reads a node's audit folder directly (concord.audit.reader); never talks to a node. The
folder and the cluster secret come from `--config NODE.toml` (its `[audit] dir` and
`secret_file`) or from `--dir` and `--secret-file`, which override it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from concord.cli.main import EXIT_CHECK_FAILED, CliError, Context, non_negative_int
from concord.cli.output import Output

if TYPE_CHECKING:
    from concord.audit.record import AuditKeys

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]

COLUMNS = ("time", "event_id", "op", "key", "key_hmac", "result", "revision", "token_id",
           "tenant", "client", "trace_id")


def _source(args: argparse.Namespace, need_secret: bool) -> tuple[Path | None, AuditKeys | None]:
    """(audit folder, keys) from --config / --dir / --secret-file."""
    from concord.audit.record import AuditKeys, read_secret  # noqa: PLC0415

    folder: str | None = getattr(args, "dir", None)
    secret_file: str | None = args.secret_file
    if args.config:
        from concord.config import load_config  # noqa: PLC0415

        config = load_config(args.config)
        folder = folder or config.audit.dir
        secret_file = secret_file or config.audit.secret_file or None
    keys = None
    if secret_file:
        try:
            keys = AuditKeys(read_secret(secret_file))
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read the audit secret: {exc}") from exc
    elif need_secret:
        raise CliError("the audit secret is needed: give --secret-file FILE or --config NODE.toml")
    return (Path(folder) if folder else None), keys


def _folder(args: argparse.Namespace, need_secret: bool) -> tuple[Path, AuditKeys | None]:
    folder, keys = _source(args, need_secret)
    if folder is None:
        raise CliError("which audit log? give --dir DIR or --config NODE.toml")
    if not folder.is_dir():
        raise CliError(f"audit folder {folder} does not exist")
    return folder, keys


def cmd_query(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.audit.reader import Filter, parse_since, select  # noqa: PLC0415

    folder, keys = _folder(args, need_secret=args.key is not None)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    flt = Filter(ops=args.op, key=args.key, token=args.token, since=since, results=args.result)
    rows: list[dict[str, object]] = []
    for obj in select(folder, flt, keys):
        rows.append(obj)
        if args.limit and len(rows) >= args.limit:
            break
    return Output(COLUMNS, rows)


def cmd_export(ctx: Context, args: argparse.Namespace) -> None:
    from concord.audit.reader import parse_since, read_lines  # noqa: PLC0415

    folder, _ = _folder(args, need_secret=False)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    count = 0
    try:
        for line in read_lines(folder):
            if since is not None and (line.obj is None or str(line.obj.get("time", "")) < since):
                continue
            out.write(line.text + "\n")
            count += 1
    finally:
        if args.out:
            out.close()
    print(f"exported {count} lines from {folder}", file=sys.stderr)


def cmd_hash(ctx: Context, args: argparse.Namespace) -> Output:
    _, keys = _source(args, need_secret=True)
    assert keys is not None
    digest = keys.hmac(args.key)
    return Output(("key_hmac",), [{"key_hmac": digest}], data={"key_hmac": digest}, single=True)


def cmd_verify(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.audit.reader import verify  # noqa: PLC0415

    folder, keys = _folder(args, need_secret=True)
    assert keys is not None
    report = verify(folder, keys)
    row: dict[str, object] = {
        "ok": report.ok, "files": report.files, "lines": report.lines,
        "first_seq": report.first_seq, "last_seq": report.last_seq, "head": report.head,
        "problems": report.problems,
    }
    rows = [row] if report.ok else [{"ok": False, "problem": p} for p in report.problems]
    columns = ("ok", "files", "lines", "first_seq", "last_seq", "head") if report.ok else ("ok", "problem")
    return Output(columns, rows, data=row, exit_code=0 if report.ok else EXIT_CHECK_FAILED)


def _where(parser: argparse.ArgumentParser, folder: bool = True) -> None:
    parser.add_argument("--config", help="a node's TOML file: its [audit] dir and secret_file")
    if folder:
        parser.add_argument("--dir", help="the audit folder (overrides --config)")
    parser.add_argument("--secret-file", help="the cluster's audit secret (overrides --config)")


def register(commands: Subparsers) -> None:
    audit = commands.add_parser("audit", help="query, export and verify a node's audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", parser_class=type(audit))
    sub.required = True

    query = sub.add_parser("query", help="lines matching every filter given")
    _where(query)
    query.add_argument("--op", action="append", help="this op (repeatable)")
    query.add_argument("--key", help="this key (matched by its HMAC; needs the secret)")
    query.add_argument("--token", help="this token id")
    query.add_argument("--since", help="at or after: UTC time (2026-12-07T07:00:00Z) or 90m, 2h, 7d ago")
    query.add_argument("--result", action="append", help="this result: ok or an error code (repeatable)")
    query.add_argument("--limit", type=non_negative_int, default=0, help="at most N lines (0: all)")
    query.set_defaults(handler=cmd_query)

    export = sub.add_parser("export", help="every line as stored (JSON lines), oldest first")
    _where(export)
    export.add_argument("--since", help="at or after (as for query)")
    export.add_argument("--out", help="write to this file instead of stdout")
    export.set_defaults(handler=cmd_export)

    hash_ = sub.add_parser("hash", help="the HMAC a key is logged as")
    _where(hash_, folder=False)
    hash_.add_argument("key")
    hash_.set_defaults(handler=cmd_hash)

    check = sub.add_parser("verify", help="check the hash chain across every file; exit 5 if broken")
    _where(check)
    check.set_defaults(handler=cmd_verify)
