"""A Server-Sent Events reader for the tests (what a browser's EventSource does)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class SseEvent:
    id: str
    type: str
    data: dict[str, object]


class SseStream:
    """One watch stream; `last_id` is what a browser would send as Last-Event-ID."""

    def __init__(self, url: str, path: str, last_id: str | None = None, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout_s)
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.last_id = last_id

    def close(self) -> None:
        self.conn.close()

    def events(self) -> Iterator[SseEvent]:
        """Events as they come; ends when the stream ends or breaks."""
        kind, event_id = "message", None
        data: list[str] = []
        while True:
            try:
                raw = self.response.readline()
            except (OSError, http.client.HTTPException, socket.timeout):
                return
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if event_id is not None:
                    self.last_id = event_id
                if data:
                    yield SseEvent(self.last_id or "", kind, json.loads("\n".join(data)))
                kind, data, event_id = "message", [], None
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "event":
                kind = value
            elif name == "data":
                data.append(value)
