"""The gateway process's listening socket."""

from __future__ import annotations

import socket

from concord.gateway.process import _listen


def test_accepted_connections_get_tcp_nodelay_when_the_gateway_listens() -> None:
    """
    asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0 every
    response (headers, then body) waited ~40 ms for the client's delayed ACK.
    """
    sock = _listen("127.0.0.1", 0)
    try:
        assert socket.IPPROTO_TCP == sock.proto
        with socket.create_connection(sock.getsockname()[:2]):
            conn, _ = sock.accept()
            with conn:
                assert socket.IPPROTO_TCP == conn.proto
    finally:
        sock.close()
