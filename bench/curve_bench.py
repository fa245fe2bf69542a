"""
The cost of CURVE (docs/encryption.md): writes at 1 and 64 clients on a 3-node cluster
(fsync on, 64-byte values, the bench/ load generator), CURVE off and on (peer links and
the client endpoint), in one run.

    python -m bench.curve_bench [--duration 10] [--rounds 2]
    python -m bench.curve_bench --micro 5000    # the transport alone (one process)

Each round starts a fresh cluster per mode (off, on, interleaved) and measures 1 then 64
closed-loop clients for `--duration` seconds. Prints one line per measurement and the
median ratios (on / off) over the runs without errors (the load generator does not follow
a leader change: a run during which leadership moved is shown, and left out).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.drivers import LoadSpec
from bench.load import LoadSummary, run_load
from bench.procs import Procs
from bench.systems import Concord, Member

MODES = ("off", "on")
CLIENTS = (1, 64)


class CurveConcord(Concord):
    """bench.systems.Concord with [curve] on the peer links and the client endpoint."""

    def __init__(self, procs: Procs, workdir: Path) -> None:
        super().__init__(procs, workdir)
        from concord.net.curve import read_key_file, write_key_pair

        keys = self.workdir / "keys"
        peers = keys / "peers"
        peers.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            pub, _ = write_key_pair(keys, f"n{i + 1}")
            shutil.copy(pub, peers / pub.name)
        pub, secret = write_key_pair(keys, "clients")
        self.server_key = read_key_file(pub, "public")
        self.settings = {**self.settings, "curve": {
            "peer_keys_dir": str(peers), "client_secret_key_file": str(secret)}}

    def _config(self, m: Member) -> str:
        text = super()._config(m)
        return text + f'secret_key_file = "{self.workdir / "keys" / (m.id + ".key")}"\n'

    def status(self, m: Member) -> dict[str, object] | None:
        from concord.client import Client

        if m.pid is None or not m.endpoint:
            return None
        try:
            with Client(m.endpoint, server_key=self.server_key, shm=False, timeout_s=1.0,
                        retries=0) as client:
                return client.status(m.endpoint)
        except Exception:  # noqa: BLE001 - a node that does not answer has no status
            return None


def measure(system: Concord, clients: int, duration_s: float, server_key: str) -> LoadSummary:
    spec = LoadSpec("concord", system.endpoints_leader_first(), "put", clients, duration_s,
                    10_000_000, 100_000, 0, server_key=server_key)
    return run_load(spec, clients)


def micro(n: int) -> None:
    """
    The transport alone: DEALER -> ROUTER round trips over loopback TCP in one process,
    payloads of 64 B and 4 KiB, CURVE off and on interleaved; the median of 5 rounds.
    """
    import time

    import zmq

    from concord.net.curve import CurveClient, CurveServer, generate_key_pair

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server_public, server_secret = generate_key_pair()
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(5):
        for mode in MODES:
            router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
            if mode == "on":
                CurveServer(server_secret, "bench").apply(router)
                curve = CurveClient.of(server_public)
                assert curve is not None
                curve.apply(dealer)
            port = router.bind_to_random_port("tcp://127.0.0.1")
            dealer.connect(f"tcp://127.0.0.1:{port}")
            for size in (64, 4096):
                payload = b"x" * size
                for i in range(n + 200):  # the first 200: warm-up (and the handshake)
                    if i == 200:
                        t0 = time.perf_counter()
                    dealer.send(payload)
                    ident, got = router.recv_multipart()
                    router.send_multipart([ident, got])
                    dealer.recv()
                results.setdefault((mode, size), []).append((time.perf_counter() - t0) / n * 1e6)
            router.close(0)
            dealer.close(0)
    ctx.term()
    for size in (64, 4096):
        off = statistics.median(results[("off", size)])
        on = statistics.median(results[("on", size)])
        print(f"micro payload={size}B round trip off={off:.1f}us on={on:.1f}us "
              f"added={on - off:.1f}us ratio={on / off:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.curve_bench")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--micro", type=int, metavar="N", default=0,
                        help="only the transport micro-benchmark, N round trips per case")
    args = parser.parse_args()
    if args.micro:
        micro(args.micro)
        return
    rates: dict[tuple[str, int], list[float]] = {}
    p50s: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="concord-curve-bench-") as tmp, Procs() as procs:
        for r in range(args.rounds):
            for mode in MODES:
                work = Path(tmp) / f"{mode}{r}"
                work.mkdir()
                system: Concord = CurveConcord(procs, work) if mode == "on" else Concord(procs, work)
                key = getattr(system, "server_key", "")
                system.start()
                try:
                    for clients in CLIENTS:
                        s = measure(system, clients, args.duration, key)
                        if not s.errors:  # NB: a leader change mid-run fails the rest of it
                            rates.setdefault((mode, clients), []).append(s.ops_per_s)
                            p50s.setdefault((mode, clients), []).append(s.p50_us)
                        print(f"round={r} curve={mode} clients={clients} ok={s.ok} errors={s.errors} "
                              f"writes/s={s.ops_per_s:.0f} p50={s.p50_us / 1000:.2f}ms "
                              f"p99={s.p99_us / 1000:.2f}ms first_error={s.first_error!r}",
                              flush=True)
                finally:
                    system.stop()
    for clients in CLIENTS:
        if ("off", clients) not in rates or ("on", clients) not in rates:
            print(f"clients={clients}: no error-free run in one of the modes")
            continue
        off = statistics.median(rates[("off", clients)])
        on = statistics.median(rates[("on", clients)])
        p_off = statistics.median(p50s[("off", clients)])
        p_on = statistics.median(p50s[("on", clients)])
        print(f"clients={clients} writes/s off={off:.0f} on={on:.0f} ratio={on / off:.3f} "
              f"p50 off={p_off / 1000:.2f}ms on={p_on / 1000:.2f}ms")


if __name__ == "__main__":
    main()
