"""
A raw ZMTP 3.0 (NULL mechanism) client over a plain TCP socket, for hostile-input tests.

libzmq sockets only ever send well-formed ZMTP and close politely; this one lets a test
pick the routing id it announces, send frames, then reset the connection (SO_LINGER 0)
at the moment it chooses. Layout (RFC 23/ZMTP): a 64-byte greeting, a READY command with
the Socket-Type and Identity properties, then frames of flags (bit 0 MORE, bit 1 LONG,
bit 2 COMMAND), size (1 byte, or 8 with LONG) and body.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["ZmtpClient"]

_GREETING = (b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00")
             + b"\x00" + b"\x00" * 31)


def _frame(body: bytes, more: bool, command: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes((flags | 2,)) + struct.pack(">Q", len(body)) + body
    return bytes((flags, len(body))) + body


def _prop(name: bytes, value: bytes) -> bytes:
    return bytes((len(name),)) + name + struct.pack(">I", len(value)) + value


class ZmtpClient:
    """One raw connection speaking as a DEALER with routing id `identity` (b"" = none)."""

    def __init__(self, port: int, identity: bytes, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ready = b"\x05READY" + _prop(b"Socket-Type", b"DEALER") + _prop(b"Identity", identity)
        self.sock.sendall(_GREETING + _frame(ready, more=False, command=True))

    def handshake(self) -> None:
        """Wait for the peer's greeting and READY: it has accepted our routing id."""
        need = 64 + 2
        got = b""
        while len(got) < need:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("peer closed during the ZMTP handshake")
            got += chunk
            if len(got) >= 66:
                need = 64 + 2 + got[65]  # short READY command: flags, size, body

    def send(self, frames: list[bytes]) -> None:
        """Send one multi-frame message."""
        self.sock.sendall(b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames)))

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (a broken frame, half a frame, garbage)."""
        self.sock.sendall(data)

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), as a crashed or hostile peer would."""
        self.sock.close()
