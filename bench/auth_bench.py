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
p99, the server's CPU per request (user + system of every process of the cluster's nodes,
psutil, over the phase, less what the cluster burns idle (ticks, heartbeats), measured
for 2 s first; steadier than throughput against the machine's other load),
and the on/off ratios per row. First, `micro()`: the checks alone in this process (wall
and CPU per call). About 2 minutes with `--seconds 3 --rounds 3` (2 * 4 * 2 * 3 phases
of 3 s, two cluster start-ups, the micro part). Figures in bench/NOTES.md ("Auth cost").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from tests.integration.cluster import Cluster

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


def _best(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per call of `fn`, best of 5 (load only ever adds time)."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall = min(wall, (time.perf_counter() - t0) / n * 1e6)
        cpu = min(cpu, (time.process_time() - c0) / n * 1e6)
    return wall, cpu


def micro(n: int = 20000) -> None:
    """CPU per request of the checks alone, in this process (no network, no load noise)."""
    from concord.auth.tokens import hash_secret, new_token, parse_token  # noqa: PLC0415
    from concord.kv import KvStateMachine, encode_command  # noqa: PLC0415
    from concord.net.wire import OPS, decode_request, encode_request  # noqa: PLC0415
    from concord.node.auth import admit  # noqa: PLC0415

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
        c0 = time.process_time()
        for i, data in enumerate(cmds):
            sm.apply(index + i, 2, data)
        return (time.process_time() - c0) / n * 1e6

    sm = KvStateMachine()
    _, admin = new_token()
    sm.apply(1, 1, encode_command("auth_bootstrap", {"id": admin.token_id, "hash": admin.secret_hash}))
    sm.apply(2, 1, encode_command("tenant_put", {"name": "t", "max_keys": 0, "max_bytes": 0,
                                                 "write_rate": 0.0, "read_rate": 0.0}, auth=admin))
    sm.apply(3, 1, encode_command("role_put", {"name": "flags", "rules": [
        ["f:*", "write", "allow"], ["f:secret", "read", "deny"], ["g:*", "read", "allow"]]}, auth=admin))
    tokens = {}
    for index, (who, role, tenant) in enumerate((("editor", "editor", None), ("viewer", "viewer", None),
                                                 ("tenant editor", "editor", "t"),
                                                 ("custom role", "flags", None)), start=4):
        token, cred = new_token()
        sm.apply(index, 1, encode_command("token_put", {
            "id": cred.token_id, "hash": cred.secret_hash, "role": role, "tenant": tenant,
            "ttl_ms": 0, "description": ""}, auth=admin))
        tokens[who] = token
    rows = [("sha256 of a 64-hex-digit secret", _best(lambda: hash_secret("ab" * 32), n)),
            ("parse_token (format + sha256)", _best(lambda: parse_token(tokens["editor"]), n))]
    for who, token in tokens.items():
        key = "f:k" if who == "custom role" else "k1"
        get = decode_request(encode_request("get", 1, key=key, token=token))
        rows.append((f"admit get [{who}]",
                     _best(lambda: admit(sm.auth, True, get, OPS["get"], 5), n)))
    put = decode_request(encode_request("put", 1, key="k1", value=VALUE, token=tokens["editor"]))
    rows.append(("admit put [editor]", _best(lambda: admit(sm.auth, True, put, OPS["put"], 5), n)))
    print(f"{'in-process check':<36} {'wall us':>8} {'CPU us':>7}   (best of 5, {n} calls)")
    for name, (wall, cpu) in rows:
        print(f"{name:<36} {wall:8.2f} {cpu:7.2f}")
    offs, ons = [], []
    for _ in range(3):  # alternating: the machine's other load hits both alike
        offs.append(apply_cost(False))
        ons.append(apply_cost(True))
    off, on = min(offs), min(ons)
    print(f"apply of a session put, CPU: auth off {off:.2f} us, on {on:.2f} us "
          f"(+{on - off:.2f} us, best of 3)")


def _idle_cpu_per_s(c: Cluster, seconds: float) -> float:
    """CPU seconds per second `c` burns with no request (ticks, heartbeats, polls)."""
    before, t0 = _tree_cpu_s(c), time.perf_counter()
    time.sleep(seconds)
    return (_tree_cpu_s(c) - before) / (time.perf_counter() - t0)


def _tree_cpu_s(c: Cluster) -> float:
    """CPU seconds (user + system) used so far by every process of `c`'s nodes."""
    import psutil  # noqa: PLC0415

    total = 0.0
    for node in c.nodes.values():
        if node.proc is None:
            continue
        try:
            root = psutil.Process(node.proc.pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue  # a process that ended between the listing and the reading
    return total


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
    cpu_s: dict[tuple[str, str, str], float] = {}
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
            idle = {name: _idle_cpu_per_s(c, 2.0) for name, c in clusters.items()}
            for r in range(args.rounds):
                for mode, run in MODES.items():
                    for phase, write in (("put", True), ("get", False)):
                        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
                        for name in order:
                            before, t0 = _tree_cpu_s(clusters[name]), time.perf_counter()
                            lat = run(endpoints[name], tokens[name], write, args.seconds)
                            used = (_tree_cpu_s(clusters[name]) - before
                                    - idle[name] * (time.perf_counter() - t0))
                            lats.setdefault((mode, phase, name), []).extend(lat)
                            cpu_s[(mode, phase, name)] = cpu_s.get((mode, phase, name), 0.0) + used
        finally:
            for c in clusters.values():
                c.stop()
    report(lats, cpu_s, args.seconds * args.rounds, args.nodes)


def report(lats: dict[tuple[str, str, str], list[float]], cpu_s: dict[tuple[str, str, str], float],
           total_s: float, nodes: int) -> None:
    """The table: throughput, latency and server CPU per request, auth on against off."""
    print(f"\n{nodes}-node clusters; server CPU = every process of every node (psutil), "
          f"per request, less the cluster's idle CPU over the phase")
    print(f"{'clients':>12} {'op':>4} {'auth':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'on/off':>7} {'CPU us/req':>10} {'on/off':>7}")
    print("-" * 78)
    for mode in MODES:
        for phase in ("put", "get"):
            rates: dict[str, float] = {}
            cpus: dict[str, float] = {}
            for name in ("off", "on"):
                lat = lats[(mode, phase, name)]
                rates[name] = len(lat) / total_s
                cpus[name] = cpu_s[(mode, phase, name)] / max(1, len(lat)) * 1e6
                ratio = f"{rates['on'] / rates['off']:.3f}" if name == "on" else ""
                cpu_ratio = f"{cpus['on'] / cpus['off']:.3f}" if name == "on" else ""
                print(f"{mode:>12} {phase:>4} {name:>4} {rates[name]:8.0f} {_pct(lat, 0.5):7.2f} "
                      f"{_pct(lat, 0.99):7.2f} {ratio:>7} {cpus[name]:10.0f} {cpu_ratio:>7}"
                      f"  mean {statistics.fmean(lat) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
