"""
One PySyncObj member for the benchmark: `python -m bench.pysyncobj_node --self ADDR ...`.

PySyncObj is a library: the application process is itself a Raft member, and its
@replicated methods are the writes. This process holds a replicated dict (set, set_many)
with a journal file and a full-dump file in --data-dir, and answers control requests on a
zmq REP socket (--control-port, msgpack maps, loopback only):

  {"cmd": "ping"} / {"cmd": "status"} -> {is_leader, ready, leader, keys}
  {"cmd": "run", "op": "put"|"get", "clients": K, "duration_s", "max_ops", "keys"}
        -> {ok, errors, elapsed_s, latencies_us}: K writes in flight (callbacks), or a
        read loop over the local dict
  {"cmd": "load", "n", "batch"} -> {ok}: set_many of `batch` keys, synchronously
  {"cmd": "write_until_ok", "key", "deadline_s"} -> {ok, acked_at}: sync puts (0.1 s
        timeout each) until one is acknowledged; acked_at is time.time()
  {"cmd": "stop"} -> exits

NB: PySyncObj 0.3.17's journal is an mmap'ed file it never msyncs per entry, so an
acknowledged write survives a process crash but not a power cut (no fsync on commit).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from array import array

import msgpack
import zmq
from pysyncobj import SyncObj, SyncObjConf, replicated

from bench.drivers import key_name, value_for


class Store(SyncObj):  # type: ignore[misc]
    """A replicated dict."""

    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self.data: dict[str, bytes] = {}

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: bytes) -> int:
        self.data[key] = value
        return len(self.data)

    @replicated  # type: ignore[untyped-decorator]
    def set_many(self, items: dict[str, bytes]) -> int:
        self.data.update(items)
        return len(self.data)


def run_puts(store: Store, clients: int, duration_s: float, max_ops: int, keys: int) -> dict[str, object]:
    lat = array("d")
    lock = threading.Lock()
    state = {"ok": 0, "errors": 0, "issued": 0, "inflight": 0}
    done = threading.Event()
    t0 = time.perf_counter()
    deadline = t0 + duration_s

    def issue(i: int) -> None:
        sent = time.perf_counter()

        def cb(result: object, error: object) -> None:
            now = time.perf_counter()
            with lock:
                if error == 0:  # FAIL_REASON.SUCCESS
                    state["ok"] += 1
                    lat.append((now - sent) * 1e6)
                else:
                    state["errors"] += 1
                again = now < deadline and state["issued"] < max_ops
                if again:
                    state["issued"] += 1
                else:
                    state["inflight"] -= 1
                    if state["inflight"] == 0:
                        done.set()
            if again:
                issue(i + clients)

        store.set(key_name(i % keys), value_for(i % keys), callback=cb)

    with lock:
        state["issued"] = state["inflight"] = clients
    for c in range(clients):
        issue(c)
    done.wait(duration_s + 30)
    elapsed = time.perf_counter() - t0
    return {"ok": state["ok"], "errors": state["errors"], "elapsed_s": elapsed, "latencies_us": lat.tobytes()}


def run_gets(store: Store, duration_s: float, max_ops: int, keys: int) -> dict[str, object]:
    lat = array("d")
    ok = errors = 0
    perf = time.perf_counter
    t0 = perf()
    deadline = t0 + duration_s
    data = store.data
    i = 0
    while i < max_ops:
        t = perf()
        got = data.get(key_name(i % keys))
        now = perf()
        if got is None:
            errors += 1
        else:
            ok += 1
            lat.append((now - t) * 1e6)
        i += 1
        if now >= deadline:
            break
    return {"ok": ok, "errors": errors, "elapsed_s": perf() - t0, "latencies_us": lat.tobytes()}


def _num(cmd: dict[str, object], field: str) -> int:
    """An integer field of a control map."""
    value = cmd[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"control field {field!r} must be an integer, got {value!r}")
    return value


def _seconds(cmd: dict[str, object], field: str) -> float:
    """A duration field of a control map (int or float seconds)."""
    value = cmd[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"control field {field!r} must be a number of seconds, got {value!r}")
    return float(value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self", dest="self_addr", required=True)
    ap.add_argument("--partners", required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--heartbeat-ms", type=int, default=50)
    ap.add_argument("--election-ms", type=int, default=250)
    args = ap.parse_args()
    os.makedirs(args.data_dir, exist_ok=True)
    conf = SyncObjConf(
        journalFile=os.path.join(args.data_dir, "journal.bin"),
        fullDumpFile=os.path.join(args.data_dir, "dump.bin"),
        appendEntriesPeriod=args.heartbeat_ms / 1000.0,
        raftMinTimeout=args.election_ms / 1000.0,
        raftMaxTimeout=2 * args.election_ms / 1000.0,
        autoTick=True, autoTickPeriod=0.005, dynamicMembershipChange=False,
        commandsWaitLeader=True, connectionRetryTime=0.2,
    )
    store = Store(args.self_addr, [p for p in args.partners.split(",") if p], conf)
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(f"tcp://127.0.0.1:{args.control_port}")
    try:
        while True:
            cmd: dict[str, object] = msgpack.unpackb(rep.recv(), raw=False)
            name = cmd.get("cmd")
            reply: dict[str, object]
            if name in ("ping", "status"):
                leader = store._getLeader()
                reply = {"is_leader": store._isLeader(), "ready": store.isReady(),
                         "leader": str(leader) if leader is not None else None, "keys": len(store.data)}
            elif name == "run" and cmd["op"] == "put":
                reply = run_puts(store, _num(cmd, "clients"), _seconds(cmd, "duration_s"),
                                 _num(cmd, "max_ops"), _num(cmd, "keys"))
            elif name == "run":
                reply = run_gets(store, _seconds(cmd, "duration_s"), _num(cmd, "max_ops"),
                                 _num(cmd, "keys"))
            elif name == "load":
                n, batch = _num(cmd, "n"), _num(cmd, "batch")
                for lo in range(0, n, batch):
                    items = {key_name(i): value_for(i) for i in range(lo, min(n, lo + batch))}
                    store.set_many(items, sync=True, timeout=60)
                reply = {"ok": True}
            elif name == "write_until_ok":
                deadline = time.time() + _seconds(cmd, "deadline_s")
                reply = {"ok": False}
                while time.time() < deadline:
                    try:
                        store.set(str(cmd["key"]), b"x", sync=True, timeout=0.1)
                    except Exception:  # noqa: BLE001 - SyncObjException: not yet, retry (bounded)
                        continue
                    reply = {"ok": True, "acked_at": time.time()}
                    break
            elif name == "stop":
                rep.send(msgpack.packb({"ok": True}))
                break
            else:
                reply = {"error": f"unknown command {name!r}"}
            rep.send(msgpack.packb(reply))
    finally:
        rep.close(linger=0)
        ctx.term()
        store.destroy()


if __name__ == "__main__":
    main()
