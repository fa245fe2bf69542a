"""
`python -m bench.backup_bench [--keys N] [--systems concord,etcd]`: backup and restore of
N keys, Concord side by side with `etcdctl snapshot save` / `etcdutl snapshot restore`.

Concord: a 3-node cluster loaded with N keys (64-byte values); while one writer thread
keeps putting keys `w/<i>` (recording each acknowledged revision), `concord backup create`
runs. Then:
- every write acknowledged with a revision <= the backup's is in the backup (checked by
  decoding it), and the backup verifies;
- offline restore (`concord backup restore --offline`) into 3 new data dirs: time of the
  command, time until the new cluster has a leader, every node's `hash_kv` at the
  backup index equals the backup's kv_state_hash, its cluster id is new, and every
  write acknowledged at or before the backup's revision is there;
- online import (`concord backup restore --yes`) into an empty 3-node cluster: time, its
  content hash equals the backup's (the import's own check), and every write
  acknowledged at or before the backup's revision is there.
etcd: a 3-member cluster loaded with the same keys (txns of 500 puts); `etcdctl snapshot
save` and `etcdutl snapshot restore` (or `etcdctl snapshot restore` when etcdutl is
missing) are timed the same way.

Prints one table and the exact configuration; results, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.procs import Procs, free_ports, install_signal_handlers
from bench.systems import ROOT, Concord, Etcd, Member

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _cli(*args: str, endpoints: str = "") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "concord.cli", "--timeout", "600"]
    if endpoints:
        argv += ["-e", endpoints]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=ENV, check=True)


_T = TypeVar("_T")


def _timed(fn: Callable[[], _T]) -> tuple[float, _T]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def _writer(endpoints: tuple[str, ...], stop: threading.Event, acked: list[tuple[str, int]]) -> None:
    from concord.client import Client
    from concord.errors import ConcordError

    client = Client(list(endpoints), shm=False)
    i = 0
    try:
        while not stop.is_set():
            key = f"w/{i:08d}"
            try:
                acked.append((key, client.put(key, i)))
            except ConcordError:
                pass
            i += 1
    finally:
        client.close()


def _missing(endpoints: list[str], wanted: dict[str, int]) -> int:
    """How many of the keys `wanted` do not hold their value on the cluster."""
    from concord.client import Client

    keys = sorted(wanted)
    missing = 0
    # NB: a long timeout: a node just started on a 1M-key snapshot answers reads only once
    # its read workers have mapped the state.
    with Client(endpoints, shm=False, timeout_s=300.0) as client:
        for start in range(0, len(keys), 500):
            got = client.get_many(keys[start:start + 500])
            missing += sum(1 for k in keys[start:start + 500] if got.get(k) != wanted[k])
    return missing


def _cluster_id(endpoints: list[str]) -> object:
    from concord.client import Client

    with Client(endpoints, shm=False) as client:
        return client.status()["cluster_id"]


def bench_concord(n: int, work: Path, procs: Procs) -> dict[str, object]:
    from concord.cli.backupfile import verify

    out: dict[str, object] = {}
    source = Concord(procs, work / "source")
    source.start()
    _, _ = _timed(lambda: source.load_keys(n))
    endpoints = source.endpoints_leader_first()
    stop = threading.Event()
    acked: list[tuple[str, int]] = []
    writer = threading.Thread(target=_writer, args=(endpoints, stop, acked))
    writer.start()
    time.sleep(1.0)  # the writer is under way before the backup starts
    folder = work / "backups"
    took, run = _timed(lambda: _cli("-w", "json", "backup", "create", "--dir", str(folder),
                                    endpoints=endpoints[0]))
    stop.set()
    writer.join()
    created = json.loads(run.stdout)
    out["backup_s"] = round(took, 2)
    out["backup_bytes"] = created["size"]
    out["keys"] = created["keys"]
    took, (header, decoded) = _timed(lambda: verify(Path(created["file"])))
    out["verify_s"] = round(took, 2)
    took, _ = _timed(decoded.content_hash)
    out["content_hash_backup_s"] = round(took, 2)
    present = {key: value for key, value, _ in decoded.records()}
    before = [(k, r) for k, r in acked if r <= created["revision"]]
    missing = [k for k, _ in before if k not in present]
    wanted = {k: int(k[2:]) for k, _ in before}
    out["acked_writes_before_backup"] = len(before)
    out["acked_writes_missing_backup"] = len(missing)
    out["writes_during_backup"] = len(acked)
    out["source_cluster_id"] = str(created["cluster_id"])[:8]
    source.stop()

    target = Concord(procs, work / "offline")
    target.members = []
    for i in range(3):
        target.members.append(Member(f"n{i + 1}", free_ports(3), target.workdir / f"n{i + 1}"))
    configs = []
    for m in target.members:
        path = target.workdir / f"{m.id}.toml"
        path.write_text(target._config(m))
        configs += ["--config", str(path)]
    took, _ = _timed(lambda: _cli("backup", "restore", created["file"], "--offline", *configs))
    out["offline_restore_s"] = round(took, 2)

    def start_offline() -> None:
        for m in target.members:
            target.launch(m)
        for m in target.members:
            target.wait_ready(m, 900.0)
        target.leader_index(600.0)
    took, _ = _timed(start_offline)
    out["offline_start_to_leader_s"] = round(took, 2)
    eps = ",".join(m.endpoint for m in target.members)
    check = json.loads(_cli("-w", "json", "check", "hash", "--index", str(created["index"]),
                            endpoints=eps).stdout)
    out["offline_hash_equal"] = {m["hash"] for m in check["members"]} == {f"{header.kv_state_hash:016x}"}
    out["offline_cluster_id"] = str(_cluster_id(eps.split(",")))[:8]
    out["offline_acked_missing"] = _missing(eps.split(","), wanted)
    target.stop()

    empty = Concord(procs, work / "online")
    empty.start()
    eps = ",".join(empty.endpoints_leader_first())
    took, run = _timed(lambda: _cli("-w", "json", "backup", "restore", created["file"], "--yes",
                                    endpoints=eps))
    out["online_import_s"] = round(took, 2)  # includes the content-hash comparison
    imported = json.loads(run.stdout)
    out["online_content_equal"] = imported["content_equal"]
    took, _ = _timed(lambda: _cli("check", "hash", "--content", endpoints=eps))
    out["content_hash_cluster_s"] = round(took, 2)
    count = int(_cli("count", "--prefix", "", endpoints=eps).stdout)
    out["online_keys_equal"] = count == created["keys"]
    out["online_acked_missing"] = _missing(eps.split(","), wanted)
    empty.stop()
    return out


def bench_etcd(n: int, work: Path, procs: Procs) -> dict[str, object]:
    out: dict[str, object] = {}
    etcd = Etcd(procs, work)
    etcd.start()
    etcd.load_keys(n)
    endpoint = etcd.endpoints_leader_first()[0]
    snap = work / "etcd.db"
    took, _ = _timed(lambda: subprocess.run(["etcdctl", "--endpoints", endpoint, "snapshot", "save",
                                             str(snap)], capture_output=True, check=True,
                                            env=dict(os.environ, ETCDCTL_API="3")))
    out["backup_s"] = round(took, 2)
    out["backup_bytes"] = snap.stat().st_size
    out["keys"] = n
    etcd.stop()
    tool = ["etcdutl"] if shutil.which("etcdutl") else ["etcdctl"]
    restored = work / "etcd-restored"
    took, _ = _timed(lambda: subprocess.run([*tool, "snapshot", "restore", str(snap), "--data-dir",
                                             str(restored)], capture_output=True, check=True,
                                            env=dict(os.environ, ETCDCTL_API="3")))
    out["offline_restore_s"] = round(took, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.backup_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--systems", default="concord,etcd")
    args = ap.parse_args(argv)
    install_signal_handlers()
    print(f"backup bench: keys={args.keys} values=64 bytes systems={args.systems} "
          f"python={sys.version.split()[0]} cpus={os.cpu_count()}", flush=True)
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="concord-backup-bench-") as tmp, Procs() as procs:
        for system in args.systems.split(","):
            work = Path(tmp) / system
            work.mkdir()
            if system == "concord":
                results[system] = bench_concord(args.keys, work, procs)
            elif system == "etcd":
                if shutil.which("etcdctl") is None:
                    print("etcd: not installed (python -m bench setup); skipped", flush=True)
                    continue
                results[system] = bench_etcd(args.keys, work, procs)
            procs.stop_all()
    fields = sorted({k for r in results.values() for k in r})
    print(f"{'':32}" + "".join(f"{s:>16}" for s in results))
    for name in fields:
        print(f"{name:32}" + "".join(f"{str(results[s].get(name, '-')):>16}" for s in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
