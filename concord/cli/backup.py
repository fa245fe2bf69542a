"""
`concord backup create|list|verify|cleanup|restore` (docs/backup.md).

create: asks one node (the first endpoint) for a point-in-time image at its applied
index (the `backup` op, concord.node.backup), streams it chunk by chunk with a progress
bar, decodes it completely, and writes `<dir>/concord-<created>-<index>.cbak`
(concord.cli.backupfile) atomically.
restore: online import into a running cluster through Raft, in atomic put_many batches,
after a confirmation prompt (or --yes).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from concord.cli.backupfile import BACKUP_SUFFIX, BackupHeader, Decoded, read_header, verify, write_backup
from concord.cli.main import EXIT_CHECK_FAILED, EXIT_REFUSED, CliError, Context, non_negative_int
from concord.cli.output import Output, progressbar

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]

RESTORE_BATCH = 500
RESTORE_PARALLEL = 4


def _fetch_image(ctx: Context, endpoint: str) -> tuple[str, int, bytes]:
    """(node, index, snapshot file bytes) of a fresh image from the node at `endpoint`."""
    started = ctx.client.call_at(endpoint, "backup", {})
    index = int(started["index"])  # type: ignore[call-overload]
    node = str(started.get("node"))
    deadline = time.monotonic() + max(ctx.timeout_s, 600.0)
    chunks: list[bytes] = []
    offset = 0
    with progressbar(f"backup of {node} at index {index}", None) as bar:
        while True:
            reply = ctx.client.call_at(endpoint, "backup", {"index": index, "offset": offset})
            if reply.get("state") == "pending":
                if time.monotonic() > deadline:
                    raise CliError(f"node {node} did not finish the image at index {index}", EXIT_REFUSED)
                time.sleep(0.05)  # the node's forked writer is still serializing
                continue
            data = reply.get("data")
            size = reply.get("size")
            if not isinstance(data, bytes) or not isinstance(size, int):
                raise CliError(f"node {node} sent a malformed backup chunk", EXIT_REFUSED)
            bar.total(size)
            bar.advance(len(data))
            chunks.append(data)
            offset += len(data)
            if offset >= size or not data:
                return node, index, b"".join(chunks)


def cmd_create(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.cli.backupfile import summarize_body  # noqa: PLC0415

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    endpoint = args.node or ctx.endpoints[0]
    node, index, body = _fetch_image(ctx, endpoint)
    decoded = summarize_body(body, f"from node {node}")
    created = time.time()
    header = BackupHeader(node=node, index=decoded.index, term=decoded.term, revision=decoded.revision,
                          created_at=created, keys=decoded.keys, state_hash=decoded.state_hash,
                          kv_state_hash=decoded.kv_state_hash,
                          body_bytes=len(body), members=decoded.members,
                          cluster_id=decoded.cluster_id)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    path = folder / f"concord-{stamp}-{index:012d}{BACKUP_SUFFIX}"
    write_backup(path, header, body)
    row = {"file": str(path), **header.to_map(), "size": path.stat().st_size}
    return Output(("file", "index", "revision", "keys", "size", "node"), [row], data=row)


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{BACKUP_SUFFIX}"))


def cmd_list(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.errors import CorruptionError  # noqa: PLC0415

    rows: list[dict[str, object]] = []
    for path in _backups(Path(args.dir)):
        try:
            header, _ = read_header(path)
        except CorruptionError as exc:
            rows.append({"file": path.name, "created": "", "error": exc.args[0]})
            continue
        rows.append({"file": path.name, "created": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                 time.localtime(header.created_at)),
                     "revision": header.revision, "index": header.index, "keys": header.keys,
                     "size": path.stat().st_size, "node": header.node})
    return Output(("file", "created", "revision", "keys", "size", "node"), rows)


def cmd_verify(ctx: Context, args: argparse.Namespace) -> Output:
    from concord.errors import CorruptionError  # noqa: PLC0415

    rows: list[dict[str, object]] = []
    bad = 0
    for name in args.files:
        try:
            header, decoded = verify(Path(name))
        except (CorruptionError, OSError) as exc:
            rows.append({"file": name, "ok": False, "detail": str(exc)})
            bad += 1
            continue
        content, live = decoded.content_hash()
        rows.append({"file": name, "ok": True, "cluster_id": header.cluster_id,
                     "content_hash": f"{content:016x}",
                     "detail": f"index {header.index}, revision {header.revision}, {header.keys} keys "
                               f"({live} live), content hash {content:016x}"})
    note = f"{bad} of {len(rows)} backups failed verification" if bad else ""
    return Output(("file", "ok", "detail"), rows, note=note, exit_code=EXIT_CHECK_FAILED if bad else 0)


def cmd_cleanup(ctx: Context, args: argparse.Namespace) -> Output:
    """Keep the newest --keep backups and any younger than --keep-days; delete the rest."""
    if args.keep is None and args.keep_days is None:
        raise CliError("backup cleanup needs --keep N and/or --keep-days D")
    paths = sorted(_backups(Path(args.dir)), key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    rows: list[dict[str, object]] = []
    for rank, path in enumerate(paths):
        age_days = (now - path.stat().st_mtime) / 86400
        kept_by_count = args.keep is not None and rank < args.keep
        kept_by_age = args.keep_days is not None and age_days < args.keep_days
        keep = kept_by_count or kept_by_age
        if not keep and not args.dry_run:
            path.unlink()
        rows.append({"file": path.name, "action": "keep" if keep else "delete",
                     "age_days": round(age_days, 2)})
    return Output(("file", "action", "age_days"), rows)


def _restore_offline(args: argparse.Namespace) -> Output:
    """
    New data dirs for a new cluster from the node configs given (concord.node.restore).
    NB: the one CLI path that uses node internals rather than the client, as etcdutl
    does for etcd: it writes files for nodes that are not running.
    """
    from concord.config import load_config  # noqa: PLC0415
    from concord.node.restore import restore_offline  # noqa: PLC0415

    configs = [load_config(path) for path in args.config]
    header, decoded = verify(Path(args.file), values=False)
    written = restore_offline(configs, decoded.machine, decoded.index, decoded.term)
    rows: list[dict[str, object]] = [
        {"node": config.node.id, "data_dir": str(config.node.data_dir), "snapshot": str(path),
         "index": header.index, "keys": header.keys, "cluster_id": decoded.machine.cluster_id,
         "source_cluster_id": header.cluster_id}
        for config, path in zip(configs, written)]
    return Output(("node", "data_dir", "index", "keys", "cluster_id"), rows)


def _put_batches(ctx: Context, batches: Iterator[list[object]], parallel: int,
                 advance: Callable[[float], None]) -> tuple[int, int | None]:
    """
    Send each batch as one atomic put_many, `parallel` in flight (one client per worker:
    a Client has one request in flight). Returns (keys written, highest revision).

    Raises:
        ConcordError: the first failed batch's error (batches already sent stay written).
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait  # noqa: PLC0415

    from concord.client.client import Client  # noqa: PLC0415

    clients = [ctx.new_client() for _ in range(max(1, parallel))]
    free = list(clients)
    written, revision = 0, None
    try:
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            running: dict[Future[dict[str, object]], tuple[Client, int]] = {}

            def settle(done: set[Future[dict[str, object]]]) -> None:
                nonlocal written, revision
                for future in done:
                    client, count = running.pop(future)
                    free.append(client)
                    got = future.result().get("revision")  # raises the batch's error
                    if isinstance(got, int):
                        revision = got if revision is None else max(revision, got)
                    written += count
                    advance(count)

            for batch in batches:
                if not free:
                    settle(wait(running, return_when=FIRST_COMPLETED).done)
                client = free.pop()
                running[pool.submit(client.call, "put_many", {"items": batch})] = (client, len(batch))
            settle(wait(running).done)
    finally:
        for client in clients:
            client.close()
    return written, revision


def cmd_restore(ctx: Context, args: argparse.Namespace) -> Output:
    """Online import: every key of the backup written through Raft in atomic batches."""
    from concord.client.client import explicit  # noqa: PLC0415

    if args.offline:
        if not args.config:
            raise CliError("restore --offline needs --config FILE for every node of the new cluster")
        return _restore_offline(args)
    if args.config:
        raise CliError("--config is for --offline restores; an online import uses -e ENDPOINTS")
    header, decoded = verify(Path(args.file))
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("restore writes into the running cluster: confirm with --yes "
                           "(stdin is not a terminal, so no prompt)")
        answer = input(f"import {header.keys} keys from {args.file} (index {header.index}) into "
                       f"{','.join(ctx.endpoints)}, overwriting those keys? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("restore cancelled", EXIT_REFUSED)
    expired = 0

    def batches() -> Iterator[list[object]]:
        nonlocal expired
        batch: list[object] = []
        for key, value, expires_at_ms in decoded.records():
            if expires_at_ms:
                left_s = (expires_at_ms - decoded.last_ts_ms) / 1000
                if left_s <= 0:
                    expired += 1
                    continue
                batch.append([key, explicit(value), left_s])
            else:
                batch.append([key, explicit(value)])
            if len(batch) >= args.batch:
                yield batch
                batch = []
        if batch:
            yield batch

    before = ctx.client.call("count", {"consistency": "strong"}).get("count")
    indexes = [{"name": d.name, "field": d.field} for d in decoded.machine.kv.index_set().definitions()]
    for definition in indexes:  # first: an index built as keys arrive costs no big apply
        ctx.client.call("create_index", definition)
    with progressbar(f"restore {header.keys} keys", header.keys, in_bytes=False) as bar:
        written, revision = _put_batches(ctx, batches(), args.parallel, bar.advance)
    return _import_result(ctx, args.file, decoded, before, (written, expired, revision, len(indexes)))


def _import_result(ctx: Context, file: str, decoded: Decoded, keys_before: object,
                   counts: tuple[int, int, int | None, int]) -> Output:
    """The import's row, after comparing the cluster's content hash with the backup's."""
    from concord.cli.cluster import content_hash  # noqa: PLC0415

    written, expired, revision, indexes = counts
    expected, _ = decoded.content_hash()
    got, live = content_hash(ctx)
    equal = expected == got
    row: dict[str, object] = {
        "file": file, "keys": written, "expired_skipped": expired, "indexes": indexes,
        "revision": revision, "content_hash": f"{got:016x}", "backup_content_hash": f"{expected:016x}",
        "content_equal": equal, "cluster_keys": live}
    code, note = 0, "content hash equals the backup's: the cluster holds exactly its keys and values"
    if not equal and keys_before == 0:
        code = EXIT_CHECK_FAILED
        note = (f"content hash {got:016x} differs from the backup's {expected:016x} after an "
                "import into an empty cluster (written to meanwhile, or keys lost)")
    elif not equal:
        note = (f"content hash differs from the backup's, as expected: the cluster held "
                f"{keys_before} keys before the import")
    return Output(("keys", "expired_skipped", "indexes", "revision", "content_equal"), [row],
                  data=row, note=note, exit_code=code)


def register(commands: Subparsers) -> None:
    """Add `backup` to the `concord` parser."""
    p = commands.add_parser("backup", help="create, list, verify, clean up and restore backups")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True

    sub = actions.add_parser("create", help="a point-in-time backup from a running node")
    sub.add_argument("--dir", default=".", help="folder for the backup file (default .)")
    sub.add_argument("--node", metavar="ENDPOINT", help="the node to back up (default: first -e endpoint)")
    sub.set_defaults(handler=cmd_create)

    sub = actions.add_parser("list", help="the backups in a folder")
    sub.add_argument("--dir", default=".", help="folder (default .)")
    sub.set_defaults(handler=cmd_list)

    sub = actions.add_parser("verify", help="checksum and full decode of backup files")
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub.set_defaults(handler=cmd_verify)

    sub = actions.add_parser("cleanup", help="delete old backups")
    sub.add_argument("--dir", default=".", help="folder (default .)")
    sub.add_argument("--keep", type=non_negative_int, metavar="N", help="keep the N newest")
    sub.add_argument("--keep-days", type=float, metavar="D", help="keep those younger than D days")
    sub.add_argument("--dry-run", action="store_true", help="show, delete nothing")
    sub.set_defaults(handler=cmd_cleanup)

    sub = actions.add_parser("restore", help="import into a running cluster through Raft, "
                             "or --offline into new data dirs")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--offline", action="store_true",
                     help="write new data dirs for a new cluster (nodes stopped) instead")
    sub.add_argument("--config", action="append", metavar="NODE_TOML",
                     help="with --offline: a node config of the new cluster (repeat per node)")
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_argument("--batch", type=non_negative_int, default=RESTORE_BATCH,
                     help=f"keys per atomic put_many (default {RESTORE_BATCH})")
    sub.add_argument("--parallel", type=non_negative_int, default=RESTORE_PARALLEL,
                     help=f"batches in flight (default {RESTORE_PARALLEL})")
    sub.set_defaults(handler=cmd_restore)
