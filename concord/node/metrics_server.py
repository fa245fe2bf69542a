"""
The `metrics` process: one HTTP endpoint serving every node process's metrics, merged.

The supervisor creates the multiprocess directory empty before its first fork
(concord.supervisor.NodeLayout.setup) and removes it at exit; every metered child runs
`metered(directory, process_id, target)` so its samples land in files named after its
stable id (concord.metrics.recorder). This process writes nothing: on each GET it merges
the files (prometheus_client's MultiProcessCollector) and answers in the Prometheus text
format (0.0.4). It serves any path; the documented one is `/metrics`.

A separate supervised process (one_for_one), not a thread of the supervisor (which must
stay single-threaded because it forks) nor of a worker (a slow scrape must never hold up
the raft loop or the front door). It is READY once bound: `metrics=http://HOST:PORT/metrics`
on the ready line; with `[metrics] port = 0` the OS picks the port, and a restart
rebinds the same one.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from concord.config import NodeConfig
from concord.errors import ConfigError
from concord.metrics.recorder import RECORDER

__all__ = ["metered", "metrics_main", "MetricsServer"]

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
    from wsgiref.types import WSGIApplication

logger = logging.getLogger(__name__)


def metered(directory: Path, process_id: str, target: Callable[..., object]) -> Callable[..., object]:
    """`target`, run with this process's metrics set up first (a supervisor child target)."""

    def run(*args: object) -> object:
        RECORDER.setup(process_id, directory)
        return target(*args)

    run.__name__ = getattr(target, "__name__", "metered")
    return run


def _make_wsgi_server(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    """The bound HTTP server: no access log on stderr (a scrape every few seconds would
    flood it), address reuse, IPv6 hosts. NB: wsgiref (http.server, email, ssl) is
    imported here, in the metrics process only, not at every node's start."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server  # noqa: PLC0415

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(WSGIServer):
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return make_server(host, port, app, server_class=Server,
                       handler_class=QuietHandler)


class MetricsServer:
    """The bound HTTP server over the merged files of `directory`."""

    def __init__(self, host: str, port: int, directory: Path) -> None:
        from prometheus_client import CollectorRegistry, make_wsgi_app  # noqa: PLC0415
        from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        try:
            self.httpd = _make_wsgi_server(host, port, make_wsgi_app(registry))
        except OSError as exc:
            raise ConfigError(f"metrics.port: cannot listen on {host} port {port}: "
                              f"{exc.strerror or exc}") from exc
        self.port = int(self.httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/metrics"

    def serve(self, should_stop: Callable[[], bool], poll_s: float = 0.2) -> None:
        """Answer scrapes one at a time until `should_stop()` (checked every `poll_s`)."""
        self.httpd.timeout = poll_s
        while not should_stop():
            self.httpd.handle_request()

    def close(self) -> None:
        self.httpd.server_close()


def metrics_main(config: NodeConfig, directory: Path) -> None:
    """The `metrics` child: bind, report READY, serve until SIGTERM."""
    from supervisor import notify_ready, previous_info  # noqa: PLC0415

    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    port = config.metrics.port or int(str(previous_info().get("metrics_port", 0)))
    try:
        server = MetricsServer(config.member.host, port, directory)
    except ConfigError as exc:
        logger.error("metrics server cannot start node=%s: %s", config.node.id, exc)
        raise SystemExit(1) from exc
    try:
        notify_ready({"metrics": server.url, "metrics_port": server.port})
        server.serve(stop.is_set)
    finally:
        server.close()
