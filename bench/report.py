"""
`python -m bench report`: bench/out/results-<size>.json -> bench/RESULTS.md + bench/*.png.

Every figure is the median of the runs, with the spread (min..max) next to it; every
scenario gets the ratios Concord/etcd and Concord/PySyncObj (for latencies and times a
ratio below 1 is better, for throughputs above 1 is better).
"""

from __future__ import annotations

import json
import sys
import statistics
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"

#: Concord read level -> the etcd / PySyncObj level it is compared with.
PEER_LEVEL = {
    "eventual": {"etcd": "serializable", "pysyncobj": "local", "redis": "get"},
    "leader": {"etcd": "serializable", "pysyncobj": "local", "redis": "get"},
    "strong": {"etcd": "linearizable"},
}

Runs = list[dict[str, object]]


def _vals(runs: Runs, key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]  # type: ignore[arg-type]


def med(runs: Runs | None, key: str) -> float | None:
    if not runs:
        return None
    v = _vals(runs, key)
    return statistics.median(v) if v else None


def fmt(runs: Runs | None, key: str, scale: float = 1.0, digits: int = 0) -> str:
    if not runs:
        return "n/a"
    v = [x * scale for x in _vals(runs, key)]
    if not v:
        return "n/a"
    m = statistics.median(v)
    if len(v) == 1:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({min(v):,.{digits}f}..{max(v):,.{digits}f})"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def _get(res: dict[str, dict[str, dict[str, Runs]]], scenario: str, system: str, variant: str) -> Runs | None:
    return res.get(scenario, {}).get(system, {}).get(variant)


def _rt(res: dict[str, dict[str, dict[str, Runs]]], system: str, level: str, clients: int) -> Runs | None:
    """The read_throughput runs of one level at one client count."""
    return _get(res, "read_throughput", system, f"{level}@{clients}")


def goals(res: dict[str, dict[str, dict[str, Runs]]]) -> list[str]:
    """The performance issue's goals, each with its measured ratio to etcd over gRPC."""
    rows = ["| goal | Concord | etcd | ratio Concord/etcd | target | met? |", "|---|---|---|---|---|---|"]

    def row(name: str, c: float | None, e: float | None, target: float, higher: bool, unit: str) -> None:
        cs = "n/a" if c is None else f"{c:,.1f} {unit}"
        es = "n/a" if e is None else f"{e:,.1f} {unit}"
        ok = None if c is None or e is None else (c >= target * e if higher else c <= target * e)
        verdict = "n/a" if ok is None else ("yes" if ok else "**no**")
        rows.append(f"| {name} | {cs} | {es} | {ratio(c, e)} | {'≥' if higher else '≤'} {target}× | {verdict} |")

    for wk in ("64", "128"):
        w_c, w_e = _get(res, "write_throughput", "concord", wk), _get(res, "write_throughput", "etcd", wk)
        row(f"writes/s, {wk} clients", med(w_c, "ops_per_s"), med(w_e, "ops_per_s"), 1.5, True, "/s")
        row(f"server CPU per put, {wk} clients", med(w_c, "server_cpu_us_per_op"),
            med(w_e, "server_cpu_us_per_op"), 0.6, False, "µs")
    c = med(_get(res, "write_latency", "concord", "1"), "p50_us")
    e = med(_get(res, "write_latency", "etcd", "1"), "p50_us")
    row("write p50, 1 client", None if c is None else c / 1000, None if e is None else e / 1000, 0.8, False, "ms")
    for k in (1, 64, 128):
        row(f"strong reads/s vs linearizable, {k} clients", med(_rt(res, "concord", "strong", k), "ops_per_s"),
            med(_rt(res, "etcd", "linearizable", k), "ops_per_s"), 1.5, True, "/s")
    for level in ("eventual", "leader"):
        for k in (64, 128):
            c_r, e_r = _rt(res, "concord", level, k), _rt(res, "etcd", "serializable", k)
            row(f"{level} reads/s vs serializable, {k} clients", med(c_r, "ops_per_s"), med(e_r, "ops_per_s"),
                1.5, True, "/s")
            row(f"server CPU per {level} read, {k} clients", med(c_r, "server_cpu_us_per_op"),
                med(e_r, "server_cpu_us_per_op"), 0.5, False, "µs")
    shm = res.get("shm_reads", {}).get("concord", {})
    c = med(shm.get("client.get eventual"), "ops_per_s")
    k = max((int(r.get("keys", 0)) for r in shm.get("client.get eventual") or []), default=0)  # type: ignore[call-overload]
    rows.append(f"| same-host Client.get eventual, 1 process, {f'{k:,}' if k else '?'} keys | "
                f"{'n/a' if c is None else f'{c:,.0f} /s'} | no such path | n/a | ≥ 1,000,000 /s | "
                f"{'n/a' if c is None else ('yes' if c >= 1e6 else '**no**')} |")
    c = med(_get(res, "failover", "concord", "ms"), "ms")
    e = med(_get(res, "failover", "etcd", "ms"), "ms")
    rows.append(f"| failover (SIGKILL leader → next acked write, client defaults) | "
                f"{'n/a' if c is None else f'{c:,.0f} ms'} | {'n/a' if e is None else f'{e:,.0f} ms'} | "
                f"{ratio(c, e)} | ≤ 500 ms | {'n/a' if c is None else ('yes' if c <= 500 else '**no**')} |")
    rk = next(iter(res.get("restart", {}).get("concord", {})), "")
    c_r, e_r = _get(res, "restart", "concord", rk), _get(res, "restart", "etcd", rk)
    row("memory per key", med(c_r, "bytes_per_key"), med(e_r, "bytes_per_key"), 1.0, False, "B")
    row(f"restart with {rk or '?'} keys → serving", med(c_r, "restart_s"), med(e_r, "restart_s"), 1.0, False, "s")
    return rows


def _shm_method(meta: dict[str, Any]) -> str:
    """The method of the shm_reads scenario (runs before shm_keys existed: none)."""
    if "shm_keys" not in meta["size"]:
        return ""
    return (f" Same-host reads (shm_reads) run after the other scenarios, over "
            f"{meta['size']['shm_keys']:,} keys (the keys beyond the read scenarios' are loaded for "
            "them), in one spawned application process holding one `Client(shm=True)`; the key "
            "names are built before the timed loops (bench/shm_get.py `measure`), so the loops "
            "time the read, not string formatting.")


def tables(res: dict[str, dict[str, dict[str, Runs]]]) -> list[str]:
    out: list[str] = []
    systems = ["concord", "etcd", "pysyncobj", "redis"]

    def header(cols: list[str]) -> None:
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))

    out += ["", "### Write latency, 1 client (sequential; ms)", ""]
    header(["system", "p50", "p99", "p50 ratio Concord/system"])
    c = med(_get(res, "write_latency", "concord", "1"), "p50_us")
    for s in systems:
        r = _get(res, "write_latency", s, "1")
        out.append(f"| {s} | {fmt(r, 'p50_us', 1e-3, 2)} | {fmt(r, 'p99_us', 1e-3, 2)} | "
                   f"{ratio(c, med(r, 'p50_us')) if s != 'concord' else ''} |")

    out += ["", "### Write throughput (acknowledged writes/s)", ""]
    header(["clients", *systems, "Concord/etcd", "Concord/PySyncObj"])
    for k in ("1", "64", "128"):
        by = {s: _get(res, "write_throughput", s, k) for s in systems}
        c = med(by["concord"], "ops_per_s")
        out.append(f"| {k} | " + " | ".join(fmt(by[s], "ops_per_s") for s in systems) +
                   f" | {ratio(c, med(by['etcd'], 'ops_per_s'))} | {ratio(c, med(by['pysyncobj'], 'ops_per_s'))} |")

    for scen, key, title, scale, digits, suffix in (
            ("read_latency", "p50_us", "Read latency, 1 client, p50 (ms)", 1e-3, 3, ""),
            ("read_latency", "p99_us", "Read latency, 1 client, p99 (ms)", 1e-3, 3, ""),
            *(("read_throughput", "ops_per_s", f"Read throughput, {k} clients (reads/s)", 1.0, 0, f"@{k}")
              for k in (1, 64, 128))):
        out += ["", f"### {title}", ""]
        header(["Concord level", "Concord", "etcd (level)", "PySyncObj (in-process dict)", "Redis GET",
                "Concord/etcd", "Concord/PySyncObj"])
        for level in ("eventual", "leader", "strong"):
            c_r = _get(res, scen, "concord", level + suffix)
            peers = PEER_LEVEL[level]
            e_r = _get(res, scen, "etcd", peers.get("etcd", "") + suffix) if "etcd" in peers else None
            p_r = _get(res, scen, "pysyncobj", peers["pysyncobj"] + suffix) if "pysyncobj" in peers else None
            r_r = _get(res, scen, "redis", peers["redis"] + suffix) if "redis" in peers else None
            c = med(c_r, key)
            out.append(f"| {level} | {fmt(c_r, key, scale, digits)} | {fmt(e_r, key, scale, digits)} "
                       f"({peers.get('etcd', '-')}) | {fmt(p_r, key, scale, digits)} | "
                       f"{fmt(r_r, key, scale, digits)} | {ratio(c, med(e_r, key))} | {ratio(c, med(p_r, key))} |")

    out += ["", "### Where the time goes: CPU per acknowledged request (µs; server = all member "
            "processes, client = the load processes; PySyncObj's load runs inside its server)", ""]
    header(["scenario", *[f"{s} server / client" for s in systems]])
    levels = ["eventual", "leader", "strong", "serializable", "linearizable", "local", "get"]
    scen_variants: tuple[tuple[str, list[str]], ...] = (
        ("write_throughput", ["1", "64", "128"]),
        ("read_throughput", [f"{lv}@{k}" for k in (1, 64, 128) for lv in levels]))
    for scen, variants in scen_variants:
        for v in variants:
            cells = []
            for s in systems:
                rs = _get(res, scen, s, v)
                cells.append("" if not rs else
                             f"{fmt(rs, 'server_cpu_us_per_op')} / {fmt(rs, 'client_cpu_us_per_op')}")
            if any(cells):
                out.append(f"| {scen} {v} | " + " | ".join(cells) + " |")

    out += ["", "### Same-host shared-memory reads (one application process, reads/s)", ""]
    header(["path", "Concord reads/s (wall)", "reads per CPU second", "served from shm",
            "PySyncObj in-process dict", "Concord/PySyncObj"])
    p = med(_get(res, "read_throughput", "pysyncobj", "local@128"), "ops_per_s")
    for variant, runs in res.get("shm_reads", {}).get("concord", {}).items():
        out.append(f"| {variant} | {fmt(runs, 'ops_per_s')} | {fmt(runs, 'ops_per_cpu_s')} | "
                   f"{fmt(runs, 'served_from_shm')} of "
                   f"{fmt(runs, 'ops')} | {'n/a' if p is None else f'{p:,.0f}'} | {ratio(med(runs, 'ops_per_s'), p)} |")

    out += ["", "### Failover: SIGKILL of the leader's process tree → next acknowledged write (ms)", ""]
    header(["system", "ms (median, min..max)", "runs", "Concord/system"])
    c = med(_get(res, "failover", "concord", "ms"), "ms")
    for s in ("concord", "etcd", "pysyncobj"):
        r = _get(res, "failover", s, "ms")
        out.append(f"| {s} | {fmt(r, 'ms', 1, 0)} | {len(r or [])} | {ratio(c, med(r, 'ms')) if s != 'concord' else ''} |")

    out += ["", "### Restart time and memory per key", ""]
    header(["system", "keys", "load (s)", "restart → serving (s)", "memory/key (bytes, leader)",
            "restart Concord/system", "memory Concord/system"])
    rk = next(iter(res.get("restart", {}).get("concord", {})), "")
    c_r = _get(res, "restart", "concord", rk)
    for s in systems:
        for k, rr in res.get("restart", {}).get(s, {}).items():
            restart_cell = "n/a (no persistence)" if s == "redis" else fmt(rr, "restart_s", 1, 2)
            errs = [str(x["error"]) for x in rr if "error" in x]
            if errs:
                restart_cell = f"**failed**: {errs[0]}"
            out.append(f"| {s} | {int(k):,} | {fmt(rr, 'load_s', 1, 1)} | {restart_cell} | {fmt(rr, 'bytes_per_key')} | "
                       f"{'' if s in ('concord', 'redis') else ratio(med(c_r, 'restart_s'), med(rr, 'restart_s'))} | "
                       f"{'' if s == 'concord' else ratio(med(c_r, 'bytes_per_key'), med(rr, 'bytes_per_key'))} |")
    out += scale_tables(res)
    return out


SCALE_AXES = (("keys", "keys in the store"), ("value_bytes", "value size (bytes)"),
              ("nodes", "cluster members"))


def _scale_points(res: dict[str, dict[str, dict[str, Runs]]], system: str, axis: str,
                  op: str) -> list[tuple[int, Runs]]:
    """(point, runs) of one scale axis and op, in ascending order of the point."""
    got = []
    for variant, runs in res.get("scale", {}).get(system, {}).items():
        point, _, v_op = variant.partition(" ")
        name, _, value = point.partition("=")
        if name == axis and v_op == op:
            got.append((int(value), runs))
    return sorted(got)


def scale_tables(res: dict[str, dict[str, dict[str, Runs]]]) -> list[str]:
    """How throughput and p99 grow with keys, value size and cluster size."""
    if "scale" not in res:
        return []
    out = ["", "### How cost grows (64 clients; reads: Concord eventual, etcd serializable)", ""]
    out.append("| axis | point | op | Concord ops/s | Concord p99 (ms) | etcd ops/s | etcd p99 (ms) | "
               "Concord/etcd ops/s |")
    out.append("|---|---|---|---|---|---|---|---|")
    for axis, _ in SCALE_AXES:
        for op in ("put", "get"):
            c_pts = dict(_scale_points(res, "concord", axis, op))
            e_pts = dict(_scale_points(res, "etcd", axis, op))
            for point in sorted(set(c_pts) | set(e_pts)):
                c_r, e_r = c_pts.get(point), e_pts.get(point)
                out.append(f"| {axis} | {point:,} | {op} | {fmt(c_r, 'ops_per_s')} | {fmt(c_r, 'p99_us', 1e-3, 1)} | "
                           f"{fmt(e_r, 'ops_per_s')} | {fmt(e_r, 'p99_us', 1e-3, 1)} | "
                           f"{ratio(med(c_r, 'ops_per_s'), med(e_r, 'ops_per_s'))} |")
    return out


def plots(res: dict[str, dict[str, dict[str, Runs]]], size: str, out_dir: Path = BENCH) -> list[str]:
    """The PNG plots of `res` in `out_dir` (none, said on stderr, without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        print("bench report: matplotlib is not installed (pip install '.[bench]'): no plots",
              file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    colors = {"concord": "tab:blue", "etcd": "tab:orange", "pysyncobj": "tab:green", "redis": "tab:gray"}
    # throughput against clients
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, variants in res.get("write_throughput", {}).items():
        xs = sorted(int(k) for k in variants)
        ys = [med(variants[str(x)], "ops_per_s") or 0 for x in xs]
        ax.plot(xs, ys, marker="o", label=s, color=colors.get(s))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("acknowledged writes / s")
    ax.set_title(f"Write throughput against clients ({size})")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    name = "write_throughput.png"
    fig.savefig(out_dir / name, dpi=100)
    plt.close(fig)
    made.append(name)
    # latency distributions (CDF of the first run's sample)
    for scen, title, name in (("write_latency", "Write latency, 1 client", "write_latency_cdf.png"),
                              ("read_latency", "Read latency, 1 client", "read_latency_cdf.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for s, variants in res.get(scen, {}).items():
            for v, runs in variants.items():
                sample = next((r.get("latencies_us") for r in runs if r.get("latencies_us")), None)
                if not isinstance(sample, list) or not sample:
                    continue
                ms = sorted(float(x) / 1000 for x in sample)
                share = [(i + 1) / len(ms) for i in range(len(ms))]
                label = s if scen == "write_latency" else f"{s} {v}"
                ax.plot(ms, share, label=label, color=colors.get(s),
                        linestyle={"strong": "--", "linearizable": "--", "leader": ":"}.get(v, "-"))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{title} ({size})")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        made.append(name)
    if "scale" in res:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, (axis, label) in zip(axes, SCALE_AXES):
            for s in ("concord", "etcd"):
                for op, style in (("put", "-"), ("get", "--")):
                    pts = _scale_points(res, s, axis, op)
                    if pts:
                        ax.plot([p for p, _ in pts], [med(r, "ops_per_s") or 0 for _, r in pts], marker="o",
                                linestyle=style, color=colors.get(s), label=f"{s} {op}")
            if axis != "nodes":
                ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("ops / s (64 clients)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"How throughput grows ({size})")
        fig.tight_layout()
        fig.savefig(out_dir / "scale.png", dpi=100)
        plt.close(fig)
        made.append("scale.png")
    # read throughput per level
    fig, ax = plt.subplots(figsize=(7, 4))
    labels: list[str] = []
    values: list[float] = []
    cols: list[str] = []
    for s, variants in res.get("read_throughput", {}).items():
        for v, runs in variants.items():
            if not v.endswith("@128"):
                continue
            labels.append(f"{s}\n{v.partition('@')[0]}")
            values.append(med(runs, "ops_per_s") or 0)
            cols.append(colors.get(s, "black"))
    ax.bar(range(len(values)), values, color=cols)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("reads / s (128 clients)")
    ax.set_title(f"Read throughput per consistency level ({size})")
    fig.tight_layout()
    fig.savefig(out_dir / "read_throughput.png", dpi=100)
    plt.close(fig)
    made.append("read_throughput.png")
    return made


def _stamps(res: dict[str, dict[str, dict[str, Runs]]]) -> set[str]:
    """The start times of the runs whose records are in the results."""
    return {str(r.get("at")) for per in res.values() for variants in per.values()
            for runs in variants.values() for r in runs}


def report(size: str, in_dir: Path = OUT, out_dir: Path = BENCH) -> Path:
    """Write RESULTS.md and the PNGs into `out_dir` from `in_dir`/results-<size>.json."""
    data = json.loads((in_dir / f"results-{size}.json").read_text())
    meta, res = data["meta"], data["results"]
    m = meta["machine"]
    pngs = plots(res, size, out_dir)
    lines = [
        "# Concord benchmark results",
        "",
        f"- Date (UTC): {meta['date_utc']}; size `{size}`: {meta['size']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}",
        f"- Load average at start {tuple(round(x, 2) for x in meta['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in meta['loadavg_end'])}. "
        + ("**Other work was running when the measurement began** (1-minute load average over "
           "1.5): absolute figures are depressed and noisy; the systems were measured interleaved "
           "so the ratios are fairer than the absolute numbers."
           if meta["loadavg_start"][0] > 1.5 else
           "The machine was quiet when the measurement began (the load average at the end is the "
           "benchmark's own: three-member clusters and four load processes on these cores)."),
        f"- Command: `{meta['command']}` then `python -m bench report --size {size}`",
        *[f"- Also from an earlier run: {e['date_utc']} `{e['command']}` "
          f"(scenarios {', '.join(e['scenarios'] or [])}; load average {tuple(round(x, 2) for x in e['loadavg_start'])}"
          f"..{tuple(round(x, 2) for x in e['loadavg_end'])}; versions {e['versions']})"
          for e in meta.get("earlier_runs", []) if e["date_utc"] in _stamps(res)],
        "- Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
        "",
        "Clients used:",
        "",
        *[f"- **{k}**: {v}" for k, v in meta["clients"].items()],
        "",
        "Method: every system runs as a 3-member cluster on 127.0.0.1 (Redis: one server) with the "
        "same Raft timing (heartbeat 50 ms, election timeout 250 ms, randomised upwards by each "
        "implementation) and fsync on before acknowledging (etcd always; Concord "
        "`storage.fsync = true`; PySyncObj's journal is an mmap file it never msyncs per entry). "
        "Concurrency has the same shape for every networked system: 1 client = 1 process, "
        "otherwise 4 load processes, each with K/4 logical clients, each client one request in "
        "flight (closed loop); Concord multiplexes its clients as one zmq DEALER each on one poller "
        "per process, etcd its clients as one HTTP/2 connection each speaking its native gRPC API on "
        "one epoll loop per process (not the JSON gateway), Redis as one thread each with its own connection. PySyncObj "
        "has no network client: its loads run inside the leader process with K callbacks in "
        "flight. Writes and `leader` reads go to the leader; other reads are spread over all "
        "members. Values are 100 bytes, keys `k0000000`.. Throughput points last "
        f"{meta['size']['seconds']} s; latency probes are {meta['size']['latency_ops']} sequential "
        f"requests; each measurement was planned {meta['size']['runs']}× (interleaved across systems) "
        "and is shown as median (min..max) of the runs that completed; a figure without a range "
        "comes from a single run." + _shm_method(meta),
        "",
        "## Goals (2-core machine)",
        "",
        *goals(res),
        "",
        "## All scenarios",
        *tables(res),
        "",
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in pngs],
        "",
    ]
    notes = BENCH / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    path = out_dir / "RESULTS.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path} and {', '.join(pngs)}")
    return path
