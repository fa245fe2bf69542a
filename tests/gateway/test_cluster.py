"""
Every route of the HTTP gateway through a real 3-node cluster, on the leader's gateway
and on a follower's: each answer equals what the wire protocol answers (a
`concord.Client` to the same node, which follows leader hints as the gateway does), each
error carries the wire's code with its HTTP status, and every response validates against
the OpenAPI document.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pytest

from concord.client.client import Client, explicit
from concord.errors import ClientError
from concord.gateway.codec import ERROR_STATUS
from concord.gateway.routes import ROUTES
from tests.gateway.httpkit import HTTP_SETTINGS, Http, Reply, key_path
from tests.helpers import wait_until
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextmanager
def _wire(cluster: Cluster, node: str) -> Iterator[Client]:
    client = Client(cluster.nodes[node].client, timeout_s=5.0, sessions=False)
    try:
        yield client
    finally:
        client.close()


def _wire_result(client: Client, op: str, args: Mapping[str, object]) -> tuple[int, dict[str, object]]:
    """(HTTP status the gateway must answer, body) for one wire call."""
    try:
        reply = client.call(op, {k: explicit(v) for k, v in args.items()})
    except ClientError as exc:
        return ERROR_STATUS[exc.code], {"error": exc.code}
    return 200, {k: v for k, v in reply.items() if k not in ("id", "ok")}


def _same(expected: tuple[int, dict[str, object]], got: Reply, approx: tuple[str, ...] = ()) -> None:
    status, body = expected
    assert status == got.status, got.data
    if status != 200:
        assert body["error"] == got.body["error"]
        return
    mine = dict(got.body)
    for name in approx:  # seconds left: both reads happen within a second
        a, b = body.pop(name, None), mine.pop(name, None)
        assert (a is None) == (b is None) and (a is None or math.isclose(a, b, abs_tol=1.0)), (a, b)  # type: ignore[arg-type]
    assert body == mine


def _reads(h: Http, wire: Client, p: str) -> list[tuple[str, Callable[[], None]]]:
    """Read routes, each compared with the wire op on the same node (no write in between)."""
    def check(op: str, args: Mapping[str, object], path: str, approx: tuple[str, ...] = (),
              method: str = "GET", body: object = None) -> Callable[[], None]:
        return lambda: _same(_wire_result(wire, op, args), h.request(method, path, body), approx)

    k = p + "k/1"
    return [
        ("get", check("get", {"key": k}, key_path(k))),
        ("get meta", check("get", {"key": k, "meta": True, "consistency": "strong"},
                           key_path(k, "?meta=true&consistency=strong"), ("ttl",))),
        ("get eventual", check("get", {"key": k, "consistency": "eventual"},
                               key_path(k, "?consistency=eventual"))),
        ("get absent", check("get", {"key": p + "absent"}, key_path(p + "absent"))),
        ("ttl", check("ttl", {"key": k}, key_path(k, "/ttl"), ("ttl",))),
        ("with_ttl", check("get_with_ttl", {"key": k}, key_path(k, "/with_ttl"), ("ttl",))),
        ("get_all", check("get_all", {"limit": 3, "after": p}, f"/kv?limit=3&after={p}")),
        ("get_many", check("get_many", {"keys": [k, p + "k/2", p + "absent"]}, "/bulk/get",
                           method="POST", body={"keys": [k, p + "k/2", p + "absent"]})),
        ("keys", check("keys", {"prefix": p, "limit": 2, "offset": 1},
                       f"/keys?prefix={p}&limit=2&offset=1")),
        ("query where", check("query", {"prefix": p, "where": ["ge", "n", 2]},
                              f"/query?prefix={p}&where=%5B%22ge%22%2C%22n%22%2C2%5D")),
        ("query range", check("query", {"range": [p + "k/2", None]},
                              f"/query?range=%5B%22{p}k%2F2%22%2Cnull%5D")),
        ("count", check("count", {"prefix": p}, f"/count?prefix={p}")),
        ("list_indexes", check("list_indexes", {}, "/indexes")),
        ("index_lookup", check("index_lookup", {"name": "by_n", "range": [1, 2]},
                               "/indexes/by_n/lookup?range=%5B1%2C2%5D")),
        ("events", check("events", {"since_revision": 0, "prefix": p, "limit": 3},
                         f"/events?since_revision=0&prefix={p}&limit=3")),
        ("members", check("members", {}, "/members")),
        ("bad arg", check("get", {"key": k, "bogus": 1}, key_path(k, "?bogus=1"))),
    ]


def _writes(h: Http, wire: Client, p: str) -> None:
    """Write routes: the reply's revision is the one the wire then reads back."""
    k1 = p + "k/1"

    def rev_of(key: str) -> int:
        meta = wire.get(key, consistency="strong", meta=True)
        return meta.revision

    r = h.request("PUT", key_path(k1), {"value": {"n": 1}, "ttl": 60})
    assert 200 == r.status and r.body["revision"] == rev_of(k1)
    assert f'"{r.body["revision"]}"' == r.headers["etag"]
    assert {"n": 1} == wire.get(k1, consistency="strong")
    for i in (2, 3, 4):
        assert 200 == h.request("PUT", key_path(f"{p}k/{i}"), {"value": {"n": i}}).status
    assert 200 == h.request("PUT", key_path(p + "nil"), {"value": None}).status
    assert wire.get(p + "nil", consistency="strong") is None
    # put_if: body conditions and If-Match / If-None-Match
    r = h.request("PUT", key_path(p + "lock"), {"value": "w7"}, {"If-None-Match": "*"})
    assert 200 == r.status
    assert 412 == h.request("PUT", key_path(p + "lock"), {"value": "w8", "absent": True}).status
    etag = r.headers["etag"]
    assert 412 == h.request("PUT", key_path(p + "lock"), {"value": "w9"}, {"If-Match": '"1"'}).status
    r = h.request("PUT", key_path(p + "lock"), {"value": "w9"}, {"If-Match": etag})
    assert 200 == r.status and "w9" == wire.get(p + "lock", consistency="strong")
    assert 200 == h.request("PUT", key_path(p + "lock"), {"value": "w10", "expected": "w9"}).status
    assert 200 == h.request("PUT", key_path(p + "lock"), {"value": "w11", "version": 3}).status
    # delete_if: query conditions and If-Match; delete
    assert 412 == h.request("DELETE", key_path(p + "lock", "?expected=%22w0%22")).status
    r = h.request("DELETE", key_path(p + "lock", "?expected=%22w11%22"))
    assert 200 == r.status and r.body["deleted"] is True
    assert 404 == _wire_result(wire, "get", {"key": p + "lock", "consistency": "strong"})[0]
    r = h.request("DELETE", key_path(p + "nil"))
    assert (200, True) == (r.status, r.body["deleted"])
    # The reply's revision is the store's after the delete. Through a follower, the node
    # reaches it when it learns the commit (the next append or heartbeat): wait for that.
    wait_until(lambda: r.body["revision"] == wire.status()["revision"], 10,
               lambda: f"reply {r.body}, node status {wire.status()}")
    # bulk
    r = h.request("POST", "/bulk/put", {"items": [[p + "b/1", 1], [p + "b/2", 2, 30]]})
    assert 200 == r.status
    assert {p + "b/1": 1, p + "b/2": 2} == wire.get_many([p + "b/1", p + "b/2"], consistency="strong")
    assert 200 == h.request("POST", "/bulk/touch", {"items": [[p + "b/1", 20]]}).status
    assert wire.ttl(p + "b/1", consistency="strong") is not None
    assert 200 == h.request("PUT", key_path(p + "b/1", "/ttl"), {"ttl": None}).status
    assert wire.ttl(p + "b/1", consistency="strong") is None
    r = h.request("POST", "/bulk/delete", {"keys": [p + "b/1", p + "b/2"]})
    assert (200, 2) == (r.status, r.body["deleted"])
    too_many = h.request("POST", "/bulk/put", {"items": [[f"{p}m/{i}", i] for i in range(501)]})
    assert (400, "too_many_items") == (too_many.status, too_many.body["error"])
    assert 0 == wire.count(prefix=p + "m/", consistency="strong")
    h.request("PUT", key_path(p + "dw/1"), {"value": 1})
    r = h.request("POST", "/delete_where", {"prefix": p + "dw/"})
    assert (200, 1) == (r.status, r.body["deleted"])
    # indexes
    assert 200 == h.request("PUT", "/indexes/tmp_idx", {"field": "n"}).status
    assert "tmp_idx" in [i["name"] for i in wire.list_indexes(consistency="strong")]
    assert 200 == h.request("DELETE", "/indexes/tmp_idx").status


def _errors(h: Http, wire: Client, p: str) -> None:
    """Malformed input: the wire's code (or the gateway's for HTTP-only faults), nothing changed."""
    # A strong read returns once this node applied everything committed before it (a
    # follower may not have learned the last commit yet): the baseline holds still.
    wire.get(p + "k/1", consistency="strong")
    before = wire.status()["revision"]
    cases: list[tuple[Reply, int, str]] = [
        (h.request("PUT", key_path(p + "x"), raw=b"{not json"), 400, "invalid_request"),
        (h.request("PUT", key_path(p + "x"), [1, 2]), 400, "invalid_request"),
        (h.request("PUT", key_path(p + "x"), {"ttl": 5}), 400, "invalid_request"),
        (h.request("PUT", key_path(p + "x"), {"value": 1, "key": "other"}), 400, "invalid_request"),
        (h.request("PUT", key_path(p + "x"), {"value": 1}, {"If-Match": "nope"}), 400, "invalid_request"),
        (h.request("GET", key_path(p + "x", "?consistency=psychic")), 400, "invalid_request"),
        (h.request("GET", "/kv?limit=many"), 400, "invalid_request"),
        (h.request("GET", "/kv/%FF"), 400, "invalid_key"),
        (h.request("GET", "/kv/"), 400, "invalid_key"),
        (h.request("GET", "/nowhere"), 404, "no_route"),
        (h.request("POST", key_path(p + "x")), 405, "method_not_allowed"),
        (h.request("GET", "/status", headers={"Authorization": "Basic abc"}), 401, "unauthorized"),
    ]
    for reply, status, code in cases:
        assert (status, code) == (reply.status, reply.body["error"]), reply.data
    assert "Bearer" in cases[-1][0].headers["www-authenticate"]
    assert before == wire.status()["revision"]
    # A bearer token is the request's token: the same answer as the wire's with it.
    with_token = _wire_result(wire, "get", {"key": p + "k/1", "token": "t0ken"})
    _same(with_token, h.request("GET", key_path(p + "k/1"), headers={"Authorization": "Bearer t0ken"}))


@pytest.mark.timeout(240)
def test_every_route_answers_as_the_wire_does_when_sent_to_leader_and_follower_gateways(cluster) -> None:  # type: ignore[no-untyped-def]
    """Leader and follower gateways: writes land, reads and errors equal the wire's, all valid OpenAPI."""
    c: Cluster = cluster(n=3, http=HTTP_SETTINGS)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    for node in (leader, follower):
        h = Http(c.nodes[node].endpoints["http"])
        p = f"via-{node}/"
        try:
            with _wire(c, node) as wire:
                _writes(h, wire, p)
                wire.create_index("by_n", "n")
                for name, check in _reads(h, wire, p):
                    try:
                        check()
                    except AssertionError as exc:
                        raise AssertionError(f"{name} via {node}: {exc}") from exc
                _errors(h, wire, p)
            ok = h.request("GET", "/health")
            assert (200, node) == (ok.status, ok.body["node"])
            ready = h.request("GET", "/ready")
            assert (200, leader) == (ready.status, ready.body["leader"])
            status = h.request("GET", "/status").body
            assert (node, leader) == (status["node"], status["leader"])
            paths = h.request("GET", "/openapi.json").body["paths"]
            assert isinstance(paths, dict)
            assert {f"/api/v1{r.path}" for r in ROUTES} <= set(paths)
            assert h.checked > 40
        finally:
            h.close()
        wire_client = Client(c.nodes[leader].client, timeout_s=5.0)
        wire_client.drop_index("by_n")
        wire_client.close()
    # No quorum: writes are refused with no_leader, 503 and Retry-After; /ready says so.
    # NB: the old leader survives: a follower's gateway forwards to the leader it knows,
    # and a write sent to a dead leader is rightly a 504 timeout (outcome unknown).
    survivor = leader
    for node in c.ids:
        if node != survivor:
            c.nodes[node].terminate()
    h = Http(c.nodes[survivor].endpoints["http"])
    try:
        wait_until(lambda: h.request("GET", "/ready").status == 503, 20.0, "survivor still ready")
        refused = h.request("PUT", key_path("after"), {"value": 1})
        assert (503, "no_leader", "1") == (refused.status, refused.body["error"], refused.headers.get("retry-after")), refused
        assert 200 == h.request("GET", "/health").status
    finally:
        h.close()
