"""
Socket creation shared by the net modules: LINGER=0 always, zmq errors translated.

Never lets a zmq error escape: ETERM (context terminated) becomes ShuttingDownError,
anything else (for example EMFILE, too many open files) becomes ConfigError naming what
was being created.
"""

from __future__ import annotations

import zmq

from concord.errors import ConfigError, ShuttingDownError

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]


def new_socket(ctx: Context, kind: int, what: str) -> Socket:
    """A new socket of `kind` with LINGER=0; `what` names it in error messages."""
    try:
        sock: Socket = ctx.socket(kind)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.ETERM:
            raise ShuttingDownError(f"cannot create {what} socket: context terminated") from exc
        raise ConfigError(f"cannot create {what} socket: {exc}") from exc
    sock.setsockopt(zmq.LINGER, 0)
    return sock
