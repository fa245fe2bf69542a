"""
HTTP for the gateway tests: one request with http.client (keep-alive), and a check of
every response against the gateway's OpenAPI document with openapi-core.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from concord.errors import ClientError
from concord.gateway.openapi import document
from concord.gateway.routes import API, ROUTES

HTTP_SETTINGS = {"enabled": True, "port": 0, "request_timeout_s": 2.0}


def key_path(key: str, suffix: str = "") -> str:
    """/kv/<key as one percent-encoded segment>[suffix]."""
    return f"/kv/{quote(key, safe='')}{suffix}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    data: bytes

    @property
    def json(self) -> object:
        return json.loads(self.data)

    @property
    def body(self) -> dict[str, object]:
        value = self.json
        assert isinstance(value, dict), value
        return value


@dataclass
class _Req:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    path_pattern: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Resp:
    status_code: int
    headers: Headers
    content_type: str
    data: bytes


def _pattern(method: str, raw_path: str) -> tuple[str, dict[str, str]]:
    from concord.gateway.app import Router

    if raw_path == API + "/openapi.json":
        return raw_path, {}
    try:
        found = Router(ROUTES).match(method, raw_path.encode())
    except ClientError:  # a path parameter that is not UTF-8: the route is still /kv/{key}
        return API + "/kv/{key}", {"key": raw_path.rsplit("/", 1)[1]}
    assert not isinstance(found, str), f"{method} {raw_path}: {found}"
    route, params = found
    return API + route.path, params


class Http:
    """Requests to one gateway; every response is validated against the OpenAPI document."""

    def __init__(self, url: str, validate: bool = True) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        self.openapi = OpenAPI.from_dict(dict(document())) if validate else None
        self.checked = 0

    def close(self) -> None:
        self.conn.close()

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> Reply:
        """`path` is under /api/v1 (query string included)."""
        full = API + path if not path.startswith("/api/") else path
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            self.conn.request(method, full, body=data, headers=hdrs)
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.request(method, full, body=data, headers=hdrs)
            resp = self.conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        self._validate(method, full, data, hdrs, reply)
        return reply

    def _validate(self, method: str, full: str, data: bytes | None, hdrs: dict[str, str], reply: Reply) -> None:
        if self.openapi is None or reply.headers.get("content-type", "") != "application/json":
            return
        raw_path, _, query = full.partition("?")
        if reply.body.get("error") in ("no_route", "method_not_allowed"):
            return  # no operation to check against
        pattern, params = _pattern(method, raw_path)
        req = _Req(f"http://{self.host}:{self.port}", raw_path, method.lower(), data,
                   hdrs.get("Content-Type", "").lower(), pattern,
                   RequestParameters(query=ImmutableMultiDict(parse_qsl(query, keep_blank_values=True)),
                                     header=Headers(hdrs), path=params))
        resp = _Resp(reply.status, Headers(reply.headers), "application/json", reply.data)
        self.openapi.validate_response(req, resp)
        self.checked += 1
