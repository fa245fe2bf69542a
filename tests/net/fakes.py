"""
Fake backends and peer processes for the net tests.

Echo backends answer every request with who served it; the key "silent" is never
answered and the key "flaky" only on its second delivery (for timeout and retry tests);
a read backend hands the key "handoff" back to the front door (for the raft worker), and
a raft backend answers every read barrier at once with index 0.
Process entry points create their own zmq context, report readiness on a pipe, and
exit when the pipe says "stop" or closes (a lifeline if the test runner dies).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Callable, Sequence

import zmq

from concord.errors import ClientError
from concord.ids import NodeId
from concord.net.backend import BackendLink, pack_barrier_answer
from concord.net.door_reads import InlineReads
from concord.net.frontdoor import FrontDoor, FrontDoorOptions
from concord.net.observer import DoorObserver
from concord.net.peer import PeerOptions, PeerTransport
from concord.net.wire import Backend, decode_request, ok_reply, reply_for_error

Context = zmq.Context[zmq.Socket[bytes]]

# Spawn: the test process holds a zmq context and threads, so it must never fork.
MP = multiprocessing.get_context("spawn")


def run_echo_backend(
    ctx: Context,
    endpoint: str,
    role: str,
    name: str,
    should_stop: Callable[[], bool],
    extra_fd: int | None = None,
) -> None:
    """Serve echo replies until should_stop() (checked at least every 20 ms)."""
    seen: dict[str, int] = {}
    with BackendLink(ctx, endpoint, Backend(role), name, heartbeat_interval_s=0.05) as link:
        poller = zmq.Poller()
        link.register(poller)
        if extra_fd is not None:
            poller.register(extra_fd, zmq.POLLIN)
        while not should_stop():
            timeout_s = min(0.02, max(0.0, link.next_deadline() - time.monotonic()))
            poller.poll(math.ceil(timeout_s * 1000))
            link.service_timers(time.monotonic())
            while (req := link.recv()) is not None:
                if req.barrier:  # the door's read barrier: at once, at index 0
                    link.answer_barrier(req.token, pack_barrier_answer(0))
                    continue
                try:
                    request = decode_request(req.payload)
                except ClientError as exc:
                    link.reply(req.token, reply_for_error(exc))
                    continue
                key = request.args.get("key")
                if key == "silent":
                    continue
                if key == "handoff" and role == "read":
                    link.hand_off(req.token, req.payload)
                    continue
                if key == "flaky":
                    seen["flaky"] = seen.get("flaky", 0) + 1
                    if seen["flaky"] < 2:
                        continue
                link.reply(req.token, ok_reply(request.id, {
                    "backend": name, "role": role, "op": request.op, "pid": os.getpid(),
                    "consistency": request.consistency,
                }))


def echo_backend_main(endpoint: str, role: str, name: str, conn: Connection) -> None:
    """Process entry point for an echo backend."""
    ctx: Context = zmq.Context()
    stop = False

    def should_stop() -> bool:
        nonlocal stop
        try:
            if not stop and conn.poll(0):
                stop = conn.recv() == "stop"
        except (EOFError, OSError):
            stop = True
        return stop

    try:
        conn.send("ready")
        run_echo_backend(ctx, endpoint, role, name, should_stop, conn.fileno())
    finally:
        ctx.term()


class EchoThread:
    """An echo backend on a thread of the test process (fast unit tests)."""

    def __init__(self, ctx: Context, endpoint: str, role: str, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=run_echo_backend, args=(ctx, endpoint, role, name, self._stop.is_set), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        assert not self._thread.is_alive()


class ChildProcess:
    """A spawned child with a control pipe; stop() ends it by its own pid, always reaped."""

    def __init__(self, target: Callable[..., None], *args: object) -> None:
        self.conn, child_conn = MP.Pipe()
        self.process: BaseProcess = MP.Process(target=target, args=(*args, child_conn), daemon=True)
        self.process.start()
        child_conn.close()

    def recv(self, timeout_s: float = 30.0) -> object:
        if not self.conn.poll(timeout_s):
            raise AssertionError(f"child pid={self.process.pid} sent nothing within {timeout_s}s")
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()
        assert self.process.exitcode is not None

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5.0)
        assert self.process.exitcode is not None


def peer_echo_main(
    node_id: str, bind: str, peers: dict[str, str], faults: bool, conn: Connection
) -> None:
    """
    Process entry point: a PeerTransport that echoes DATA back as b"echo:" + payload.

    Control pipe: a dict is a fault command (answered with ("ok", result) or
    ("error", message)); "stop" or EOF ends the process.
    """
    ctx: Context = zmq.Context()
    try:
        options = PeerOptions(reconnect_ivl_ms=10, reconnect_ivl_max_ms=100, faults_enabled=faults)
        with PeerTransport(ctx, NodeId(node_id), bind,
                           {NodeId(k): v for k, v in peers.items()}, options) as transport:
            conn.send(("ready", transport.endpoint))
            poller = zmq.Poller()
            transport.register(poller)
            poller.register(conn.fileno(), zmq.POLLIN)
            while True:
                timeout_s = max(0.0, transport.next_deadline() - time.monotonic())
                poller.poll(math.ceil(timeout_s * 1000))
                transport.service_timers(time.monotonic())
                while (msg := transport.recv()) is not None:
                    transport.send(msg[0], b"echo:" + msg[1])
                try:
                    if conn.poll(0):
                        cmd = conn.recv()
                        if not isinstance(cmd, dict):
                            return
                        try:
                            conn.send(("ok", transport.apply_fault_command(cmd)))
                        except ClientError as exc:
                            conn.send(("error", exc.message))
                except (EOFError, OSError):
                    return
    finally:
        ctx.term()


def ipc_endpoint() -> str:
    return f"ipc:///tmp/concord-test-{os.getpid()}-{uuid.uuid4().hex[:8]}.ipc"


class DoorThread:
    """A FrontDoor served on a thread of the test process."""

    def __init__(
        self,
        ctx: Context,
        backend_endpoint: str | None = None,
        max_request_bytes: int = 4096,
        observers: Sequence[DoorObserver] = (),
        inline: InlineReads | None = None,
        **overrides: object,
    ) -> None:
        options = FrontDoorOptions(
            client_endpoint="tcp://127.0.0.1:0",
            backend_endpoint=backend_endpoint or ipc_endpoint(),
            max_request_bytes=max_request_bytes,
            **overrides,  # type: ignore[arg-type]
        )
        self.door = FrontDoor(ctx, options, observers=observers, inline=inline)
        self.endpoint = self.door.client_endpoint
        self.backend_endpoint = self.door.backend_endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.door.serve, args=(self._stop.is_set, 10.0), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        assert not self._thread.is_alive()
        self.door.close()
