"""
Error responses of the gateway: the wire error reply's fields (`error`, `message`,
`leader`) as JSON or msgpack, with the HTTP status of the code (concord.gateway.codec),
`Retry-After` on 503 and 429, `WWW-Authenticate` on 401.
"""

from __future__ import annotations

from starlette.responses import Response

from concord.errors import ClientError, NotLeaderError
from concord.gateway import codec

__all__ = ["client_error_response", "error_response"]


def error_response(code: str, message: str, accept: str = "", leader: str | None = None) -> Response:
    """An error as JSON (or msgpack): the wire error reply's fields, the HTTP status of its code."""
    status = codec.status_of(code)
    content, media = codec.encode(codec.error_body(code, message, leader), accept)
    headers: dict[str, str] = {}
    retry = codec.RETRY_AFTER_S.get(status)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="concord"'
    return Response(content, status, headers=headers, media_type=media)


def client_error_response(exc: ClientError, accept: str) -> Response:
    leader = exc.leader_hint if isinstance(exc, NotLeaderError) else None
    return error_response(exc.code, exc.message, accept, leader)


