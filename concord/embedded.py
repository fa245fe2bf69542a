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
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from concord.client import Client
from concord.client.api import connect, default_client, disconnect
from concord.errors import EmbeddedNodeError

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
    ) -> None:
        self._process = process
        self.node_id = node_id
        self.endpoints = endpoints
        self.client = client
        self._is_default = is_default

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
    client = connect(fields["client"]) if set_default else Client(fields["client"])
    return EmbeddedNode(process, node, fields, client, set_default)


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
