"""
The gateway's ASGI application (Starlette): each HTTP request becomes ONE wire request
to this node's client endpoint through `concord.aio.Client`, and the reply becomes the
response (docs/http.md). Adapters translate, never decide: consistency,
auth and every error are the node's, exactly as over ZeroMQ.

- Routes come from concord.gateway.routes (one table); a key is one percent-encoded UTF-8
  path segment, matched on the raw path so that "%2F" stays inside the key.
- `not_leader` never reaches the client: the aio client follows the leader hint (the
  gateway forwards). Reads with `consistency=eventual` and the local routes (status,
  members, events, health, ready, watch) go to this node only, through a client that
  never follows a hint.
- `Authorization: Bearer <token>` is sent as the request's `token`: one pair of clients
  per token (least recently used ones closed beyond `max_tokens`).

Never imports the node's internals: only the client, the wire table and the errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import zmq.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from concord.aio import Client
from concord.client.client import explicit
from concord.errors import (
    ClientError,
    InvalidKeyError,
    InvalidRequestError,
    ProtocolError,
    UnauthorizedError,
)
from concord.gateway import codec, docs_page, sse
from concord.gateway.responses import client_error_response, error_response
from concord.gateway.routes import API, ROUTES, Route, Source, conditions, route_args

__all__ = ["Gateway", "GatewaySettings", "Upstream", "create_app"]

log = logging.getLogger(__name__)

_METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """
    Args:
        client_endpoint: this node's client ROUTER (tcp://host:port).
        timeout_s: deadline of each wire call (retries and forwarding included).
        max_body_bytes: longest request body read.
        max_tokens: bearer tokens with clients kept open at once.
        on_ready: called once the app has started (the supervised child's READY).
        stopping: tells long responses (watch) that the server is shutting down.
    """

    client_endpoint: str
    timeout_s: float = 5.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_tokens: int = 256
    on_ready: Callable[[], None] | None = None
    stopping: Callable[[], bool] = field(default=lambda: False)
    #: the node's client endpoint's CURVE public key ([curve] client_secret_key_file), or None
    server_key: str | None = None


class Upstream:
    """aio Clients to this node's client endpoint: per bearer token, a forwarding one and a local one."""

    def __init__(self, endpoint: str, timeout_s: float, max_tokens: int,
                 server_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.server_key = server_key
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self._ctx = zmq.asyncio.Context()
        self._pairs: OrderedDict[str | None, tuple[Client, Client]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def client(self, token: str | None, local: bool) -> Client:
        pair = self._pairs.get(token)
        if pair is None:
            pair = (
                Client(self.endpoint, token=token, context=self._ctx, timeout_s=self.timeout_s,
                       server_key=self.server_key),
                Client(self.endpoint, token=token, context=self._ctx, timeout_s=self.timeout_s,
                       max_redirects=0, server_key=self.server_key),
            )
            self._pairs[token] = pair
            while len(self._pairs) > self.max_tokens:
                _, old = self._pairs.popitem(last=False)
                for client in old:
                    task = asyncio.get_running_loop().create_task(client.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        else:
            self._pairs.move_to_end(token)
        return pair[1] if local else pair[0]

    async def close(self) -> None:
        for pair in self._pairs.values():
            for client in pair:
                await client.close()
        self._pairs.clear()
        if self._closing:
            await asyncio.wait(self._closing)
        self._ctx.term()


class Gateway:
    """What the handlers share: settings and the upstream clients (made at start-up)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        assert self._upstream is not None, "the gateway has not started"
        return self._upstream

    async def start(self) -> None:
        self._upstream = Upstream(self.settings.client_endpoint, self.settings.timeout_s,
                                  self.settings.max_tokens, self.settings.server_key)

    async def stop(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def call(self, token: str | None, op: str, args: Mapping[str, object], local: bool) -> dict[str, object]:
        """One wire call; the reply without `id` and `ok` (raises the reply's ClientError)."""
        codec.check_packable(args)
        # NB: explicit(): a JSON null is an argument (a stored nil, "never expire"), not "absent".
        sent = {name: explicit(value) for name, value in args.items()}
        reply = await self.upstream.client(token, local).call(op, sent)
        return {k: v for k, v in reply.items() if k not in ("id", "ok")}


# -- errors ---------------------------------------------------------------------------------


def bearer_token(request: Request) -> str | None:
    """
    The token of `Authorization: Bearer <token>`, None without the header.

    Raises:
        ClientError: (unauthorized) another scheme, or an empty token.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Authorization must be 'Bearer <token>'")
    return token.strip()


# -- routing --------------------------------------------------------------------------------


def _segment(raw: bytes, name: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        cls = InvalidKeyError if name == "key" else InvalidRequestError
        raise cls(f"path parameter {name} is not percent-encoded UTF-8") from None


class Router:
    """Matches a raw path (percent-encoding intact) against the route table."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._table = [(r, tuple((API + r.path).encode().split(b"/"))) for r in routes]

    def match(self, method: str, raw_path: bytes) -> tuple[Route, dict[str, str]] | str:
        """The route and its path parameters, or an error code (no_route, method_not_allowed)."""
        parts = raw_path.split(b"/")
        found_path = False
        for route, pattern in self._table:
            if len(pattern) != len(parts):
                continue
            params: dict[str, bytes] = {}
            for want, got in zip(pattern, parts):
                if want.startswith(b"{"):
                    params[want[1:-1].decode()] = got
                elif want != got:
                    break
            else:
                found_path = True
                if route.method == method:
                    return route, {k: _segment(v, k) for k, v in params.items()}
        return "method_not_allowed" if found_path else "no_route"


# -- handlers -------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InvalidRequestError(f"request body of {length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequestError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _query_args(request: Request, route: Route) -> dict[str, object]:
    declared = {a.name: a for a in route_args(route)}
    args: dict[str, object] = {}
    for name, text in request.query_params.multi_items():
        if name in args:
            raise InvalidRequestError(f"query parameter {name} is given more than once")
        arg = declared.get(name)
        if arg is None:
            # NB: the op table refuses it, with the same message as over the wire.
            args[name] = text
        else:
            args[name] = codec.parse_query_value(arg, text)
    return args


def _condition_headers(request: Request, route: Route, args: dict[str, object]) -> None:
    """If-Match: "<mod_revision>" and If-None-Match: * as put_if / delete_if conditions."""
    if route.conditional_op is None:
        return
    match = request.headers.get("if-match")
    none_match = request.headers.get("if-none-match")
    for name, value in (("mod_revision", match), ("absent", none_match)):
        if value is None:
            continue
        if name in args:
            raise InvalidRequestError(f"condition {name} is given twice (header and arguments)")
        text = value.strip()
        if name == "absent":
            if text != "*":
                raise InvalidRequestError(f"If-None-Match must be *, got {text!r}")
            args["absent"] = True
            continue
        etag = text[2:] if text.startswith("W/") else text
        etag = etag.strip('"')
        if not etag.isdigit():
            raise InvalidRequestError(f"If-Match must be an ETag \"<mod_revision>\", got {text!r}")
        args["mod_revision"] = int(etag)


async def _op_args(request: Request, route: Route, params: Mapping[str, str], limit: int) -> dict[str, object]:
    args: dict[str, object] = {}
    if route.source is Source.QUERY:
        args = _query_args(request, route)
    elif route.source is Source.BODY:
        body = await _read_body(request, limit)
        args = codec.decode_body(body, request.headers.get("content-type", codec.JSON))
    elif request.query_params:
        raise InvalidRequestError(f"{route.method} {API}{route.path} takes no query parameters")
    for name in params:
        if name in args:
            raise InvalidRequestError(f"argument {name} comes from the path, not the {route.source.value}")
    args.update(params)
    _condition_headers(request, route, args)
    return args


def _revision_headers(op: str, body: Mapping[str, object]) -> dict[str, str]:
    headers: dict[str, str] = {}
    revision = body.get("revision")
    if isinstance(revision, int):
        headers["X-Concord-Revision"] = str(revision)
        if op in ("get", "put", "put_if"):
            headers["ETag"] = f'"{revision}"'
    for name in ("version", "create_revision"):
        value = body.get(name)
        if op == "get" and isinstance(value, int):
            headers["X-Concord-" + name.replace("_", "-").title()] = str(value)
    return headers


async def op_response(gateway: Gateway, request: Request, route: Route, params: Mapping[str, str]) -> Response:
    """Translate one routed request to its wire op and the reply to the response."""
    accept = request.headers.get("accept", "")
    assert route.op is not None
    args = await _op_args(request, route, params, gateway.settings.max_body_bytes)
    wanted = set(conditions(route)) & set(args)
    op = route.conditional_op if wanted and route.conditional_op else route.op
    meta = True
    if op == "get":
        # NB: always asked, for the revision headers; `meta` only shapes the body.
        meta = args.pop("meta", False) is True
        args["meta"] = True
    local = route.local or args.get("consistency") == "eventual"
    body = await gateway.call(bearer_token(request), op, args, local)
    headers = _revision_headers(op, body)
    if not meta:
        body = {"value": body.get("value")}
    content, media = codec.encode(body, accept)
    return Response(content, 200, headers=headers, media_type=media)


async def health_response(gateway: Gateway, request: Request) -> Response:
    status = await gateway.call(bearer_token(request), "status", {}, local=True)
    content, media = codec.encode({"status": "alive", "node": status.get("node")},
                                  request.headers.get("accept", ""))
    return Response(content, 200, media_type=media)


async def ready_response(gateway: Gateway, request: Request) -> Response:
    accept = request.headers.get("accept", "")
    status = await gateway.call(bearer_token(request), "status", {}, local=True)
    leader, applied, commit = status.get("leader"), status.get("applied"), status.get("commit")
    node = status.get("node")
    if not isinstance(leader, str):
        return error_response("no_leader", f"node {node} knows no leader", accept)
    if not isinstance(applied, int) or not isinstance(commit, int) or applied < commit:
        return error_response("not_ready", f"node {node} applied {applied} of commit {commit}", accept)
    body = {"status": "ready", "node": node, "leader": leader, "applied": applied, "commit": commit}
    content, media = codec.encode(body, accept)
    return Response(content, 200, media_type=media)


def create_app(settings: GatewaySettings) -> Starlette:
    """The ASGI app: /api/v1/... (the route table), /api/v1/openapi.json, /api/docs."""
    gateway = Gateway(settings)
    router = Router(ROUTES)

    async def dispatch(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        try:
            found = router.match(request.method, raw_path.split(b"?", 1)[0])
            if isinstance(found, str):
                return error_response(found, f"no route {request.method} {request.url.path}", accept)
            route, params = found
            if route.path == "/watch":
                return await sse.watch(gateway, request, bearer_token(request))
            if route.path == "/health":
                return await health_response(gateway, request)
            if route.path == "/ready":
                return await ready_response(gateway, request)
            return await op_response(gateway, request, route, params)
        except ClientError as exc:
            return client_error_response(exc, accept)
        except ProtocolError as exc:
            log.warning("bad reply from the node path=%s error=%s", request.url.path, exc)
            return error_response("bad_gateway", str(exc), accept)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response("no_route", f"no route {request.method} {request.url.path}",
                              request.headers.get("accept", ""))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        if settings.on_ready is not None:
            settings.on_ready()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        *docs_page.routes(),
        StarletteRoute(API + "/{rest:path}", dispatch, methods=_METHODS),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    app.state.gateway = gateway
    return app
