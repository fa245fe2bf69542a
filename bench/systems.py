"""
The systems under test, each a 3-member cluster on 127.0.0.1 (Redis: one server).

Every system is started with the same Raft timing where it has one: heartbeat 50 ms,
election timeout 250 ms (randomised upwards by each implementation), fsync on before
acknowledging. Data dirs live under the run's temp folder; every process is started and
stopped through bench.procs.Procs, by pid.

  Concord    python -m concord.supervisor --config nK.toml (tick 50 ms, election 5 ticks,
             heartbeat 1 tick, storage.fsync = true, 1 read worker per node,
             supervisor.ready_timeout_s = 600 for the 1M-key restart)
  etcd       /usr/bin/etcd (Debian etcd-server), --heartbeat-interval 50
             --election-timeout 250 (etcd always fsyncs its WAL)
  PySyncObj  bench/pysyncobj_node.py: SyncObj with a journal file (fsync on commit), 3
             processes, appendEntriesPeriod 50 ms, raft timeouts 250..500 ms
  Redis      /usr/bin/redis-server, no persistence: the raw-speed reference
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.drivers import LoadResult
from bench.load import LoadSummary, summarize
from bench.procs import Procs, free_ports, sweep_concord_shm, wait_for

log = logging.getLogger(__name__)

ROOT = Path(os.environ.get("CONCORD_ROOT", Path(__file__).resolve().parents[1]))
HEARTBEAT_MS = 50
ELECTION_MS = 250


def private_bytes(p: psutil.Process) -> int:
    """
    USS of one process without its pages of /dev/shm segments.

    USS counts a page of a shared segment that no other process has touched yet (the raft
    worker's writes before any reader looked) as private; Concord's segments are counted
    once, whole, by `Concord.memory_bytes`, so they are left out here.
    """
    uss: int = p.memory_full_info().uss
    for m in p.memory_maps(grouped=True):
        if m.path.startswith("/dev/shm/"):
            uss -= m.private_clean + m.private_dirty
    return uss


def tree_memory_bytes(pid: int) -> int:
    """USS of a process and its children (private memory, shared segments excluded)."""
    total = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += private_bytes(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


@dataclass
class Member:
    id: str
    ports: list[int]
    data_dir: Path
    pid: int | None = None
    endpoint: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class System:
    """A running cluster of one system."""

    name = ""
    client_desc = ""  # the client library the throughput loops and latency probes use
    levels: dict[str, str] = {}  # read level name -> the Concord level it is compared with
    nodes = 3  # members of the next cluster start() creates (the scale scenario sets 5)

    def __init__(self, procs: Procs, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.members: list[Member] = []

    def start(self, wait_leader: bool = True) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for m in self.members:
            if m.pid is not None:
                self.procs.terminate(m.pid)
                m.pid = None

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.members = []

    def leader_index(self, timeout_s: float = 30.0) -> int:
        raise NotImplementedError

    def save_logs(self, dest: Path) -> None:
        """Copy the members' log files (kept when a scenario fails)."""
        dest.mkdir(parents=True, exist_ok=True)
        for f in self.workdir.glob("*.log"):
            shutil.copy(f, dest / f"{self.name}-{f.name}")

    def endpoints_leader_first(self) -> tuple[str, ...]:
        li = self.leader_index()
        eps = [m.endpoint for m in self.members]
        return tuple([eps[li]] + eps[:li] + eps[li + 1:])

    def version(self) -> str:
        return ""

    def load_keys(self, n: int, batch: int = 500, start: int = 0) -> None:
        """Put keys k{start}..k{n-1} (100-byte values) in batches."""
        raise NotImplementedError

    def read_probe(self, key: str) -> bool:
        """True once some member serves `key`."""
        raise NotImplementedError

    def memory_bytes(self, index: int) -> int:
        pid = self.members[index].pid
        return tree_memory_bytes(pid) if pid is not None else 0


# -- etcd ----------------------------------------------------------------------------------

class Etcd(System):
    name = "etcd"
    client_desc = ("etcd's native gRPC API (KV/Put, KV/Range) written by hand over HTTP/2: one TCP "
                   "connection per client on one epoll loop per load process, protobuf and HPACK encoded "
                   "by hand (bench/etcd_h2.py; ~50 µs of client CPU per request against ~200-350 µs "
                   "through grpcio's grpc.aio, docs/benchmarks.md \"etcd's driver\")")

    def start(self, wait_leader: bool = True) -> None:
        if not self.members:
            for i in range(self.nodes):
                ports = free_ports(2)
                self.members.append(Member(f"e{i + 1}", ports, self.workdir / f"e{i + 1}"))
        cluster = ",".join(f"{m.id}=http://127.0.0.1:{m.ports[1]}" for m in self.members)
        state = "existing" if (self.members[0].data_dir / "member").exists() else "new"
        for m in self.members:
            m.endpoint = f"http://127.0.0.1:{m.ports[0]}"
            argv = ["etcd", "--name", m.id, "--data-dir", str(m.data_dir),
                    "--listen-client-urls", m.endpoint, "--advertise-client-urls", m.endpoint,
                    "--listen-peer-urls", f"http://127.0.0.1:{m.ports[1]}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.ports[1]}",
                    "--initial-cluster", cluster, "--initial-cluster-state", state,
                    "--initial-cluster-token", "bench",
                    "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
                    "--max-txn-ops", "500", "--quota-backend-bytes", str(8 * 1024**3),
                    "--log-level", "warn"]
            m.pid = self.procs.start(argv, self.workdir / f"{m.id}.log").pid
        if wait_leader:
            wait_for(lambda: self._leader_or_none() is not None, 30.0, "etcd leader")

    def _status(self, m: Member) -> dict[str, object] | None:
        import requests

        try:
            r = requests.post(f"{m.endpoint}/v3/maintenance/status", json={}, timeout=1)
            got: dict[str, object] = r.json()
            return got if r.ok else None
        except (requests.RequestException, ValueError):
            return None

    def _leader_or_none(self) -> int | None:
        sts = [self._status(m) if m.pid is not None else None for m in self.members]
        for i, st in enumerate(sts):
            if st is not None:
                header = st.get("header")
                if isinstance(header, dict) and header.get("member_id") == st.get("leader"):
                    # a write must go through (the leader has a quorum)
                    return i
        return None

    def leader_index(self, timeout_s: float = 30.0) -> int:
        wait_for(lambda: self._leader_or_none() is not None, timeout_s, "etcd leader")
        li = self._leader_or_none()
        assert li is not None
        return li

    def version(self) -> str:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "?"

    def write_probe(self, key: str, value: str, endpoints: list[str], attempt_s: float) -> bool:
        """One gRPC put attempt against each given member in turn; True once acknowledged."""
        from bench.etcd_grpc import put_once

        return any(put_once(ep, key, value, attempt_s) for ep in endpoints)

    def load_keys(self, n: int, batch: int = 500, start: int = 0) -> None:
        """Put keys k0..k{n-1} with txns of `batch` puts (etcd3gw transaction)."""
        from bench.drivers import b64, etcd_client, key_name, value_for
        cl = etcd_client(self.endpoints_leader_first()[0])
        for lo in range(start, n, batch):
            ops = [{"request_put": {"key": b64(key_name(i)), "value": b64(value_for(i))}}
                   for i in range(lo, min(n, lo + batch))]
            cl.transaction({"compare": [], "success": ops, "failure": []})  # type: ignore[attr-defined]

    def read_probe(self, key: str) -> bool:
        from bench.drivers import etcd_client
        for m in self.members:
            try:
                if etcd_client(m.endpoint).get(key):  # type: ignore[attr-defined]
                    return True
            except Exception:  # noqa: BLE001 - not up yet
                continue
        return False


# -- redis ---------------------------------------------------------------------------------

class Redis(System):
    name = "redis"
    client_desc = "redis-py (one connection per client thread); server without persistence"

    def start(self, wait_leader: bool = True) -> None:
        port = free_ports(1)[0]
        m = Member("r1", [port], self.workdir / "r1")
        m.data_dir.mkdir(parents=True, exist_ok=True)
        m.endpoint = f"redis://127.0.0.1:{port}"
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(m.data_dir), "--daemonize", "no"]
        m.pid = self.procs.start(argv, self.workdir / "r1.log").pid
        self.members = [m]

        def up() -> bool:
            import redis
            try:
                return bool(redis.Redis(port=port).ping())
            except redis.RedisError:
                return False
        wait_for(up, 15.0, "redis ping")

    def leader_index(self, timeout_s: float = 30.0) -> int:
        return 0

    def version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    def load_keys(self, n: int, batch: int = 500, start: int = 0) -> None:
        import redis

        from bench.drivers import key_name, value_for
        r = redis.Redis(port=self.members[0].ports[0])
        for lo in range(start, n, batch):
            r.mset({key_name(i): value_for(i) for i in range(lo, min(n, lo + batch))})


# -- concord -------------------------------------------------------------------------------

def python_env(pythonpath: Path, workdir: Path) -> dict[str, str]:
    """
    The environment of a Python server process: `pythonpath` first on the path, and
    bytecode cached (under `workdir`, not in the source tree) even when the caller's
    environment says PYTHONDONTWRITEBYTECODE: an installed server runs from compiled
    bytecode (pip compiles it at install), so its start-up, and a restart's time, must
    not include compiling every module again (~0.15 s of CPU per process here).
    """
    env = dict(os.environ, PYTHONPATH=str(pythonpath), PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


class Concord(System):
    name = "concord"
    client_desc = ("latency probes: concord.client.Client (shm=False for wire reads); throughput: "
                   "wire protocol v1 maps over one zmq DEALER per client, puts to the members' direct "
                   "endpoints and reads to their client endpoints (what Client sends)")

    settings: dict[str, dict[str, object]] = {
        "raft": {"tick_ms": HEARTBEAT_MS, "election_ticks": ELECTION_MS // HEARTBEAT_MS,
                 "heartbeat_ticks": 1},
        "storage": {"fsync": True},
        # NB: the default (30 s) is shorter than recovering 1,000,000 keys on this machine
        "supervisor": {"ready_timeout_s": 600.0},
        "logging": {"level": "WARNING"},
    }

    def _config(self, m: Member) -> str:
        lines = ["[node]", f"id = {_toml(m.id)}", f"data_dir = {_toml(str(m.data_dir))}",
                 "read_workers = 1", ""]
        for o in self.members:
            lines += ["[[cluster.members]]", f"id = {_toml(o.id)}", 'host = "127.0.0.1"',
                      f"client_port = {o.ports[0]}", f"peer_port = {o.ports[1]}",
                      f"events_port = {o.ports[2]}", ""]
        for section, values in self.settings.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    def start(self, wait_leader: bool = True) -> None:
        if not self.members:
            for i in range(self.nodes):
                self.members.append(Member(f"n{i + 1}", free_ports(3), self.workdir / f"n{i + 1}"))
        for m in self.members:
            (self.workdir / f"{m.id}.toml").write_text(self._config(m))
        for m in self.members:
            self.launch(m)
        for m in self.members:
            self.wait_ready(m, 900.0 if not wait_leader else 60.0)
        if wait_leader:
            self.leader_index()

    def launch(self, m: Member) -> None:
        env = python_env(ROOT, self.workdir)
        p = self.procs.start([sys.executable, "-m", "concord.supervisor", "--config",
                              str(self.workdir / f"{m.id}.toml")],
                             self.workdir / f"{m.id}.log", cwd=ROOT, env=env, stdout_pipe=True)
        m.pid = p.pid
        m.extra["launched_at"] = repr(time.monotonic())

    def wait_ready(self, m: Member, timeout_s: float = 60.0) -> float:
        """Wait for the ready line; the seconds since launch."""
        from supervisor import parse_ready_line
        assert m.pid is not None
        p = self.procs.popens[m.pid]
        assert p.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout_s):
                raise TimeoutError(f"concord {m.id}: no ready line in {timeout_s}s")
            line = p.stdout.readline().decode()
        finally:
            sel.close()
        if not line:
            raise RuntimeError(f"concord {m.id} exited before ready: "
                               f"{(self.workdir / f'{m.id}.log').read_text()[-2000:]}")
        _, fields = parse_ready_line(line.strip())
        m.endpoint = fields["client"]
        self.procs.remember(m.pid)
        return time.monotonic() - float(m.extra["launched_at"])

    def status(self, m: Member) -> dict[str, object] | None:
        from concord.client.raw import request
        if m.pid is None or not m.endpoint:
            return None
        try:
            reply = request(m.endpoint, {"op": "status"}, timeout_ms=1000, retries=0)
        except Exception:  # noqa: BLE001 - a node that does not answer has no status
            return None
        return reply if reply.get("ok") else None

    def _leader_or_none(self) -> int | None:
        sts = [self.status(m) for m in self.members]
        for i, st in enumerate(sts):
            if st is not None and st.get("role") == "leader":
                return i
        return None

    def leader_index(self, timeout_s: float = 30.0) -> int:
        wait_for(lambda: self._leader_or_none() is not None, timeout_s, "concord leader")
        li = self._leader_or_none()
        assert li is not None
        return li

    def kill(self, index: int) -> None:
        m = self.members[index]
        assert m.pid is not None
        self.procs.kill(m.pid)
        sweep_concord_shm(m.id, m.pid)
        m.pid = None

    def stop(self) -> None:
        super().stop()

    def version(self) -> str:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False)
        return f"concord @ {out.stdout.strip() or '?'}"

    def memory_bytes(self, index: int) -> int:
        """USS of the node's process tree plus its /dev/shm segments (counted once)."""
        m = self.members[index]
        if m.pid is None:
            return 0
        safe = "".join(c if c.isalnum() or c in "_." else "_" for c in m.id)[:32]
        shm = 0
        for name in os.listdir("/dev/shm"):
            if name.startswith(f"concord-{safe}-{m.pid}x"):
                shm += os.stat(f"/dev/shm/{name}").st_blocks * 512
        return tree_memory_bytes(m.pid) + shm

    def load_keys(self, n: int, batch: int = 500, start: int = 0) -> None:
        from concord.client import Client

        from bench.drivers import key_name, value_for
        with Client(list(self.endpoints_leader_first()), timeout_s=30, shm=False) as c:
            for lo in range(start, n, batch):
                c.put_many([(key_name(i), value_for(i)) for i in range(lo, min(n, lo + batch))])

    def read_probe(self, key: str) -> bool:
        from concord.client import Client
        eps = [m.endpoint for m in self.members]
        try:
            with Client(eps, timeout_s=0.5, shm=False, retries=0) as c:
                return c.get(key, consistency="strong", default=None) is not None
        except Exception:  # noqa: BLE001 - not up yet
            return False


# -- pysyncobj -----------------------------------------------------------------------------

class PySyncObj(System):
    name = "pysyncobj"
    client_desc = ("in-process: the application is a PySyncObj member (bench/pysyncobj_node.py); "
                   "writes are @replicated calls with callbacks, reads are local dict lookups")

    def start(self, wait_leader: bool = True) -> None:
        if not self.members:
            for i in range(self.nodes):
                self.members.append(Member(f"p{i + 1}", free_ports(2), self.workdir / f"p{i + 1}"))
        addrs = [f"127.0.0.1:{m.ports[0]}" for m in self.members]
        for i, m in enumerate(self.members):
            self.launch(m, addrs, i)
        for m in self.members:
            wait_for(lambda m=m: self.call(m, {"cmd": "ping"}, 1.0) is not None, 600.0, f"{m.id} control")
        if wait_leader:
            self.leader_index()

    def launch(self, m: Member, addrs: list[str] | None = None, i: int | None = None) -> None:
        if addrs is None or i is None:
            addrs = [f"127.0.0.1:{o.ports[0]}" for o in self.members]
            i = self.members.index(m)
        m.data_dir.mkdir(parents=True, exist_ok=True)
        others = [a for j, a in enumerate(addrs) if j != i]
        argv = [sys.executable, "-m", "bench.pysyncobj_node", "--self", addrs[i], "--partners",
                ",".join(others), "--control-port", str(m.ports[1]), "--data-dir", str(m.data_dir),
                "--heartbeat-ms", str(HEARTBEAT_MS), "--election-ms", str(ELECTION_MS)]
        env = python_env(Path(__file__).resolve().parents[1], self.workdir)
        m.pid = self.procs.start(argv, self.workdir / f"{m.id}.log", env=env).pid
        m.endpoint = f"tcp://127.0.0.1:{m.ports[1]}"

    def call(self, m: Member, cmd: dict[str, object], timeout_s: float) -> dict[str, object] | None:
        """One control request to a member process (zmq REQ, msgpack); None on silence."""
        import msgpack
        import zmq
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        try:
            s.connect(m.endpoint)
            s.send(msgpack.packb(cmd))
            if not s.poll(int(timeout_s * 1000)):
                return None
            got: dict[str, object] = msgpack.unpackb(s.recv(), raw=False)
            return got
        finally:
            s.close(linger=0)

    def _leader_or_none(self) -> int | None:
        for i, m in enumerate(self.members):
            if m.pid is None:
                continue
            st = self.call(m, {"cmd": "status"}, 1.0)
            if st is not None and st.get("is_leader") and st.get("ready"):
                return i
        return None

    def leader_index(self, timeout_s: float = 30.0) -> int:
        wait_for(lambda: self._leader_or_none() is not None, timeout_s, "pysyncobj leader")
        li = self._leader_or_none()
        assert li is not None
        return li

    def version(self) -> str:
        from importlib.metadata import version
        return f"pysyncobj {version('pysyncobj')}"

    def run(self, op: str, clients: int, duration_s: float, max_ops: int, keys: int) -> LoadSummary:
        """A closed-loop run inside the leader process (K callbacks in flight)."""
        from array import array

        m = self.members[self.leader_index()]
        got = self.call(m, {"cmd": "run", "op": op.partition(":")[0], "clients": clients,
                            "duration_s": duration_s, "max_ops": max_ops, "keys": keys},
                        duration_s + 120)
        if got is None:
            raise RuntimeError("pysyncobj run: no reply")
        lat = array("d")
        lat.frombytes(got["latencies_us"])  # type: ignore[arg-type]
        r = LoadResult(int(got["ok"]), int(got["errors"]), float(got["elapsed_s"]), lat)  # type: ignore[call-overload, arg-type]
        return summarize([r], clients, 1)

    def load_keys(self, n: int, batch: int = 500, start: int = 0) -> None:
        m = self.members[self.leader_index()]
        got = self.call(m, {"cmd": "load", "n": n, "batch": batch}, 3600.0)
        if not got or not got.get("ok"):
            raise RuntimeError(f"pysyncobj load failed: {got}")


class EtcdGateway(Etcd):
    """The same etcd cluster, driven through its gRPC-JSON gateway: a labelled extra."""

    name = "etcd-gw"
    client_desc = "etcd3gw 2.x (PyPI) over etcd's gRPC-JSON gateway /v3/ (HTTP/JSON, requests)"


SYSTEMS: dict[str, type[System]] = {
    "concord": Concord, "etcd": Etcd, "etcd-gw": EtcdGateway, "pysyncobj": PySyncObj, "redis": Redis,
}
