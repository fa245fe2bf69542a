"""
`python -m concord.supervisor --config FILE`: one Concord node as a tree of processes.

    supervisor (this process: owns the shared-memory store and the ipc folder)
     ├─ core     rest_for_one  [writer (log/snapshot writer), raft (raft worker)]
     ├─ readers  one_for_one   [reader0 .. reader<N-1> (read workers)]
     ├─ door     one_for_one   [door (client front door, concord.net.frontdoor)]
     └─ metrics  one_for_one   [metrics (/metrics, concord.node.metrics_server)]  if [metrics] enabled
     └─ http     one_for_one   [http (HTTP/JSON gateway, concord.gateway)]  only with [http] enabled

Start-up: the config is loaded (a ConfigError is one line on stderr, exit 2), the data
dir is created if needed and must be writable (exit 2) and not in use by another node
(an flock on <data_dir>/concord.lock, exit 3), this node's fixed ports must be free
(exit 3), then `setup()` creates the shm store and the private ipc folder, the children
start in order and, once all are READY, ONE line goes to stdout:

    concord ready node=n1 client=tcp://127.0.0.1:7401 peer=tcp://127.0.0.1:7501 events=tcp://127.0.0.1:7601

(plus `http=http://127.0.0.1:PORT` when the gateway is on; real ports when the config says 0). A child failing before READY (e.g. the writer
finding a corrupt WAL: its ERROR line names the file and offset) stops start-up, exit 3.
SIGTERM/SIGINT: the children stop in reverse order, `cleanup()` unlinks every segment
and removes the ipc folder, exit 0. If this process dies (SIGKILL), the children exit
through the lifeline and the last of them runs `cleanup()` (supervisor/treelock.py).
Exit codes: docs/operations.md.

`--join` starts a node whose data dir is empty as a new member of a running cluster (no
bootstrap membership: it waits for the leader, after an `add_member` naming it).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import FrameType

import psutil  # type: ignore[import-untyped, unused-ignore]
import zmq

from concord.audit.door import DoorAudit, door_audit_of
from concord.config import NodeConfig, load_config
from concord.node.auth import load_bootstrap_token
from concord.errors import ConfigError, ProtocolError, StorageError
from concord.node.metrics_server import metered, metrics_main
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.net.tracing import DoorTracing
from concord.node.log_writer import LogWriter, WriterSettings, serve
from concord.node.links import load_links
from concord.node.direct import direct_enabled
from concord.node.raft_worker import WorkerEndpoints, run_raft_worker
from concord.node.read_worker import run_read_worker
from concord.node.shm_reads import DoorReads
from concord.shm.layout import SegmentNames, node_part
from concord.shm.segments import DEV_SHM, create_store, reclaim_dead_stores, unlink_store
from concord.node.tracing import WriterTracing
from concord.storage import faults as disk_faults
from concord.tracing import setup_process
import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
from supervisor import (
    Backoff,
    ChildSpec,
    ExitCode,
    Group,
    Intensity,
    Strategy,
    Supervisor,
    Tree,
    format_ready_line,
    notify_ready,
    previous_info,
)
from supervisor.readiness import InfoValue

__all__ = ["NodeLayout", "build_tree", "main"]

logger = logging.getLogger("concord.supervisor")


class NodeLayout:
    """Names of this run's process-local resources: shm segments and ipc endpoints."""

    def __init__(self, config: NodeConfig) -> None:
        token = f"{os.getpid()}x{secrets.token_hex(3)}"
        node = node_part(config.node.id)
        self.names = SegmentNames(node, token)
        # NB: ipc paths must stay under 108 bytes: a short private folder in /tmp.
        self.ipc_dir = Path(tempfile.gettempdir()) / self.names.ipc_folder
        self.endpoints = WorkerEndpoints(
            writer=f"ipc://{self.ipc_dir}/writer",
            backend=f"ipc://{self.ipc_dir}/door",
            shm=self.names,
        )
        # prometheus_client's multiprocess files: one set per child, by its stable name.
        self.metrics_dir = self.ipc_dir / "metrics"

    def setup(self) -> None:
        self.sweep_stale()
        # NB: the store first: an ipc folder is stale when no store has its token.
        create_store(self.names)
        self.ipc_dir.mkdir(mode=0o700)
        # Created empty before the first fork: no process's files survive a node restart.
        self.metrics_dir.mkdir(mode=0o700)

    def sweep_stale(self) -> None:
        """
        Remove what SIGKILLed nodes of ANY id on this host left, when a whole tree was
        killed at once (otherwise the last child ran cleanup()): every node's shm store
        whose owner lock is free (concord/shm/segments.py) and whose supervisor is gone,
        then every ipc folder in this temp dir whose token no remaining store carries.
        """
        reclaim_dead_stores(keep=_owner_may_live)
        try:
            live = {_token_of(n[:-len("-ctl")]) for n in os.listdir(DEV_SHM)
                    if n.startswith("concord-") and n.endswith("-ctl")}
        except FileNotFoundError:
            return
        for entry in self.ipc_dir.parent.glob("concord-*"):
            token = _token_of(entry.name)
            if (token is not None and token not in live and entry.is_dir()
                    and not _owner_may_live(entry.name)):
                shutil.rmtree(entry, ignore_errors=True)
                logger.warning("removed ipc folder of a dead node path=%s", entry)

    def cleanup(self) -> None:
        shutil.rmtree(self.ipc_dir, ignore_errors=True)
        unlink_store(self.names)


def _token_of(name: str) -> str | None:
    """The run token ("<pid>x<hex>") that ends `name`, or None."""
    token = name.rsplit("-", 1)[-1]
    pid_text, sep, rest = token.partition("x")
    if not (sep and pid_text.isdigit() and rest) or any(c not in "0123456789abcdef" for c in rest):
        return None
    return token


def _owner_may_live(base: str) -> bool:
    """
    True to spare a store whose owner lock is free: it is not a node's (no "<pid>x<hex>"
    token: e.g. a test's or a benchmark's, whose creator may not lock), or the
    supervisor pid in its token still runs concord.supervisor (maybe a node of a version
    that takes no lock). A zombie, or another program under that pid, does not count.
    """
    token = _token_of(base)
    if token is None:
        return True
    pid = int(token.partition("x")[0])
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and any(
            "concord.supervisor" in part for part in proc.cmdline())
    except psutil.Error:
        return False


# -- children -------------------------------------------------------------------------------


def _stop_on_term() -> threading.Event:
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    return stop


def log_writer_main(config: NodeConfig, endpoints: WorkerEndpoints) -> None:
    """The writer child: recover the data dir, report READY, serve the raft worker."""
    stop = _stop_on_term()
    if config.faults.enabled and config.faults.disk_file:
        disk_faults.configure(Path(config.faults.disk_file))  # test-only seam
    settings = WriterSettings(
        fsync=config.storage.fsync,
        segment_bytes=config.storage.segment_bytes,
        keep_snapshots=config.storage.keep_snapshots,
    )
    try:
        writer = LogWriter(config.node.data_dir, settings)
    except (StorageError, ProtocolError, ValueError) as exc:
        logger.error("log writer cannot start data_dir=%s: %s", config.node.data_dir, exc)
        raise SystemExit(1) from exc
    try:
        tracing = setup_process(config.tracing, config.node.id, "writer")
    except ConfigError as exc:
        logger.error("log writer cannot start: %s", exc)
        raise SystemExit(int(ExitCode.USAGE)) from exc
    if tracing is not None:
        writer.tracing = WriterTracing(tracing)
    notify_ready({"data_dir": str(config.node.data_dir)})
    try:
        serve(writer, endpoints.writer, stop)
    except (StorageError, ProtocolError) as exc:
        logger.error("log writer failed data_dir=%s error=%s", config.node.data_dir, exc)
        raise SystemExit(1) from exc
    finally:
        if tracing is not None:
            tracing.shutdown()


def door_observers(config: NodeConfig) -> list[DoorAudit | DoorTracing]:
    """
    What watches the front door's requests: tracing spans when `[tracing]` is on, then
    the audit log when `[audit]` is on (after tracing, so it logs the trace id of a
    trace the door started).
    """
    observers: list[DoorAudit | DoorTracing] = []
    tracing = setup_process(config.tracing, config.node.id, "door")
    if tracing is not None:
        observers.append(DoorTracing(tracing))
    audit = door_audit_of(config)
    if audit is not None:
        observers.append(audit)
    return observers


def front_door_main(config: NodeConfig, endpoints: WorkerEndpoints) -> None:
    """
    The door child: the node's one client ROUTER, brokering to the backends and
    answering the reads of bounded cost itself (concord.net.door_reads).
    """
    stop = _stop_on_term()
    me = config.member
    port = me.client_port or int(str(previous_info().get("client_port", 0)))
    try:
        observers = door_observers(config)
    except ConfigError as exc:
        logger.error("front door cannot start: %s", exc)
        raise SystemExit(int(ExitCode.USAGE)) from exc
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    inline = DoorReads(config, endpoints.shm)
    try:
        try:
            door = FrontDoor(ctx, FrontDoorOptions(
                client_endpoint=me.endpoint(port),
                backend_endpoint=endpoints.backend,
                max_request_bytes=config.limits.max_request_bytes,
                curve=load_links(config.curve).client,
            ), observers=observers, inline=inline)
        except BaseException:
            inline.close()
            raise
        with door:
            real_port = int(door.client_endpoint.rsplit(":", 1)[1])
            notify_ready({"client": door.client_endpoint, "client_port": real_port})
            door.serve(stop.is_set, tick_ms=100.0)
    finally:
        for observer in observers:
            observer.close()
        ctx.term()


def http_gateway_main(config: NodeConfig) -> None:
    """The http child: the HTTP/JSON gateway (concord.gateway), when [http] is enabled."""
    # NB: imported here: starlette and uvicorn load only in the gateway process.
    from concord.gateway.process import run_gateway

    run_gateway(config)


def _http_groups(config: NodeConfig) -> tuple[Group, ...]:
    if not config.http.enabled:
        return ()
    return (Group("http", Strategy.ONE_FOR_ONE, (
        ChildSpec("http", http_gateway_main, (config,), reports_ready=True,
                  shutdown_timeout_s=config.supervisor.shutdown_timeout_s),
    )),)


def build_tree(config: NodeConfig, endpoints: WorkerEndpoints, join: bool = False,
               metrics_dir: Path | None = None) -> Tree:
    """
    The node's supervision tree (module docstring). With `metrics_dir` (metrics on),
    every child records into it under its own name and a `metrics` child serves it.
    """
    s = config.supervisor
    timeout = s.shutdown_timeout_s

    def target(name: str, run: Callable[..., object]) -> Callable[..., object]:
        return run if metrics_dir is None else metered(metrics_dir, name, run)

    groups: tuple[Group, ...] = (
        Group("core", Strategy.REST_FOR_ONE, (
            ChildSpec("writer", target("writer", log_writer_main), (config, endpoints),
                      reports_ready=True, ready_before_next=True, shutdown_timeout_s=timeout),
            ChildSpec("raft", target("raft", run_raft_worker), (config, endpoints, join),
                      reports_ready=True, shutdown_timeout_s=timeout,
                      max_rss_bytes=s.max_rss_bytes),
        )),
        Group("readers", Strategy.ONE_FOR_ONE, tuple(
            ChildSpec(f"reader{i}", target(f"reader{i}", run_read_worker), (config, endpoints, i),
                      reports_ready=True, shutdown_timeout_s=timeout,
                      max_rss_bytes=s.max_rss_bytes)
            for i in range(config.node.read_workers)
        )),
        Group("door", Strategy.ONE_FOR_ONE, (
            ChildSpec("door", target("door", front_door_main), (config, endpoints),
                      reports_ready=True, shutdown_timeout_s=timeout),
        )),
    )
    if metrics_dir is not None:
        groups += (Group("metrics", Strategy.ONE_FOR_ONE, (
            ChildSpec("metrics", metrics_main, (config, metrics_dir), reports_ready=True,
                      shutdown_timeout_s=timeout),
        )),)
    return Tree(
        groups + _http_groups(config),
        intensity=Intensity(s.max_restarts, s.restart_window_s),
        backoff=Backoff(initial_s=s.backoff_initial_s, max_s=s.backoff_max_s),
        ready_timeout_s=s.ready_timeout_s,
    )


# -- start-up checks ----------------------------------------------------------------------------


class StartupCheckError(Exception):
    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def check_data_dir(config: NodeConfig) -> None:
    """Create the data dir if missing; it must be a writable folder."""
    data_dir = Path(config.node.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupCheckError(f"node.data_dir: cannot create {data_dir}: {exc.strerror}",
                                ExitCode.USAGE) from exc
    if not data_dir.is_dir() or not os.access(data_dir, os.W_OK | os.X_OK):
        raise StartupCheckError(f"node.data_dir: {data_dir} is not a writable folder",
                                ExitCode.USAGE)


LOCK_FILE = "concord.lock"
_held_locks: list[int] = []  # fds kept open (inherited by children) for the process's life


def lock_data_dir(config: NodeConfig, wait_s: float = 3.0) -> None:
    """
    Take an exclusive flock on `<data_dir>/concord.lock` for this node's lifetime, so two
    nodes never share a data dir. The children inherit the descriptor: the lock is
    released only when the whole tree is gone (after a SIGKILL of the supervisor, once
    its children exited through the lifeline; hence the short wait).
    """
    path = Path(config.node.data_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError as exc:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise StartupCheckError(
                    f"node.data_dir: {config.node.data_dir} is in use by another running node "
                    f"(lock {path})", ExitCode.STARTUP_FAILED) from exc
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks.append(fd)


def check_ports(config: NodeConfig) -> None:
    """Every fixed port of this node must be free to bind on its host."""
    me = config.member
    metrics_port = config.metrics.port if config.metrics.enabled else 0
    ports = [(f"cluster.members[{me.id}].{name}", me.host, port) for name, port in (
        ("client_port", me.client_port), ("peer_port", me.peer_port),
        ("events_port", me.events_port))]
    ports.append(("metrics.port", me.host, metrics_port))
    if direct_enabled(config):
        ports.append((f"cluster.members[{me.id}].direct_port", me.host, me.direct_port))
    if config.http.enabled:
        ports.append(("http.port", config.http.bind or me.host, config.http.port))
    for key, host, port in ports:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise StartupCheckError(
                    f"{key}: port {port} on {host} {reason}",
                    ExitCode.STARTUP_FAILED,
                ) from exc


def _ready_line(node_id: str, infos: Mapping[str, Mapping[str, InfoValue]]) -> str:
    endpoints = {
        "client": infos["door"]["client"],
        "peer": infos["raft"]["peer"],
        "events": infos["raft"]["events"],
    }
    if "direct" in infos["raft"]:
        endpoints["direct"] = infos["raft"]["direct"]
    if "metrics" in infos:
        endpoints["metrics"] = infos["metrics"]["metrics"]
    if "http" in infos:
        endpoints["http"] = infos["http"]["http"]
    return format_ready_line("concord", node_id, endpoints)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concord.supervisor",
                                     description="Run one Concord node.")
    parser.add_argument("--config", required=True, help="the node's TOML file")
    parser.add_argument("--join", action="store_true",
                        help="an empty data dir joins a running cluster (no bootstrap)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        try:  # every key file readable and valid, before anything starts
            load_links(config.curve)
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: {exc}") from exc
        load_bootstrap_token(config.auth)  # a missing or malformed token file stops start-up
    except ConfigError as exc:
        print(f"concord: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    logging.basicConfig(
        level=config.logging.level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s [{config.node.id} %(process)d] %(message)s",
    )
    try:
        check_data_dir(config)
        lock_data_dir(config)
        check_ports(config)
    except StartupCheckError as exc:
        print(f"concord: {exc.message}", file=sys.stderr)
        return int(exc.code)
    layout = NodeLayout(config)
    tree = build_tree(config, layout.endpoints, join=args.join,
                      metrics_dir=layout.metrics_dir if config.metrics.enabled else None)
    return Supervisor(
        tree,
        setup=layout.setup,
        cleanup=layout.cleanup,
        ready_line=partial(_ready_line, config.node.id),
    ).run()


if __name__ == "__main__":
    sys.exit(main())
