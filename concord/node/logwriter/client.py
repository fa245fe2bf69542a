"""
The raft worker's side of the log writer: `LogWriterClient`, the driver's LogSink.

It sends the requests of concord.node.logwriter.ipc over a ZeroMQ PAIR and turns the
writer's replies into events (`Persisted`, `DiskStatus`, ...). It
decides nothing: the raft worker feeds the events to the driver and the node core.
"""

from __future__ import annotations

import time
from typing import Sequence

import zmq

from concord.storage import codec
from concord.errors import ProtocolError, StorageError
from concord.node.logwriter.ipc import (
    FAILED,
    HELLO,
    READY,
    STATS,
    STOP,
    TRACE,
    HelloAnswer,
    WriterEvent,
    _msg,
    _parse,
    decode_event,
    decode_recovered,
    encode_persist,
    encode_snapshot_taken,
)
from concord.raft.messages import Entry, Snapshot, SnapshotMeta
from concord.raft.state import HardState

__all__ = ["LogWriterClient"]


class LogWriterClient:
    """
    The raft worker's handle on the writer: implements the driver's LogSink protocol.

    `persist()` only sends; acknowledgements arrive later through `recv()`. Register
    `socket` with a zmq.Poller (POLLIN) to wake up when the writer replies.

    Wiring in the raft worker (sketch):

        client = LogWriterClient(endpoint)
        recovered = client.handshake(timeout_s=30)     # read the snapshot file it names
        driver = Driver(..., log_sink=client)          # persist() goes to the writer
        # when poller says client.socket is readable:
        for event in client.recv():
            if isinstance(event, Persisted):
                driver.on_persisted(event.number)
        # once a forked child made a snapshot durable (concord.node.snapshot_fork):
        client.snapshot_taken(meta, state_hash)        # the writer compacts the WAL
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,  # type: ignore[type-arg]
        packer: codec.EntryPacker | None = None,
    ) -> None:
        """
        Args:
            packer: shared with the peer transport's encoder so an entry is packed once
                for the writer and every peer (None: pack per request).
        """
        self._ctx = context or zmq.Context.instance()
        self._packer = packer
        self.socket: zmq.Socket = self._ctx.socket(zmq.PAIR)  # type: ignore[type-arg]
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self._endpoint = endpoint

    def fileno(self) -> int:
        """The zmq notification fd (edge-triggered: drain `recv()` when it fires)."""
        fd = self.socket.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        return fd

    def handshake(self, timeout_s: float) -> HelloAnswer:
        """
        Ask the writer for the state it recovered (the snapshot by its meta: the caller
        reads the file).

        Raises:
            StorageError: no answer within `timeout_s`, or the writer failed.
        """
        self.socket.send(_msg(HELLO))
        reply = self._wait_for(READY, timeout_s)
        try:
            return decode_recovered(reply)
        except ProtocolError as exc:
            raise StorageError(f"log writer at {self._endpoint} sent a malformed reply: {exc}") from exc

    def persist(
        self,
        number: int,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        snapshot: Snapshot | None,
        must_sync: bool,
    ) -> None:
        """Send one Ready's durable part; `Persisted(number)` comes back through recv()."""
        self.socket.send(encode_persist(number, entries, hard_state, snapshot, must_sync, self._packer))

    def trace(self, number: int, traceparents: list[str]) -> None:
        """Announce that the PERSIST numbered `number` carries these sampled traces."""
        self.socket.send(_msg(TRACE, number, traceparents))

    def snapshot_taken(self, meta: SnapshotMeta, state_hash: int) -> None:
        """
        The worker's snapshot at `meta` is durable in <data_dir>/snap (SNAPSHOT_TAKEN):
        the writer prunes old snapshots and the WAL segments it covers.
        """
        self.socket.send(encode_snapshot_taken(meta, state_hash))

    def request_stats(self) -> None:
        self.socket.send(_msg(STATS))

    def stop(self) -> None:
        """Ask the writer to flush and exit 0 (it answers STOPPED)."""
        self.socket.send(_msg(STOP))

    def recv(self, timeout_ms: int = 0) -> list[WriterEvent]:
        """
        Every event available now (waiting up to `timeout_ms` for the first).

        Raises:
            StorageError: the writer reported a failure (FAILED), or spoke nonsense.
        """
        events: list[WriterEvent] = []
        if timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return events
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return events
            event = self._decode(frame)
            if event is not None:
                events.append(event)

    def _decode(self, frame: bytes) -> WriterEvent | None:
        try:
            return decode_event(frame)
        except ProtocolError as exc:
            raise StorageError(f"log writer at {self._endpoint} sent a malformed reply: {exc}") from exc

    def _wait_for(self, kind: int, timeout_s: float) -> list[object]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.socket.poll(remaining_ms, zmq.POLLIN):
                raise StorageError(f"log writer at {self._endpoint} did not answer within {timeout_s}s")
            frame = self.socket.recv()
            got, args = _parse(frame)
            if got == kind:
                return args
            if got == FAILED:
                raise StorageError(f"log writer failed: {args[0] if args else 'no reason given'}")

    def close(self) -> None:
        self.socket.close(0)
