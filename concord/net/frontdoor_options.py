"""
The front door's settings and counters: `FrontDoorOptions` (endpoints, request and
timeout limits, high-water marks, CURVE; validated) and `FrontDoorStats`.
concord.net.frontdoor's `FrontDoor` takes the first and keeps the second; it
re-exports both. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from concord.errors import ConfigError
from concord.net.curve import CurveServer
from concord.net.wire import DEFAULT_MAX_REQUEST_BYTES

_MAX_IPC_PATH = 107


@dataclass(frozen=True, slots=True)
class FrontDoorOptions:
    """
    Args:
        client_endpoint: the node's client ROUTER, e.g. "tcp://127.0.0.1:7400" (port 0:
            any free port, see FrontDoor.client_endpoint).
        backend_endpoint: the ipc endpoint backends connect to, e.g. "ipc:///run/c/n1.ipc".
        curve: CURVE on the client endpoint (concord.net.curve; None: plaintext).
    """

    client_endpoint: str
    backend_endpoint: str
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    default_timeout_ms: int = 5000
    max_timeout_ms: int = 120_000
    reply_grace_ms: int = 100
    backend_dead_after_s: float = 3.0
    client_sndhwm: int = 10000
    client_rcvhwm: int = 10000
    curve: CurveServer | None = None

    def validate(self) -> None:
        """
        Raises:
            ConfigError: naming the bad field.
        """
        if self.max_request_bytes <= 0:
            raise ConfigError(f"max_request_bytes must be > 0, got {self.max_request_bytes}")
        if not 0 < self.default_timeout_ms <= self.max_timeout_ms:
            raise ConfigError(
                f"timeouts must satisfy 0 < default_timeout_ms <= max_timeout_ms, got "
                f"{self.default_timeout_ms} and {self.max_timeout_ms}"
            )
        if self.backend_endpoint.startswith("ipc://"):
            size = len(self.backend_endpoint[len("ipc://"):].encode())
            if size > _MAX_IPC_PATH:
                # NB: sun_path is 108 bytes on Linux; libzmq fails late and obscurely.
                raise ConfigError(
                    f"backend_endpoint ipc path is {size} bytes, over {_MAX_IPC_PATH}: "
                    f"use a shorter directory such as /tmp or /run"
                )
        if self.backend_dead_after_s <= 0:
            raise ConfigError(f"backend_dead_after_s must be > 0, got {self.backend_dead_after_s}")


@dataclass(slots=True)
class FrontDoorStats:
    """Counters (monotonic)."""

    requests: int = 0
    invalid: int = 0
    forwarded: int = 0
    replies: int = 0
    timeouts: int = 0
    unroutable: int = 0
    late_replies: int = 0  # backend answered after the deadline or for an unknown token
    handoffs: int = 0  # requests a read worker handed to the raft worker
    client_gone: int = 0  # reply dropped: client disconnected or not reading
    bad_backend_messages: int = 0
    inline: int = 0  # reads the door answered itself (concord.net.door_reads)
    inline_declined: int = 0  # inline (or held strong) reads it sent to a backend instead
    backend_messages: int = 0  # REQUEST and REQUESTS messages sent to backends
    strong_inline: int = 0  # strong reads the door answered itself (concord.net.door_strong)
    barriers: int = 0  # read barriers it asked its raft worker for
