"""
HTTP GET and PUT: Concord's gateway (`GET`/`PUT /api/v1/kv/{key}`, JSON) against etcd's
gRPC-JSON gateway (`POST /v3/kv/range`, `/v3/kv/put`, base64 in JSON), both 3-member
clusters on this host with the same Raft timing and fsync (bench/systems.py), started in
the same run. The load is the same loop for both (bench/drivers.py run_http: closed-loop
clients, each one keep-alive http.client connection to the LEADER's HTTP endpoint, in
spawned load processes), at 1 and 64 clients. GETs are Concord's default `leader` reads
and etcd's default (linearizable) ranges of existing keys; PUTs are 64-byte values.

    PYTHONPATH=$PWD nice -n 10 python3 -m bench.http_bench [--seconds 5] [--keys 1000]

Prints throughput and p50/p99 per system, op and client count, and the ratios
concord/etcd. Figures and the command: bench/NOTES.md "HTTP gateway".
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.drivers import LoadSpec
from bench.load import LoadSummary, run_load
from bench.procs import Procs, free_ports
from bench.systems import Concord, Etcd, Member


class ConcordHttp(Concord):
    """The Concord cluster of bench/systems.py with the gateway on (a fixed port per member)."""

    name = "concord-http"

    def start(self, wait_leader: bool = True) -> None:
        if not self.members:
            for i in range(3):
                self.members.append(Member(f"n{i + 1}", free_ports(4), self.workdir / f"n{i + 1}"))
        super().start(wait_leader)

    def _config(self, m: Member) -> str:
        return super()._config(m) + f"\n[http]\nenabled = true\nport = {m.ports[3]}\n"

    def http_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.members[index].ports[3]}"


def measure(system: str, url: str, op: str, clients: int, seconds: float, keys: int) -> LoadSummary:
    spec = LoadSpec("http", (url,), op, clients, seconds, 10**9, keys, 0, api=system)
    return run_load(spec, clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--clients", default="1,64")
    args = parser.parse_args()
    counts = [int(x) for x in args.clients.split(",")]
    rows: dict[tuple[str, str, int], LoadSummary] = {}
    with Procs() as procs, tempfile.TemporaryDirectory(prefix="concord-http-bench-") as tmp:
        concord, etcd = ConcordHttp(procs, Path(tmp)), Etcd(procs, Path(tmp))
        try:
            concord.start()
            etcd.start()
            urls = {"concord": concord.http_url(concord.leader_index()),
                    "etcd": etcd.members[etcd.leader_index()].endpoint}
            concord.load_keys(args.keys)
            etcd.load_keys(args.keys)
            for op in ("put", "get"):
                for clients in counts:
                    for system in ("concord", "etcd"):  # NB: alternated, so load drift hits both
                        rows[(system, op, clients)] = measure(
                            system, urls[system], op, clients, args.seconds, args.keys)
        finally:
            concord.stop()
            etcd.stop()
    print(f"{'system':>8} {'op':>4} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for (system, op, clients), s in rows.items():
        print(f"{system:>8} {op:>4} {clients:>7} {s.ops_per_s:>8.0f} {s.p50_us / 1000:>7.2f} "
              f"{s.p99_us / 1000:>7.2f} {s.errors:>6}")
    print("\nconcord/etcd ratios (throughput: >1 is faster; p50: <1 is faster)")
    for op in ("put", "get"):
        for clients in counts:
            c, e = rows[("concord", op, clients)], rows[("etcd", op, clients)]
            print(f"  {op} x{clients}: throughput {c.ops_per_s / e.ops_per_s:.2f}x, "
                  f"p50 {c.p50_us / e.p50_us:.2f}x")


if __name__ == "__main__":
    main()
