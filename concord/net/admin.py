"""
The `fault` admin op, served by the raft worker (which owns the PeerTransport).

The worker calls `fault_reply(transport, request)` for a validated request whose op is
"fault"; the reply is ready to hand back through `BackendLink.reply`. Errors (faults
disabled, malformed command) become invalid_request replies; nothing raises.
"""

from __future__ import annotations

from concord.errors import ClientError, InvalidRequestError
from concord.net.peer import PeerTransport
from concord.net.wire import Request, ok_reply, reply_for_error

__all__ = ["fault_reply"]


def fault_reply(transport: PeerTransport, request: Request) -> bytes:
    """
    Apply `request.args["command"]` to the transport's fault filter.

    Returns:
        `{"id", "ok": true, "enabled": true, "rules": [...]}` or an error reply.
    """
    if request.op != "fault":
        return reply_for_error(InvalidRequestError(f"op {request.op} is not the fault op", request.id))
    command = request.args.get("command")
    if not isinstance(command, dict):
        return reply_for_error(InvalidRequestError("op fault requires a command map", request.id))
    try:
        result = transport.apply_fault_command(command)
    except ClientError as exc:
        exc.request_id = request.id
        return reply_for_error(exc)
    return ok_reply(request.id, result)
