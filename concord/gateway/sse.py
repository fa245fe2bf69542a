"""
`GET /api/v1/watch?prefix=&since=`: the change stream as Server-Sent Events, through the
Python subscriber (concord.client.subscribe.Subscription: the same gap-free catch-up by
revision, so a browser sees every change under its prefix once, in revision order).

Each change is one SSE event (docs/http.md "Watch"):

    id: <revision>            the change completes its revision (the usual case)
    id: <revision>:<i>        change i (0-based) of a bulk revision that has more
    event: put | delete | expire | touch
    data: {"type", "key", "value", "revision", "ts", "ttl", "i", "n"}

A client that reconnects with `Last-Event-ID` (browsers do it by themselves) resumes
right after that change: `R` from revision R + 1, `R:i` from change i + 1 of R. The
first lines of a stream carry an id alone (the revision it starts after), so a client
that saw no change yet resumes without a gap too. When the node no longer holds the
history to resume from, the stream answers 410 `compacted` (before the stream starts)
or an `error` event (after).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from concord.aio import AsyncSubscription
from concord.client.results import Event
from concord.client.subscribe import Subscription
from concord.errors import ClientError, CompactedError, ConfigError, InvalidRequestError, ProtocolError
from concord.gateway.responses import error_response

if TYPE_CHECKING:
    from concord.gateway.app import Gateway

__all__ = ["event_id", "parse_event_id", "watch"]

log = logging.getLogger(__name__)

#: A comment line goes out after this long without a change (proxies close idle streams).
KEEPALIVE_S = 15.0
#: How long one wait for a change lasts before the server's shutdown is checked.
SLICE_S = 0.25


def event_id(event: Event) -> str:
    """The SSE id of a change: its position (module docstring)."""
    if event.batch_index + 1 >= event.batch_size:
        return str(event.revision)
    return f"{event.revision}:{event.batch_index}"


def parse_event_id(text: str) -> tuple[int, int | None]:
    """
    (revision, batch index or None for a complete revision) of an SSE id.

    Raises:
        InvalidRequestError: not `R` or `R:i` with non-negative integers.
    """
    revision, sep, index = text.strip().partition(":")
    if not revision.isdigit() or (sep and not index.isdigit()):
        raise InvalidRequestError(f"Last-Event-ID must be <revision> or <revision>:<i>, got {text!r}")
    return int(revision), (int(index) if sep else None)


def _start(request: Request) -> tuple[str, int | None, tuple[int, int | None] | None]:
    """(prefix, since_revision for the subscriber, position to skip up to)."""
    allowed = {"prefix", "since"}
    for name in request.query_params:
        if name not in allowed:
            raise InvalidRequestError(f"watch does not take query parameter {name!r}")
    prefix = request.query_params.get("prefix", "")
    last = request.headers.get("last-event-id")
    if last is not None and last.strip():
        revision, index = parse_event_id(last)
        if index is None:
            return prefix, revision, None
        return prefix, max(0, revision - 1), (revision, index)
    since = request.query_params.get("since")
    if since is None:
        return prefix, None, None
    if not since.isdigit():
        raise InvalidRequestError(f"query parameter since must be a non-negative integer, got {since!r}")
    return prefix, int(since), None


def _frame(event: Event) -> bytes:
    data = {"type": event.type, "key": event.key, "value": event.value, "revision": event.revision,
            "ts": event.ts, "ttl": event.ttl, "i": event.batch_index, "n": event.batch_size}
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_default)
    return f"id: {event_id(event)}\nevent: {event.type}\ndata: {text}\n\n".encode()


def _default(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


async def watch(gateway: Gateway, request: Request, token: str | None) -> Response:
    """The watch response: 200 and a stream, or an error before it starts."""
    accept = request.headers.get("accept", "")
    prefix, since, skip = _start(request)
    loop = asyncio.get_running_loop()
    make = partial(Subscription, gateway.settings.client_endpoint, prefix=prefix,
                   since_revision=since, token=token, timeout_s=gateway.settings.timeout_s)
    try:
        sub = await loop.run_in_executor(None, make)
    except CompactedError as exc:
        return error_response("compacted", str(exc), accept)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from None
    first_id = request.headers.get("last-event-id", "").strip() or str(sub.revision)
    stream = _stream(gateway, AsyncSubscription(sub, slice_s=SLICE_S), first_id, skip)
    return StreamingResponse(stream, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(gateway: Gateway, sub: AsyncSubscription, first_id: str,
                  skip: tuple[int, int | None] | None) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    try:
        yield f"retry: 1000\nid: {first_id}\n\n".encode()
        quiet_since = loop.time()
        while not gateway.settings.stopping():
            try:
                event = await sub.next(SLICE_S)
            except (CompactedError, ClientError, ProtocolError) as exc:
                code = "compacted" if isinstance(exc, CompactedError) else getattr(exc, "code", "bad_gateway")
                body = json.dumps({"error": code, "message": str(exc), "leader": None})
                yield f"event: error\ndata: {body}\n\n".encode()
                return
            if event is None:
                if loop.time() - quiet_since >= KEEPALIVE_S:
                    quiet_since = loop.time()
                    yield b": keepalive\n\n"
                continue
            if skip is not None and event.revision == skip[0] and skip[1] is not None \
                    and event.batch_index <= skip[1]:
                continue  # delivered before the client reconnected
            quiet_since = loop.time()
            yield _frame(event)
    finally:
        await sub.aclose()
