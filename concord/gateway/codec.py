"""
What the gateway reads from and writes to HTTP: query parameters typed by the wire op
table, JSON and msgpack bodies, and the one table of HTTP statuses for the wire error
codes (docs/http.md "Errors").

Pure: no sockets, no Starlette.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping

import msgpack

from concord.errors import ERROR_CLASSES, InvalidRequestError
from concord.net.wire import Arg, ArgType

__all__ = [
    "ERROR_STATUS", "GATEWAY_ERRORS", "JSON", "MSGPACK", "QUERY_SCALARS", "RETRY_AFTER_S",
    "check_packable", "decode_body", "encode", "error_body", "parse_query_value", "status_of",
]

JSON = "application/json"
MSGPACK = "application/msgpack"

#: HTTP status of every wire error code (a test checks it covers concord.errors).
ERROR_STATUS: Mapping[str, int] = {
    "not_found": 404,
    "condition_failed": 412,
    "not_leader": 503,  # only when forwarding to the leader failed (no hint, or hops exhausted)
    "no_leader": 503,
    "timeout": 504,
    "unauthorized": 401,
    "forbidden": 403,
    "quota_exceeded": 429,
    "invalid_request": 400,
    "invalid_key": 400,
    "value_too_large": 413,
    "too_many_items": 400,
    "shutting_down": 503,
    "storage_unavailable": 503,
}

#: Codes only the gateway answers with (no wire reply carries them).
GATEWAY_ERRORS: Mapping[str, int] = {
    "not_ready": 503,  # GET /ready: a leader is known but this node has not applied its commit
    "compacted": 410,  # GET /watch: the history after the asked revision is no longer kept
    "no_route": 404,  # no route for this path
    "method_not_allowed": 405,  # the path exists, not with this method
    "bad_gateway": 502,  # the node's reply broke the wire protocol
}

#: Statuses that tell the client to come back (Retry-After, seconds).
RETRY_AFTER_S: Mapping[int, int] = {503: 1, 429: 1}

#: Argument types sent as plain query text; every other type is JSON text.
QUERY_SCALARS = frozenset({
    ArgType.STR, ArgType.INT, ArgType.NUMBER, ArgType.BOOL, ArgType.CONSISTENCY,
    ArgType.STR_OR_BYTES, ArgType.POSITIVE_INT, ArgType.NON_NEGATIVE_INT, ArgType.OPT_NUMBER,
})
_INTS = frozenset({ArgType.INT, ArgType.POSITIVE_INT, ArgType.NON_NEGATIVE_INT})
_NUMBERS = frozenset({ArgType.NUMBER, ArgType.OPT_NUMBER})


def status_of(code: str) -> int:
    """The HTTP status for an error code (502 for a code this gateway does not know)."""
    return ERROR_STATUS.get(code) or GATEWAY_ERRORS.get(code) or 502


def error_body(code: str, message: str, leader: str | None = None) -> dict[str, object]:
    """The error body: the wire's error reply without `id` and `ok`."""
    return {"error": code, "message": message, "leader": leader}


def parse_query_value(arg: Arg, text: str) -> object:
    """
    A query parameter as the value of the op argument `arg`: integers, numbers and
    booleans parsed, strings as they are, every other type from JSON text. The node
    checks the value against the op (the same refusal as over the wire).

    Raises:
        InvalidRequestError: the text is not of the declared type.
    """
    kind = arg.type
    if kind in _INTS:
        try:
            return int(text)
        except ValueError:
            raise InvalidRequestError(f"query parameter {arg.name} must be an integer, got {text!r}") from None
    if kind in _NUMBERS:
        if kind is ArgType.OPT_NUMBER and text == "null":
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InvalidRequestError(f"query parameter {arg.name} must be a number, got {text!r}")
        return number
    if kind is ArgType.BOOL:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise InvalidRequestError(f"query parameter {arg.name} must be true or false, got {text!r}")
    if kind in QUERY_SCALARS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequestError(f"query parameter {arg.name} must be JSON text, got {text!r}") from None


def decode_body(data: bytes, content_type: str) -> dict[str, object]:
    """
    A request body as the op's argument map: JSON by default, msgpack when the
    Content-Type says so (then values may be bytes, as over the wire).

    Raises:
        InvalidRequestError: not one JSON/msgpack object with string keys.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if not data:
        raise InvalidRequestError("request body is empty: expected an object of arguments")
    if media in (MSGPACK, "application/x-msgpack"):
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
            raise InvalidRequestError(f"request body is not one msgpack value: {type(exc).__name__}") from None
    else:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequestError(f"request body is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise InvalidRequestError(f"request body must be an object of arguments, got {type(obj).__name__}")
    return obj


def check_packable(args: Mapping[str, object]) -> None:
    """
    Raises:
        InvalidRequestError: an argument msgpack cannot carry (an integer beyond 64 bits,
            nesting too deep), so that it is refused before it reaches the wire.
    """
    try:
        msgpack.packb(dict(args), use_bin_type=True)
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(f"arguments cannot be sent as msgpack: {exc}") from None


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode(body: object, accept: str) -> tuple[bytes, str]:
    """
    A response body and its media type: msgpack when `accept` asks for it (exactly the
    wire's values), else JSON (bytes as {"base64": ...}, map keys as strings).
    """
    if MSGPACK in accept or "application/x-msgpack" in accept:
        return msgpack.packb(body, use_bin_type=True), MSGPACK
    text = json.dumps(body, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8"), JSON


def _check_codes() -> None:
    missing = set(ERROR_CLASSES) - set(ERROR_STATUS)
    if missing:  # pragma: no cover - a test pins it too
        raise AssertionError(f"wire error codes with no HTTP status: {sorted(missing)}")


_check_codes()
