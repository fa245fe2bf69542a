"""
Embedded start: run a Concord node as a child of the application.

    import concord

    with concord.start(data_dir="state") as node:     # one node, free ports
        concord.put("flags/dark-mode", True)           # the default client talks to it
        node.client.get("flags/dark-mode")

`start()` runs `python -m concord.supervisor --config FILE` as a child process (the same
node, process tree and guarantees as a standalone one), waits for its ready line, and
returns an `EmbeddedNode` whose `client` is connected to it. Without a config file it
configures a single node on 127.0.0.1 with ports chosen by the OS, handed over through
an inherited pipe (`--config /dev/fd/N`): no file is written, so nothing is left behind
however the application ends.

Auth and CURVE: started from a config file with `[auth]` or a CURVE client endpoint,
the node's client and the status watcher below speak with that config's bootstrap token
and the public key of its `[curve] client_secret_key_file` (concord.credentials): the
application owns the node's config. Until the leader has applied the bootstrap token,
every request is `unauthorized` (docs/security.md).

Telemetry: while handlers are attached to `concord.node.*` events (concord.telemetry),
a watcher thread asks the node for its `status` every `status_interval_s` and emits
`concord.node.status`, plus `concord.node.state_change` and `concord.node.snapshot` when
the role, leader or term, or the snapshot index, differ from the previous status. Events
are therefore at most `status_interval_s` late, and two changes within one interval are
one event.

Lifetime: `stop()` (or leaving the `with` block) sends SIGTERM and waits for the ordered
shutdown. If the application dies without stopping it, the kernel sends the node SIGTERM
(Linux `PR_SET_PDEATHSIG`, set in the child before exec): no orphaned node. NB: the
signal fires when the *thread* that called `start()` exits, so call it from a thread that
lives as long as the node should (normally the main thread).
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from collections.abc import Mapping
from typing import IO

from concord import credentials, telemetry
from concord.client import Client
from concord.client.api import connect, default_client, disconnect
from concord.errors import ConcordError, ConfigError, EmbeddedNodeError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child between fork and exec: SIGTERM when the parent thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _single_node_config(node_id: str, data_dir: Path, read_workers: int) -> str:
    return (
        "# written by concord.start()\n"
        "[node]\n"
        f'id = "{node_id}"\n'
        f'data_dir = "{data_dir.as_posix()}"\n'
        f"read_workers = {read_workers}\n"
        "\n[[cluster.members]]\n"
        f'id = "{node_id}"\n'
        'host = "127.0.0.1"\n'
        "client_port = 0\npeer_port = 0\nevents_port = 0\n"
    )


class EmbeddedNode:
    """
    A running node started by `start()`.

    Attributes:
        node_id: the node's id.
        endpoints: the ready line's fields (client, peer, events).
        client: a `Client` connected to the node's client endpoint.
        pid: the supervisor's pid.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        node_id: str,
        endpoints: dict[str, str],
        client: Client,
        is_default: bool,
        status_interval_s: float = 5.0,
        token: str | None = None,
        server_key: str | None = None,
    ) -> None:
        self._process = process
        self.node_id = node_id
        self.endpoints = endpoints
        self.client = client
        self._is_default = is_default
        self._watcher: _StatusWatcher | None = None
        if status_interval_s > 0:
            self._watcher = _StatusWatcher(self.endpoints["client"], status_interval_s, token,
                                           server_key)
            self._watcher.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def client_endpoint(self) -> str:
        return self.endpoints["client"]

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """
        Stop the node gracefully (SIGTERM, then SIGKILL after `timeout_s`).

        Returns:
            The supervisor's exit status.
        """
        if self._watcher is not None:
            self._watcher.stop()
        if self._is_default and default_client() is self.client:
            disconnect()
        else:
            self.client.close()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("embedded node did not stop in time, killing pid=%d", self.pid)
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        if self._process.stdout is not None:
            self._process.stdout.close()
        return self._process.returncode

    def __enter__(self) -> EmbeddedNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    config: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] = "concord-data",
    node_id: str = "node",
    read_workers: int = 1,
    ready_timeout_s: float = 60.0,
    set_default: bool = True,
    stderr: str | os.PathLike[str] | None = None,
    status_interval_s: float = 5.0,
) -> EmbeddedNode:
    """
    Start a node as a child process and wait until it serves.

    Args:
        config: a node config file (docs/operations.md). When None, a single node on
            127.0.0.1 with OS-chosen ports is configured from the arguments below.
        data_dir: where the node keeps its log and snapshots (without `config`).
        node_id: the node's id (without `config`).
        read_workers: read worker processes (without `config`).
        ready_timeout_s: how long to wait for the ready line.
        set_default: also make the node's client the default of `concord.put/get/...`.
        stderr: a file for the node's log lines; default: discarded after start-up.
        status_interval_s: how often the node's status is read for the `concord.node.*`
            telemetry events while a handler is attached to one (0: never).

    Returns:
        The running node.

    Raises:
        EmbeddedNodeError: the node exited or did not become ready in time; the message
            names the reason from its log.
    """
    pass_fds: tuple[int, ...] = ()
    if config is None:
        # The generated config travels through a pipe the node inherits and reads once
        # at start-up: a temp file would outlive an application killed before stop().
        text = _single_node_config(node_id, Path(data_dir).resolve(), read_workers).encode()
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, text)  # NB: far below the pipe's buffer: never blocks
        finally:
            os.close(write_fd)
        pass_fds = (read_fd,)
        config_path = f"/dev/fd/{read_fd}"
    else:
        config_path = str(Path(config))
    log_file: IO[bytes] = open(stderr, "ab") if stderr is not None else tempfile.TemporaryFile()
    with log_file:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "concord.supervisor", "--config", config_path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                pass_fds=pass_fds,
                preexec_fn=_die_with_parent,
            )
        finally:
            for fd in pass_fds:
                os.close(fd)
        try:
            fields = _wait_ready(process, ready_timeout_s)
        except EmbeddedNodeError as exc:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()
            raise EmbeddedNodeError(f"{exc}{_log_tail(log_file, stderr is None)}") from None
    node = fields.pop("node", node_id)
    token, server_key = _credentials(config, process)
    client = (connect(fields["client"], token=token, server_key=server_key) if set_default
              else Client(fields["client"], token=token, server_key=server_key))
    return EmbeddedNode(process, node, fields, client, set_default, status_interval_s, token,
                        server_key)


def _credentials(config: str | os.PathLike[str] | None,
                 process: subprocess.Popen[bytes]) -> tuple[str | None, str | None]:
    """
    What the application's client speaks as (concord.credentials): its config's bootstrap
    token and client endpoint key, or (None, None). The application owns the node's config.
    """
    if config is None:
        return None, None
    try:
        return credentials.node_credentials(Path(config))
    except ConfigError as exc:  # the node read it a moment ago: changed since
        process.kill()
        process.wait()
        raise EmbeddedNodeError(f"cannot read the node's token or key: {exc}") from None


_NODE_EVENTS = ("concord.node.status", "concord.node.state_change", "concord.node.snapshot")


class _StatusWatcher:
    """The thread behind the `concord.node.*` telemetry events (module docstring)."""

    def __init__(self, endpoint: str, interval_s: float, token: str | None = None,
                 server_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.interval_s = interval_s
        self.token = token
        self.server_key = server_key
        self._stop = threading.Event()
        self._previous: dict[str, object] | None = None
        self._thread = threading.Thread(target=self._run, name="concord-node-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not any(telemetry.listening(e) for e in _NODE_EVENTS):
                continue
            try:
                status = self._status()
            except ConcordError as exc:
                log.debug("embedded node status failed endpoint=%s error=%s", self.endpoint, exc)
                continue
            self.observe(status)

    def _status(self) -> dict[str, object]:
        from concord.client.raw import request  # noqa: PLC0415
        from concord.net.curve import CurveClient  # noqa: PLC0415

        timeout_ms = int(max(0.1, min(self.interval_s, 2.0)) * 1000)
        msg: dict[str, object] = {"op": "status"}
        if self.token is not None:
            msg["token"] = self.token
        reply = request(self.endpoint, msg, timeout_ms=timeout_ms,
                        curve=CurveClient.of(self.server_key))
        if reply.get("ok") is not True:
            raise EmbeddedNodeError(f"status failed: {reply.get('error')}")
        return reply

    def observe(self, status: Mapping[str, object]) -> None:
        """Emit the events one status reply calls for (compared with the previous one)."""
        previous, self._previous = self._previous, dict(status)
        node = status.get("node")
        members = status.get("members")
        telemetry.emit("concord.node.status", {
            "term": _number(status, "term"), "commit": _number(status, "commit"),
            "applied": _number(status, "applied"), "keys": _number(status, "keys"),
            "db_bytes": _number(status, "db_bytes"),
            "members": float(len(members)) if isinstance(members, list) else 0.0,
        }, {"node": node, "role": status.get("role"), "leader": status.get("leader"),
            "cluster_id": status.get("cluster_id")})
        if previous is None:
            return
        if any(previous.get(k) != status.get(k) for k in ("role", "leader", "term")):
            telemetry.emit("concord.node.state_change", {"term": _number(status, "term")}, {
                "node": node, "role": status.get("role"), "leader": status.get("leader"),
                "previous_role": previous.get("role"), "previous_leader": previous.get("leader"),
                "previous_term": previous.get("term")})
        if _number(status, "snapshot_index") > _number(previous, "snapshot_index"):
            telemetry.emit("concord.node.snapshot", {"index": _number(status, "snapshot_index")},
                           {"node": node, "previous_index": previous.get("snapshot_index")})


def _number(status: Mapping[str, object], key: str) -> float:
    value = status.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _log_tail(log_file: IO[bytes], readable: bool) -> str:
    """The last lines the node logged, for an error message (': ...' or '')."""
    if not readable:
        return ""
    log_file.seek(0)
    tail = log_file.read()[-2000:].decode(errors="replace").strip()
    return f": {tail}" if tail else ""


def _wait_ready(process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, str]:
    """Read the supervisor's stdout until its ready line."""
    # NB: imported here, not at the top: `import concord` must work for client-only
    # users even when PyPI's supervisord shadows the `supervisor` package.
    import concord.supervisor_clash  # noqa: F401  (first: names a supervisord clash)
    from supervisor.readiness import ReadinessProtocolError, parse_ready_line

    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedNodeError(f"node did not become ready within {timeout_s}s")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                code = process.wait()
                raise EmbeddedNodeError(f"node exited with status {code} before it was ready")
            buffer += chunk
            if b"\n" in buffer:
                line = buffer.split(b"\n", 1)[0].decode(errors="replace")
                try:
                    _, fields = parse_ready_line(line)
                except ReadinessProtocolError as exc:
                    raise EmbeddedNodeError(f"unexpected first line from node: {line!r}") from exc
                return fields
