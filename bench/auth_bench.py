"""
The cost of auth: the same reads and writes against a node with auth off and a node with
auth on (an editor token on every request), at 1 and 128 clients, in one run.

    PYTHONPATH=$PWD nice -n 10 python3 bench/auth_bench.py [--nodes 1] [--seconds 3] [--rounds 2]

Both clusters are up for the whole run; every round measures each (mode, phase) on both,
alternating which goes first, so the machine's other load hits them alike. Modes: one
sync `Client` with one request at a time ("1 client"), and one `aio.Client` with 128
requests in flight ("128 clients"). Phases: `put` of its own keys (64-byte values),
then `get` at `leader` consistency over the wire (`shm=False`: with a token the client
never reads shared memory). Printed: requests per second (summed over rounds), p50 and
p99, and the ratio on/off per row. Figures in bench/NOTES.md ("Auth cost").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

VALUE = "v" * 64


def _pct(lat: list[float], q: float) -> float:
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else float("nan")


def one_client(endpoints: list[str], token: str | None, write: bool, seconds: float) -> list[float]:
    from concord.client import Client  # noqa: PLC0415

    lat: list[float] = []
    with Client(endpoints, shm=False, timeout_s=30.0, token=token) as client:
        stop_at = time.perf_counter() + seconds
        n = 0
        while (t0 := time.perf_counter()) < stop_at:
            key = f"one:{n % 200}"
            if write:
                client.put(key, VALUE)
            elif VALUE != client.get(key, default=VALUE):
                raise SystemExit(f"wrong value for {key}")
            lat.append(time.perf_counter() - t0)
            n += 1
    return lat


def many_clients(endpoints: list[str], token: str | None, write: bool, seconds: float) -> list[float]:
    from concord import aio  # noqa: PLC0415

    async def main() -> list[float]:
        lat: list[float] = []
        async with aio.Client(endpoints, timeout_s=30.0, token=token) as client:
            stop_at = time.perf_counter() + seconds

            async def worker(i: int) -> None:
                n = 0
                while (t0 := time.perf_counter()) < stop_at:
                    key = f"many:{i}:{n % 50}"
                    if write:
                        await client.put(key, VALUE)
                    elif VALUE != await client.get(key, default=VALUE):
                        raise SystemExit(f"wrong value for {key}")
                    lat.append(time.perf_counter() - t0)
                    n += 1

            await asyncio.gather(*(worker(i) for i in range(128)))
        return lat

    return asyncio.run(main())


def micro(n: int = 20000) -> None:
    """CPU per request of the checks alone, in this process (no network, no load noise)."""
    from concord.node.auth import admit  # noqa: PLC0415
    from concord.auth.tokens import new_token  # noqa: PLC0415
    from concord.kv import KvStateMachine, encode_command  # noqa: PLC0415
    from concord.net.wire import OPS, decode_request, encode_request  # noqa: PLC0415

    def apply_cost(auth: bool) -> float:
        sm = KvStateMachine()
        _, admin = new_token()
        index = 1
        cred = None
        if auth:
            sm.apply(index, 1, encode_command("auth_bootstrap", {"id": admin.token_id,
                                                                 "hash": admin.secret_hash}))
            index += 1
            cred = admin
        cmds = [encode_command("put", {"key": f"k{i % 1000}", "value": VALUE}, auth=cred,
                               client_id="c", seq=i) for i in range(n)]
        t0 = time.perf_counter()
        for i, data in enumerate(cmds):
            sm.apply(index + i, 2, data)
        return (time.perf_counter() - t0) / n * 1e6

    token, cred = new_token()
    sm = KvStateMachine()
    sm.apply(1, 1, encode_command("auth_bootstrap", {"id": cred.token_id, "hash": cred.secret_hash}))
    request = decode_request(encode_request("get", 1, key="k1", token=token))
    admit_runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            admit(sm.auth, True, request, OPS["get"], 5)
        admit_runs.append((time.perf_counter() - t0) / n * 1e6)
    admit_us = min(admit_runs)
    # Best of 3, alternating: the machine's other load only ever adds time.
    offs, ons = [], []
    for _ in range(3):
        offs.append(apply_cost(False))
        ons.append(apply_cost(True))
    off, on = min(offs), min(ons)
    print(f"admit (token parse + SHA-256 + role check) per request: {admit_us:.2f} us (best of 3)")
    print(f"apply of a session put: auth off {off:.2f} us, on {on:.2f} us (+{on - off:.2f} us, "
          f"best of 3)")


MODES: dict[str, Callable[[list[str], str | None, bool, float], list[float]]] = {
    "1 client": one_client,
    "128 clients": many_clients,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--micro", action="store_true", help="only the in-process check costs")
    args = parser.parse_args()
    micro()
    if args.micro:
        return

    from concord.auth.tokens import new_token  # noqa: PLC0415
    from concord.client import Client  # noqa: PLC0415
    from tests.integration.cluster import Cluster  # noqa: PLC0415

    lats: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as tmp:
        admin, _ = new_token()
        token_file = Path(tmp) / "admin.token"
        token_file.write_text(admin)
        os.chmod(token_file, 0o600)
        off = Cluster(Path(tmp) / "off", args.nodes, logging={"level": "WARNING"})
        on = Cluster(Path(tmp) / "on", args.nodes, logging={"level": "WARNING"},
                     auth={"enabled": True, "bootstrap_token_file": str(token_file)})
        on.token = admin
        clusters = {"off": off, "on": on}
        try:
            for c in clusters.values():
                c.tmp_path.mkdir(parents=True)
                c.start()
            endpoints = {name: [c.nodes[c.wait_leader()].client] for name, c in clusters.items()}
            with Client(endpoints["on"], shm=False, token=admin) as a:
                editor = str(a.token_create("editor")["token"])
            tokens = {"off": None, "on": editor}
            for r in range(args.rounds):
                for mode, run in MODES.items():
                    for phase, write in (("put", True), ("get", False)):
                        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
                        for name in order:
                            lat = run(endpoints[name], tokens[name], write, args.seconds)
                            lats.setdefault((mode, phase, name), []).extend(lat)
        finally:
            for c in clusters.values():
                c.stop()
    total_s = args.seconds * args.rounds
    print(f"{'clients':>12} {'op':>4} {'auth':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'on/off':>7}")
    print("-" * 60)
    for mode in MODES:
        for phase in ("put", "get"):
            rates = {}
            for name in ("off", "on"):
                lat = lats[(mode, phase, name)]
                rates[name] = len(lat) / total_s
                ratio = f"{rates['on'] / rates['off']:.3f}" if name == "on" else ""
                print(f"{mode:>12} {phase:>4} {name:>4} {rates[name]:8.0f} {_pct(lat, 0.5):7.2f} "
                      f"{_pct(lat, 0.99):7.2f} {ratio:>7}  mean {statistics.fmean(lat) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
