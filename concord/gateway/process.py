"""
The gateway process: a supervised child of the node (`http` in concord.supervisor's tree,
group `http`, one_for_one) that serves concord.gateway.app with uvicorn on `[http]`
`bind`:`port` and reports READY with `http=http://host:port` for the ready line.

Port 0 means any free port; a restarted gateway binds the port its first incarnation got
(supervisor.child.previous_info), so the URL on the ready line stays true. SIGTERM is a
graceful stop (open watch streams end within one slice, then uvicorn closes the
connections, at most `shutdown_timeout_s`); SIGINT is ignored as in every child (the
supervisor stops the tree in order).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import uvicorn

from concord.config import NodeConfig
from concord.credentials import client_server_key
from concord.gateway.app import GatewaySettings, create_app
from supervisor import notify_ready, previous_info

__all__ = ["run_gateway"]

log = logging.getLogger(__name__)

#: Threads for blocking work (the watch streams' subscribers wait in them).
EXECUTOR_THREADS = 64


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    # NB: proto IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets
    # whose proto says TCP, and without it every response (headers and body are two
    # writes) waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        log.error("http gateway cannot listen bind=%s port=%d: %s", bind, port, exc.strerror)
        raise SystemExit(1) from exc
    sock.set_inheritable(False)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_gateway(config: NodeConfig) -> None:
    """The `http` child: bind, serve until SIGTERM, exit 0."""
    http = config.http
    me = config.member
    bind = http.bind or me.host
    port = http.port or int(str(previous_info().get("http_port", 0)))
    sock = _listen(bind, port)
    real_port = int(sock.getsockname()[1])
    try:
        wildcard = ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        wildcard = False
    url = _url(me.host if wildcard else bind, real_port)
    server: uvicorn.Server | None = None

    def ready() -> None:
        # NB: inside uvicorn's signal capture: the child keeps ignoring SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(EXECUTOR_THREADS))
        notify_ready({"http": url, "http_port": real_port})
        log.info("http gateway serving url=%s node=%s", url, config.node.id)

    settings = GatewaySettings(
        client_endpoint=me.client_endpoint,
        timeout_s=http.request_timeout_s,
        max_body_bytes=4 * config.limits.max_request_bytes,
        on_ready=ready,
        stopping=lambda: server is not None and server.should_exit,
        server_key=client_server_key(config),  # a client of its node like any other
    )
    uv_config = uvicorn.Config(
        create_app(settings), log_config=None, log_level=config.logging.level.lower(),
        access_log=False,
        timeout_graceful_shutdown=max(1, int(config.supervisor.shutdown_timeout_s / 2)),
        lifespan="on", loop="asyncio", http="h11",
    )
    server = uvicorn.Server(uv_config)

    def on_term(signum: int, frame: FrameType | None) -> None:
        """uvicorn re-raises the SIGTERM it handled once it stopped: exit 0 then."""

    signal.signal(signal.SIGTERM, on_term)
    server.run(sockets=[sock])
    if not server.started:
        log.error("http gateway did not start url=%s", url)
        raise SystemExit(1)
