"""
WAL append benchmark: what one group commit costs next to one raw fdatasync.

For batch sizes 1, 10, 100 and 1000 of 128-byte entries (fsync on), it measures appends
per second and per-batch latency p50/p99, and, in the same run and the same folder, the
raw rate of "write 4 KiB + fdatasync". The ratio columns are (p50 cost of one batch) /
(p50 cost of one raw fdatasync), and the median of the per-pair ratios (each batch against
the raw sync just before it: robust when the disk's latency is bimodal); the goal is under 1.10. A second raw column writes as
many bytes as the batch before its fdatasync (for 1000 entries that is ~150 KB, which the
disk needs longer for than 4 KiB), separating our overhead from the disk's bandwidth.

Modes:
    wal      (default) concord.storage.wal.WAL in this process: encode, one write, one
             fdatasync per batch.
    process  the log writer process over ipc: LogWriterClient.persist() -> Persisted,
             one request per batch, waiting for each ack (adds the ipc round trip).

With --snapshot-keys N it instead measures what producing a snapshot costs the raft
worker: a concord.kv state machine with N keys is snapshotted the way the worker does it
(concord.node.snapshot_fork: serialized in a forked child), and the bench reports how
long the caller was blocked starting it (the fork) and how long the child took, while
the caller keeps putting keys (its apply latencies next to a baseline).

Usage:
    python bench/wal_bench.py [--dir DIR] [--seconds 2] [--mode wal|process]
    python bench/wal_bench.py [--dir DIR] --snapshot-keys 200000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import sys
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from concord.raft.messages import Entry
from concord.raft.state import HardState
from concord.storage.wal import WAL, WalOptions
from concord.storage.walread import read_wal

BATCH_SIZES = (1, 10, 100, 1000)
ENTRY_BYTES = 128


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RawSync:
    """write(4 KiB) + fdatasync appended to one file: the disk's own cost of one sync."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "raw.bin"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.block = os.urandom(4096)

    def once(self, nbytes: int = 4096) -> float:
        block = self.block if nbytes == 4096 else os.urandom(nbytes)
        t0 = time.perf_counter()
        os.write(self.fd, block)
        os.fdatasync(self.fd)
        return time.perf_counter() - t0

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


def make_batch(first: int, size: int) -> list[Entry]:
    payload = os.urandom(ENTRY_BYTES)
    return [Entry(1, i, data=payload, timestamp_ms=i) for i in range(first, first + size)]


class WalTarget:
    """One batch = append_entries + hard state + flush (one write, one fdatasync), in process."""

    def __init__(self, folder: Path, size: int) -> None:
        self.dir = folder / f"wal-{size}"
        self.wal = WAL(self.dir, WalOptions(segment_bytes=64 << 20), read_wal(self.dir))

    def once(self, batch: list[Entry]) -> float:
        t0 = time.perf_counter()
        self.wal.append_entries(batch)
        self.wal.set_hard_state(HardState(1, None, batch[0].index - 1))
        self.wal.flush()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.wal.close()
        shutil.rmtree(self.dir)


class ProcessTarget:
    """One batch = LogWriterClient.persist(...) until Persisted(number) comes back (ipc)."""

    def __init__(self, folder: Path, size: int) -> None:
        import zmq

        from concord.node import log_writer as lw

        self.lw = lw
        self.data_dir = folder / f"node-{size}"
        self.sock_dir = Path(tempfile.mkdtemp(prefix="concord-bench-"))
        endpoint = f"ipc://{self.sock_dir}/w.sock"
        self.proc = get_context("spawn").Process(
            target=lw.run_log_writer, args=(str(self.data_dir), endpoint, lw.WriterSettings())
        )
        self.proc.start()
        self.ctx = zmq.Context()
        self.client = lw.LogWriterClient(endpoint, self.ctx)
        self.client.handshake(30)
        self.number = 0

    def once(self, batch: list[Entry]) -> float:
        self.number += 1
        t0 = time.perf_counter()
        self.client.persist(self.number, batch, HardState(1, None, batch[0].index - 1), None, True)
        acked = 0
        while acked < self.number:
            for event in self.client.recv(timeout_ms=10_000):
                if isinstance(event, self.lw.Persisted):
                    acked = event.number
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.client.stop()
            self.proc.join(10)
        finally:
            self.client.close()
            self.ctx.term()
            if self.proc.is_alive() and self.proc.pid is not None:
                os.kill(self.proc.pid, 9)
                self.proc.join(10)
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.sock_dir, ignore_errors=True)


def batch_bytes(batch: list[Entry]) -> int:
    """Bytes one batch adds to the WAL (entries record + hard state record)."""
    from concord.storage.format import RecordType, encode_entries_payload, encode_hard_state_payload, encode_record

    hs = HardState(1, None, batch[0].index - 1)
    return len(encode_record(RecordType.ENTRIES, encode_entries_payload(batch))) + len(
        encode_record(RecordType.HARD_STATE, encode_hard_state_payload(hs))
    )


def measure(folder: Path, size: int, seconds: float, mode: str) -> tuple[list[float], list[float], list[float]]:
    """
    Alternate one raw 4 KiB sync, one raw sync of the batch's byte size, and one batch, so
    all three see the same disk conditions.
    """
    target: WalTarget | ProcessTarget = WalTarget(folder, size) if mode == "wal" else ProcessTarget(folder, size)
    raw = RawSync(folder)
    raw_samples: list[float] = []
    same_samples: list[float] = []
    samples: list[float] = []
    same_bytes = batch_bytes(make_batch(1, size))
    next_index = 1
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline or len(samples) < 20:
            batch = make_batch(next_index, size)  # built outside the timing: the raft worker's job
            raw_samples.append(raw.once())
            same_samples.append(raw.once(same_bytes))
            samples.append(target.once(batch))
            next_index += size
    finally:
        raw.close()
        target.close()
    return raw_samples, same_samples, samples


def snapshot_stall(folder: Path, keys: int) -> dict[str, float]:
    """Caller-blocking time to fork a snapshot of a `keys`-key kv machine, and put latencies."""
    from concord.kv import encode_command
    from concord.kv.machine import KvStateMachine
    from concord.node.snapshot_fork import SnapshotWriter
    from concord.raft.messages import ConfState, SnapshotMeta

    machine = KvStateMachine()
    value = "v" * 100
    for i in range(1, keys + 1):
        machine.apply(i, i, encode_command("put", {"key": f"key-{i:09d}", "value": value}))
    data_dir = folder / "snap"
    writer = SnapshotWriter(data_dir, machine.snapshot, machine.state_hash)
    next_index = keys + 1

    def put() -> float:
        nonlocal next_index
        t0 = time.perf_counter()
        machine.apply(next_index, next_index, encode_command("put", {"key": f"key-{next_index:09d}", "value": value}))
        next_index += 1
        return time.perf_counter() - t0

    import psutil

    try:
        baseline = [put() for _ in range(1000)]
        parent_rss = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        job = writer.start(SnapshotMeta(next_index - 1, 1, ConfState()), 0)
        start_s = time.perf_counter() - t0
        child = psutil.Process(job.pid)
        during = []
        t_snap = time.perf_counter()
        outcome = None
        peak_uss = 0
        next_sample = 0.0
        while outcome is None:
            during.append(put())
            if time.perf_counter() >= next_sample:  # the child's private (copied) pages
                next_sample = time.perf_counter() + 0.02
                try:
                    peak_uss = max(peak_uss, child.memory_full_info().uss)
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    pass
            outcome = writer.poll()
        total_s = time.perf_counter() - t_snap
        assert outcome.error is None, outcome.error
    finally:
        writer.abandon()
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "start_ms": start_s * 1e3,
        "snapshot_s": total_s,
        "base_p50_ms": statistics.median(baseline) * 1e3,
        "base_p99_ms": percentile(baseline, 0.99) * 1e3,
        "p50_ms": statistics.median(during) * 1e3,
        "p99_ms": percentile(during, 0.99) * 1e3,
        "max_ms": max(during) * 1e3,
        "persists": float(len(during)),
        "parent_rss_mb": parent_rss / 1e6,
        "child_peak_uss_mb": peak_uss / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="folder on the disk to measure (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--mode", choices=("wal", "process"), default="wal")
    parser.add_argument("--snapshot-keys", type=int, default=0, help="measure snapshot stall instead")
    args = parser.parse_args()
    if args.snapshot_keys:
        folder = Path(tempfile.mkdtemp(prefix="concord-snapbench-", dir=args.dir))
        try:
            print(f"forked snapshot of a concord.kv machine with {args.snapshot_keys} keys; put = one apply")
            print(
                f"{'caller blocked ms':>18} {'snapshot s':>11} {'puts':>9} "
                f"{'base p50/p99 ms':>16} {'during p50/p99/max ms':>22} "
                f"{'caller RSS MB':>14} {'child peak USS MB':>18}"
            )
            r = snapshot_stall(folder, args.snapshot_keys)
            print(
                f"{r['start_ms']:>18.1f} {r['snapshot_s']:>11.2f} {r['persists']:>9.0f} "
                f"{r['base_p50_ms']:>7.2f}/{r['base_p99_ms']:<8.2f} "
                f"{r['p50_ms']:>7.2f}/{r['p99_ms']:.2f}/{r['max_ms']:.2f} "
                f"{r['parent_rss_mb']:>14.1f} {r['child_peak_uss_mb']:>18.1f}"
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder = Path(tempfile.mkdtemp(prefix="concord-walbench-", dir=args.dir))
    try:
        results = [(size, *measure(folder, size, args.seconds, args.mode)) for size in BATCH_SIZES]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"disk folder: {args.dir or tempfile.gettempdir()}  mode: {args.mode}  entry: {ENTRY_BYTES} B  fsync: on")
    print("raw = write(4 KiB) + fdatasync; raw= = write(as many bytes as the batch) + fdatasync;")
    print("all three interleaved one-for-one within each row")
    print(
        f"{'batch':>6} {'batches/s':>10} {'appends/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'raw/s':>7} {'raw p50':>8} {'raw p99':>8} {'raw= p50':>9} {'batch/raw':>10} {'batch/raw=':>11} "
        f"{'paired':>7} {'paired=':>8}"
    )
    for size, raw, same, samples in results:
        rate = len(samples) / sum(samples)
        p50 = statistics.median(samples)
        raw_p50 = statistics.median(raw)
        same_p50 = statistics.median(same)
        print(
            f"{size:>6} {rate:>10.0f} {rate * size:>11.0f} {p50 * 1e3:>8.3f} {percentile(samples, 0.99) * 1e3:>8.3f} "
            f"{len(raw) / sum(raw):>7.0f} {raw_p50 * 1e3:>8.3f} {percentile(raw, 0.99) * 1e3:>8.3f} "
            f"{same_p50 * 1e3:>9.3f} {p50 / raw_p50:>10.3f} {p50 / same_p50:>11.3f} "
            f"{statistics.median(b / r for b, r in zip(samples, raw)):>7.3f} "
            f"{statistics.median(b / r for b, r in zip(samples, same)):>8.3f}"
        )
    print("batch/raw = p50 / p50; paired = median over the interleaved pairs of batch time / raw time")


if __name__ == "__main__":
    main()
