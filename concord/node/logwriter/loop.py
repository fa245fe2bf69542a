"""
The log writer process: its poll loop and entry point.

The loop drains requests into one group commit (`LogWriter.handle_batch`), sends the
replies and retries a failed flush when the writer core says it is due. It decides
nothing else.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import zmq

from concord.errors import ProtocolError, StorageError
from concord.metrics import node as metrics
from concord.node.logwriter.ipc import FAILED, _msg
from concord.node.logwriter.state import LogWriter, WriterSettings

__all__ = ["run_log_writer", "serve"]

logger = logging.getLogger("concord.node.log_writer")


def serve(writer: LogWriter, endpoint: str, stop: threading.Event | None = None) -> None:
    """
    The writer's loop: drain requests, group-commit, reply.

    Runs until a STOP request, `stop` being set, or SIGTERM (when run as a process).
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        running = True
        max_batch = writer.settings.max_batch_requests
        while running and not (stop is not None and stop.is_set()):
            timeout = 200
            retry_at = writer.retry_due
            if retry_at is not None:
                timeout = min(timeout, max(0, int((retry_at - time.monotonic()) * 1000)))
            events = dict(poller.poll(timeout))
            if sock in events:
                running = writer.handle_batch(_drain(sock, max_batch))
            retry_at = writer.retry_due
            if retry_at is not None and time.monotonic() >= retry_at:
                writer.flush()
            _send_outbox(writer, sock)
    except (StorageError, ProtocolError) as exc:
        # NB: logged once, by the process's top level (run_log_writer)
        try:
            sock.send(_msg(FAILED, str(exc)), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        raise
    finally:
        writer.close()
        sock.close(0)
        ctx.term()


def _drain(sock: zmq.Socket[bytes], max_batch: int) -> list[bytes]:
    """Every request waiting now, up to `max_batch`: one group commit."""
    frames: list[bytes] = []
    while len(frames) < max_batch:
        try:
            frames.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            break
    return frames


def _send_outbox(writer: LogWriter, sock: zmq.Socket[bytes]) -> None:
    for reply in writer.outbox:
        sock.send(reply)
    writer.outbox.clear()
    metrics.flush_due()


def run_log_writer(
    data_dir: str,
    endpoint: str,
    settings: WriterSettings | None = None,
) -> None:
    """
    Process entry point (a multiprocessing target): recover `data_dir`, then serve
    `endpoint` (e.g. "ipc:///run/concord/n1-writer.sock") until STOP, SIGTERM or SIGINT
    (graceful: everything handled so far is already flushed).

    Exits non-zero (after one ERROR line) if recovery finds corruption or the disk fails.
    """
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        writer = LogWriter(Path(data_dir), settings or WriterSettings())
        serve(writer, endpoint, stop)
    except (StorageError, ProtocolError, ValueError) as exc:
        logger.error("log writer failed data_dir=%s error=%s", data_dir, exc)
        raise SystemExit(1) from exc
    except Exception as exc:  # the process's top level: log once, exit non-zero
        logger.exception("log writer crashed data_dir=%s", data_dir)
        raise SystemExit(1) from exc
