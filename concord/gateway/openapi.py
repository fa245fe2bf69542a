"""
The OpenAPI 3.1 document of the gateway, generated from the route table
(concord.gateway.routes), the wire op table (concord.net.wire.OPS: every argument, its
type and whether it is required) and the error table (concord.gateway.codec). Served at
`GET /api/v1/openapi.json`; a test validates every response of a real cluster against it.

Pure: builds a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from concord.errors import ERROR_CLASSES
from concord.gateway import codec
from concord.gateway.routes import API, ROUTES, JsonSchema, Route, Source, conditions, route_args
from concord.net.wire import CONSISTENCY_LEVELS, Arg, ArgType

__all__ = ["ARG_SCHEMAS", "document"]

_STR: JsonSchema = {"type": "string"}
_NUM: JsonSchema = {"type": "number"}
_INT: JsonSchema = {"type": "integer"}

#: JSON schema of each wire argument type (a test checks it covers ArgType).
ARG_SCHEMAS: Mapping[ArgType, JsonSchema] = {
    ArgType.STR: _STR,
    ArgType.INT: _INT,
    ArgType.NUMBER: _NUM,
    ArgType.BOOL: {"type": "boolean"},
    ArgType.ANY: {},
    ArgType.MAP: {"type": "object"},
    ArgType.STR_LIST: {"type": "array", "items": _STR},
    ArgType.STR_PAIR: {"type": "array", "items": _STR, "minItems": 2, "maxItems": 2},
    ArgType.KEY_RANGE: {"type": "array", "items": {"type": ["string", "null"]}, "minItems": 2,
                        "maxItems": 2},
    ArgType.FILTER: {"type": "array", "minItems": 1, "prefixItems": [_STR],
                     "description": "a where filter, e.g. [\"ge\", \"age\", 18] (docs/protocol.md)"},
    ArgType.OPT_NUMBER: {"type": ["number", "null"]},
    ArgType.FIELD_PATH: {"oneOf": [_STR, {"type": "array", "items": {"type": ["string", "integer"]}}]},
    ArgType.ITEMS: {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 3,
                                               "prefixItems": [_STR, {}, {"type": ["number", "null"]}]}},
    ArgType.TTL_ITEMS: {"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                                   "prefixItems": [_STR, _NUM]}},
    ArgType.CONSISTENCY: {"type": "string", "enum": list(CONSISTENCY_LEVELS)},
    ArgType.STR_OR_BYTES: _STR,
    ArgType.POSITIVE_INT: {"type": "integer", "minimum": 1},
    ArgType.NON_NEGATIVE_INT: {"type": "integer", "minimum": 0},
}

_ERROR_CODES = sorted({*ERROR_CLASSES, *codec.ERROR_STATUS, *codec.GATEWAY_ERRORS})
_ERROR: JsonSchema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "enum": _ERROR_CODES},
        "message": _STR,
        "leader": {"type": ["string", "null"]},
    },
}
_ERROR_STATUSES = sorted({*codec.ERROR_STATUS.values(), *codec.GATEWAY_ERRORS.values()})
_MEDIA = (codec.JSON, codec.MSGPACK)


def _content(schema: JsonSchema) -> dict[str, object]:
    return {media: {"schema": schema} for media in _MEDIA}


def _query_param(arg: Arg) -> dict[str, object]:
    schema = ARG_SCHEMAS[arg.type]
    param: dict[str, object] = {"name": arg.name, "in": "query", "required": arg.required}
    if arg.type in codec.QUERY_SCALARS:
        param["schema"] = schema
        param["description"] = arg.doc
    else:
        param["schema"] = _STR
        param["description"] = f"JSON text. {arg.doc}".strip()
    return param


def _body(route: Route) -> dict[str, object]:
    args = route_args(route)
    optional = set(conditions(route))
    schema = {
        "type": "object",
        "properties": {a.name: {**ARG_SCHEMAS[a.type], **({"description": a.doc} if a.doc else {})}
                       for a in args},
        "required": [a.name for a in args if a.required and a.name not in optional],
    }
    return {"required": True, "content": _content(schema)}


def _parameters(route: Route) -> list[dict[str, object]]:
    params: list[dict[str, object]] = [
        {"name": name, "in": "path", "required": True, "schema": _STR,
         "description": "one path segment: percent-encoded UTF-8 ('/' as %2F)"}
        for name in route.path_params
    ]
    if route.source is Source.QUERY and route.op is not None:
        params += [_query_param(a) for a in route_args(route)]
    if route.conditional_op is not None:
        params.append({"name": "If-Match", "in": "header", "required": False, "schema": _STR,
                       "description": "ETag \"<mod_revision>\": only if the key is at that revision"})
        params.append({"name": "If-None-Match", "in": "header", "required": False,
                       "schema": {"const": "*"}, "description": "*: only if the key is absent"})
    if route.path == "/watch":
        params += [
            {"name": "prefix", "in": "query", "required": False, "schema": _STR},
            {"name": "since", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0},
             "description": "changes after this revision (default: from now on)"},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _STR,
             "description": "resume after this event (<revision> or <revision>:<i>)"},
        ]
    return params


def _operation(route: Route) -> dict[str, object]:
    ok: dict[str, object] = {"description": "OK"}
    if route.path == "/watch":
        ok["content"] = {"text/event-stream": {"schema": _STR}}
    else:
        ok["content"] = _content(route.result)
    if route.op == "get":
        ok["headers"] = {name: {"schema": _STR} for name in (
            "ETag", "X-Concord-Revision", "X-Concord-Version", "X-Concord-Create-Revision")}
    elif route.op is not None:
        ok["headers"] = {"X-Concord-Revision": {"schema": _STR}}
    responses: dict[str, object] = {"200": ok}
    for status in _ERROR_STATUSES:
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    wire = route.op + (f" or {route.conditional_op}" if route.conditional_op else "") if route.op else None
    operation: dict[str, object] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": f"Wire op: `{wire}` (docs/protocol.md)." if wire else "Answered by the gateway.",
        "tags": [route.path.split("/")[1]],
        "parameters": _parameters(route),
        "responses": responses,
    }
    if route.source is Source.BODY:
        operation["requestBody"] = _body(route)
    return operation


@lru_cache(maxsize=1)
def document() -> Mapping[str, object]:
    """The OpenAPI 3.1 document (built once)."""
    paths: dict[str, dict[str, object]] = {}
    for route in ROUTES:
        paths.setdefault(API + route.path, {})[route.method.lower()] = _operation(route)
    paths[API + "/openapi.json"] = {"get": {
        "operationId": "get_openapi", "summary": "this document", "tags": ["docs"],
        "responses": {"200": {"description": "OK", "content": {codec.JSON: {"schema": {"type": "object"}}}}},
    }}
    error_responses = {
        f"E{status}": {
            "description": ", ".join(c for c in _ERROR_CODES if codec.status_of(c) == status),
            "content": _content({"$ref": "#/components/schemas/Error"}),
        }
        for status in _ERROR_STATUSES
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Concord HTTP API",
            "version": "1",
            "description": "Every route sends one request of the Concord wire protocol v1 to the "
                           "node and returns its reply without `id` and `ok` (docs/http.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "responses": error_responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
