"""The gateway's tables agree with the wire's: ops, argument types, error codes; parsing."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from concord.errors import ERROR_CLASSES, InvalidKeyError, InvalidRequestError
from concord.gateway import codec
from concord.gateway.app import Router
from concord.gateway.openapi import ARG_SCHEMAS, document
from concord.gateway.routes import NOT_ROUTED, ROUTES, route_args
from concord.gateway.sse import parse_event_id
from concord.net.wire import OPS, Arg, ArgType


def test_every_wire_op_is_routed_or_excluded_with_a_reason_when_tables_are_read() -> None:
    """OPS == ops of the routes + NOT_ROUTED, with no overlap."""
    routed = {r.op for r in ROUTES if r.op} | {r.conditional_op for r in ROUTES if r.conditional_op}
    assert set(OPS) == routed | set(NOT_ROUTED)
    assert set() == routed & set(NOT_ROUTED)


def test_every_error_code_has_an_http_status_when_mapped() -> None:
    """Each wire error code maps to a status; the documented ones as docs/http.md says."""
    assert set(ERROR_CLASSES) == set(codec.ERROR_STATUS)
    assert (404, 412, 401, 403, 429, 503) == tuple(codec.ERROR_STATUS[c] for c in (
        "not_found", "condition_failed", "unauthorized", "forbidden", "quota_exceeded", "no_leader"))


def test_every_argument_type_has_a_schema_when_documented() -> None:
    """The OpenAPI document can describe every wire argument type."""
    assert set(ArgType) == set(ARG_SCHEMAS)


def test_openapi_document_is_valid_3_1_when_generated() -> None:
    """The generated document passes the OpenAPI 3.1 validator and names every route."""
    spec = document()
    validate(dict(spec))
    assert "3.1.0" == spec["openapi"]
    paths = spec["paths"]
    assert isinstance(paths, dict)
    for route in ROUTES:
        assert route.method.lower() in paths["/api/v1" + route.path]


def test_route_arguments_come_from_the_op_table_when_derived() -> None:
    """PUT /kv/{key} takes put's and put_if's arguments except the key."""
    put = next(r for r in ROUTES if (r.method, r.path) == ("PUT", "/kv/{key}"))
    names = {a.name for a in route_args(put)}
    assert {"value", "ttl", "compress", "lease", "expected", "version", "mod_revision",
            "absent"} == names


def test_key_with_a_slash_is_one_segment_when_percent_encoded() -> None:
    """%2F stays inside the key; the suffix route is told apart."""
    router = Router(ROUTES)
    found = router.match("GET", b"/api/v1/kv/a%2Fb%20c/ttl")
    assert not isinstance(found, str)
    route, params = found
    assert ("/kv/{key}/ttl", {"key": "a/b c"}) == (route.path, params)
    assert "method_not_allowed" == router.match("POST", b"/api/v1/kv/a")
    assert "no_route" == router.match("GET", b"/api/v1/kv/a/b")
    with pytest.raises(InvalidKeyError):
        router.match("GET", b"/api/v1/kv/%ff")


@pytest.mark.parametrize("kind, text, expected", [
    (ArgType.NON_NEGATIVE_INT, "12", 12),
    (ArgType.NUMBER, "1.5", 1.5),
    (ArgType.NUMBER, "2", 2),
    (ArgType.BOOL, "true", True),
    (ArgType.BOOL, "0", False),
    (ArgType.STR, "a b", "a b"),
    (ArgType.KEY_RANGE, '["a", null]', ["a", None]),
    (ArgType.ANY, '{"x": 1}', {"x": 1}),
])
def test_query_value_is_typed_when_parsed(kind: ArgType, text: str, expected: object) -> None:
    """Scalars parse by type; every other type is JSON text."""
    assert expected == codec.parse_query_value(Arg("x", kind), text)


@pytest.mark.parametrize("kind, text", [
    (ArgType.INT, "1.5"), (ArgType.NUMBER, "nan"), (ArgType.BOOL, "yes"), (ArgType.FILTER, "[oops"),
])
def test_query_value_is_refused_naming_it_when_malformed(kind: ArgType, text: str) -> None:
    """A bad parameter is invalid_request naming the parameter."""
    with pytest.raises(InvalidRequestError, match="query parameter x"):
        codec.parse_query_value(Arg("x", kind), text)


def test_body_is_refused_when_not_an_object() -> None:
    """A body is one JSON or msgpack object of arguments."""
    with pytest.raises(InvalidRequestError, match="object"):
        codec.decode_body(b"[1]", "application/json")
    with pytest.raises(InvalidRequestError, match="empty"):
        codec.decode_body(b"", "application/json")
    assert {"value": b"\x00"} == codec.decode_body(b"\x81\xa5value\xc4\x01\x00", "application/msgpack")


def test_event_id_round_trips_when_parsed() -> None:
    """R and R:i parse; anything else is refused."""
    assert (7, None) == parse_event_id("7")
    assert (7, 2) == parse_event_id("7:2")
    for bad in ("", "x", "7:", "-1", "7:x"):
        with pytest.raises(InvalidRequestError):
            parse_event_id(bad)


def test_http_doc_has_a_section_and_a_curl_example_per_route_when_compared_to_the_table() -> None:
    """docs/http.md: one `### METHOD path` section per route, each with a curl line."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    documented = {}
    for section in sections:
        heading = section.splitlines()[0].strip("`")
        documented[heading] = "curl " in section
    expected = {f"{r.method} /api/v1{r.path}" for r in ROUTES}
    assert expected == set(documented)
    assert [] == [h for h, has_curl in documented.items() if not has_curl]
