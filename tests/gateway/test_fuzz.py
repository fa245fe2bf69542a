"""
Fuzzing the gateway of a real node with generated requests (hypothesis, derandomized):
whatever the method, path, query, headers or body, the answer is never a 5xx other
than the documented 503/504 and always an error body with a known code, and malformed
input changes nothing.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from concord.gateway import codec
from concord.gateway.routes import ROUTES
from tests.gateway.httpkit import HTTP_SETTINGS, Http
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_CODES = set(codec.ERROR_STATUS) | set(codec.GATEWAY_ERRORS)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_segment = st.text(max_size=12).map(lambda s: quote(s, safe="")) | st.sampled_from(["%FF", "%", "a%2Fb"])


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    route = draw(st.sampled_from(ROUTES))
    path = "/".join(draw(_segment) if part.startswith("{") else part for part in route.path.split("/"))
    method = draw(st.sampled_from([route.method, route.method, "GET", "POST", "PATCH"]))
    if route.path == "/watch":
        method = "PUT"  # a stream never ends by itself: only its refusals are fuzzed here
    names = st.sampled_from(["key", "limit", "where", "range", "consistency", "since_revision",
                             "expected", "value", "meta", "x"])
    query = draw(st.dictionaries(names, st.text(max_size=10) | _json.map(json.dumps), max_size=3))
    if query:
        path += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    body = draw(st.none() | _json.map(lambda v: json.dumps(v).encode())
                | st.dictionaries(names, _json, max_size=4).map(lambda v: json.dumps(v).encode())
                | st.binary(max_size=20))
    headers = draw(st.dictionaries(st.sampled_from(["If-Match", "If-None-Match", "Authorization",
                                                    "Content-Type", "Last-Event-ID"]),
                                   st.sampled_from(["*", '"1"', "Bearer x", "Basic y", "",
                                                    "application/msgpack", "7:1", "nope"]),
                                   max_size=2))
    return method, path, body, headers


@pytest.mark.timeout(300)
def test_gateway_never_fails_with_a_server_error_when_fuzzed(cluster) -> None:  # type: ignore[no-untyped-def]
    """No 500: every answer is 200 or an error body whose code has the status of the table."""
    c: Cluster = cluster(n=1, http=HTTP_SETTINGS)
    h = Http(c.nodes[c.ids[0]].endpoints["http"], validate=False)

    @settings(max_examples=300, derandomize=True, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_requests())
    @example(("PUT", "/kv/big", b'{"value": 1180591620717411303424}', {}))  # beyond msgpack's 64 bits
    def check(request: tuple[str, str, bytes | None, dict[str, str]]) -> None:
        method, path, body, headers = request
        reply = h.request(method, path, raw=body if body is not None else b"", headers=headers)
        if reply.status == 200:
            return
        error = reply.body
        assert error["error"] in _CODES, (request, reply)
        assert codec.status_of(str(error["error"])) == reply.status, (request, reply)
        assert reply.status not in (500, 502), (request, reply)

    try:
        check()
    finally:
        h.close()
