"""
Cost of the Prometheus metrics (issue 20): one 3-node Concord cluster, restarted (same
ports, same data) with `[metrics] enabled = true` (every node scraped once a second while
measured, 15x Prometheus's usual rate) or false, at 1 and 128 clients, `put` and
`get:leader` over the wire (bench/drivers.py), in one run. (A first version ran two
clusters side by side, the metered one started second: it was faster in all four cells,
ratios 1.07-1.35, per-round 0.84-2.69, i.e. it measured the two clusters and the shared
machine, not the metrics.)

    PYTHONPATH=$PWD nice -n 10 python3 bench/metrics_cost.py [--seconds 5]

Each cell runs `--rounds` rounds of off, on, on, off (a restart at each switch; ABBA, so a drift of the shared
machine's load hits both alike) and compares the summed throughput: ratio = on / off
(1.00 = no cost); the per-round ratios show the noise. First, `micro()` prints the CPU
per call of each hot-path hook with metrics off and on (best of 5 repeats).

Measured 2026-12-07 on the shared 2-core machine (other helpers' test runs going on):
see docs/observability.md ("Cost") for the figures of the last run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from bench.drivers import LoadSpec
from bench.load import LoadSummary, run_load
from bench.procs import Procs
from bench.systems import Concord, Member

KEYS = 1000


class _Switchable(Concord):
    """Concord whose configs carry `[metrics] enabled = self.metrics` on a fixed free port."""

    def __init__(self, procs: Procs, workdir: Path) -> None:
        super().__init__(procs, workdir)
        self.metrics = False
        self.metrics_ports: dict[str, int] = {}

    def start(self, wait_leader: bool = True) -> None:
        if not self.members:
            # NB: below the kernel's ephemeral range (ip_local_port_range 32768-60999 here):
            # a port the OS handed out (free_ports) can be taken by another program's
            # connection while the node restarts; these are never handed out by the OS.
            ports = _ports_below_ephemeral(12)
            for i in range(3):
                self.members.append(Member(f"n{i + 1}", ports[4 * i:4 * i + 3],
                                           self.workdir / f"n{i + 1}"))
                self.metrics_ports[f"n{i + 1}"] = ports[4 * i + 3]
        super().start(wait_leader)

    def _config(self, m: Member) -> str:
        port = self.metrics_ports[m.id]
        on = "true" if self.metrics else "false"
        return f"{super()._config(m)}\n[metrics]\nenabled = {on}\nport = {port}\n"

    def restart(self, metrics: bool) -> None:
        """Stop every node; start them again (same ports and data) with metrics on or off."""
        self.stop()
        self.metrics = metrics
        self.start()

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.metrics_ports.values()]


def _ports_below_ephemeral(count: int) -> list[int]:
    """`count` distinct ports in 20000..31999 that are free to bind now."""
    import random
    import socket

    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(20000, 32000)
        if port in chosen:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


class _Scraper:
    """GET every URL once a second in a thread while a measurement runs."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stop = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for url in self.urls:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                self.scrapes += 1

    def __enter__(self) -> _Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _measure(system: Concord, op: str, clients: int, seconds: float,
             urls: list[str] | None) -> LoadSummary:
    spec = LoadSpec(system.name, system.endpoints_leader_first(), op, clients, seconds,
                    10**9, KEYS, 0)
    if urls is None:
        return run_load(spec, clients)
    with _Scraper(urls):
        return run_load(spec, clients)


def _rate(runs: list[LoadSummary]) -> float:
    return sum(r.ok for r in runs) / sum(r.elapsed_s for r in runs)


def micro(n: int = 200_000) -> None:
    """
    Per-call CPU of each hot-path hook, in this process, recorder set up (metrics on) and
    not (off): what one request, one raft message or one group commit pays.
    """
    import timeit

    from concord.ids import NodeId
    from concord.metrics import node as hooks
    from concord.metrics.recorder import RECORDER
    from concord.node.raft_metrics import RaftMetrics
    from concord.net.wire import ok_reply
    from concord.raft.messages import Message, MessageType
    from concord import telemetry

    reply = ok_reply(12345, {"revision": 77})
    msg = Message(MessageType.APPEND, NodeId("n2"), NodeId("n1"), 3)

    class _Worker:  # what RaftMetrics reads at construction
        class driver:  # noqa: N801
            commit = applied_index = 0

    def cases() -> dict[str, object]:
        door, reader = hooks.DoorMetrics(), hooks.ReaderMetrics()
        raft = RaftMetrics.__new__(RaftMetrics)
        raft.on = RECORDER.enabled
        raft._heartbeats = {}

        def raft_round() -> None:
            raft.on_send(msg)
            raft.on_message(msg)

        return {
            "door: one request (result peek + histogram + counter)":
                lambda: door.on_done("put", "none", hooks.reply_result(reply), 0.001, None),
            "raft: one message sent + one received": raft_round,
            "reader: one loop turn": lambda: reader.on_round(1, 0),
            "writer: one WAL group commit": lambda: hooks.wal_flushed(0.0001, 0.002, 512, 3),
            "client: one call, no handler attached":
                lambda: telemetry.listening(telemetry.CLIENT_CALL),
        }

    def best_us(f: object) -> float:  # the floor of 5 repeats: the shared machine's noise is additive
        return min(timeit.repeat(f, number=n // 5, repeat=5)) / (n // 5) * 1e6  # type: ignore[arg-type]

    off = {k: best_us(f) for k, f in cases().items()}
    with tempfile.TemporaryDirectory(prefix="concord-metrics-") as folder:
        RECORDER.setup("door", Path(folder))
        on = {k: best_us(f) for k, f in cases().items()}
        RECORDER.flush()
    print(f"{'hook (best of 5)':<58} {'off us':>7} {'on us':>7}")
    for k in off:
        print(f"{k:<58} {off[k]:>7.3f} {on[k]:>7.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="off/on/on/off rounds per cell")
    parser.add_argument("--micro-only", action="store_true", help="only the per-hook costs")
    args = parser.parse_args(argv)
    micro()
    if args.micro_only:
        return 0
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp, Procs() as procs:
        system = _Switchable(procs, Path(tmp))
        try:
            system.start()
            system.load_keys(KEYS)
            print(f"{'op':>10} {'clients':>7} {'off ops/s':>10} {'on ops/s':>10} {'ratio':>6} "
                  f"{'off p50 ms':>10} {'on p50 ms':>10} {'per-round ratios':>16}")
            for op in ("put", "get:leader"):
                for clients in (1, 128):
                    runs: dict[bool, list[LoadSummary]] = {False: [], True: []}
                    pairs: list[float] = []
                    for _ in range(args.rounds):
                        got: dict[bool, list[LoadSummary]] = {False: [], True: []}
                        for metrics in (False, True, True, False):
                            if metrics != system.metrics:
                                system.restart(metrics)
                            got[metrics].append(_measure(system, op, clients, args.seconds,
                                                         system.urls() if metrics else None))
                        pairs.append(_rate(got[True]) / _rate(got[False]))
                        for k in got:
                            runs[k] += got[k]
                    rate = {k: _rate(v) for k, v in runs.items()}
                    p50 = {k: statistics.median(r.p50_us for r in v) / 1000 for k, v in runs.items()}
                    print(f"{op:>10} {clients:>7} {rate[False]:>10.0f} {rate[True]:>10.0f} "
                          f"{rate[True] / rate[False]:>6.3f} {p50[False]:>10.2f} {p50[True]:>10.2f} "
                          f"{min(pairs):>6.3f}..{max(pairs):.3f}", flush=True)
        finally:
            system.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
