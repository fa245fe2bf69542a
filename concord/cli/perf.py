"""
`concord check perf`: a short write load on the cluster and a verdict (etcdctl's check
perf): `clients` threads, each with its own Client, put 256-byte values under a scratch
prefix at a fixed total rate for `duration` seconds; PASS when the cluster kept up with
the rate (>= 90 %) and the slowest 1 % of writes stayed under the latency bound. The
scratch keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from concord.cli.main import EXIT_CHECK_FAILED, Context, positive_float
from concord.cli.output import Output, progressbar

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["LOADS", "register_check"]


@dataclass(frozen=True, slots=True)
class Load:
    clients: int
    writes_per_s: int
    p99_bound_s: float


LOADS = {
    "s": Load(clients=4, writes_per_s=200, p99_bound_s=0.5),
    "m": Load(clients=16, writes_per_s=1000, p99_bound_s=0.5),
    "l": Load(clients=64, writes_per_s=5000, p99_bound_s=1.0),
}
VALUE = "x" * 256


def _writer(ctx: Context, prefix: str, rate: float, stop_at: float,
            latencies: list[float], errors: list[str]) -> None:
    from concord.errors import ConcordError  # noqa: PLC0415

    client = ctx.new_client()
    interval = 1.0 / rate
    next_at = time.monotonic()
    n = 0
    try:
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            if now < next_at:
                time.sleep(min(next_at - now, stop_at - now))
                continue
            next_at += interval
            started = time.monotonic()
            try:
                client.put(f"{prefix}{threading.get_ident()}/{n}", VALUE)
            except ConcordError as exc:
                errors.append(str(exc))
                continue
            latencies.append(time.monotonic() - started)
            n += 1
    finally:
        client.close()


def cmd_perf(ctx: Context, args: argparse.Namespace) -> Output:
    load = LOADS[args.load]
    prefix = f"{args.prefix}{int(time.time() * 1000)}/"
    latencies: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    stop_at = started + args.duration
    threads = [threading.Thread(target=_writer, daemon=True,
                                args=(ctx, prefix, load.writes_per_s / load.clients, stop_at,
                                      latencies, errors))
               for _ in range(load.clients)]
    for thread in threads:
        thread.start()
    with progressbar(f"check perf: load {args.load}, {args.duration:g} s", args.duration,
                     in_bytes=False) as bar:
        done = 0.0
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.25)
            elapsed = min(args.duration, time.monotonic() - started)
            bar.advance(elapsed - done)
            done = elapsed
    elapsed = time.monotonic() - started
    ctx.client.call("delete_where", {"prefix": prefix})
    ordered = sorted(latencies)
    throughput = len(ordered) / elapsed if elapsed > 0 else 0.0
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("inf")
    ok_rate = throughput >= 0.9 * load.writes_per_s
    ok_latency = p99 <= load.p99_bound_s
    ok_errors = not errors
    rows: list[dict[str, object]] = [
        {"check": "throughput", "result": "PASS" if ok_rate else "FAIL",
         "detail": f"{throughput:.0f} writes/s (target {load.writes_per_s})"},
        {"check": "p99 latency", "result": "PASS" if ok_latency else "FAIL",
         "detail": f"{p99 * 1000:.1f} ms (bound {load.p99_bound_s * 1000:.0f} ms)"},
        {"check": "errors", "result": "PASS" if ok_errors else "FAIL",
         "detail": f"{len(errors)}" + (f" (first: {errors[0]})" if errors else "")},
    ]
    verdict = ok_rate and ok_latency and ok_errors
    data = {"load": args.load, "duration_s": round(elapsed, 3), "writes": len(ordered),
            "writes_per_s": round(throughput, 1), "p99_ms": round(p99 * 1000, 2) if ordered else None,
            "errors": len(errors), "verdict": "PASS" if verdict else "FAIL", "checks": rows}
    return Output(("check", "result", "detail"), rows, data=data,
                  note=f"verdict: {'PASS' if verdict else 'FAIL'}",
                  exit_code=0 if verdict else EXIT_CHECK_FAILED)


def register_check(checks: Subparsers) -> None:
    """`concord check perf` (under the `check` command)."""
    p = checks.add_parser("perf", help="a short write load and a PASS/FAIL verdict")
    p.add_argument("--load", choices=tuple(LOADS), default="s",
                   help="s: 4 clients 200 w/s; m: 16 clients 1000 w/s; l: 64 clients 5000 w/s")
    p.add_argument("--duration", type=positive_float, default=10.0, help="seconds (default 10)")
    p.add_argument("--prefix", default="__concord_perf/", help="scratch key prefix (deleted after)")
    p.set_defaults(handler=cmd_perf)
