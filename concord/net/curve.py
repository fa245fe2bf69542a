"""
ZeroMQ CURVE for Concord's links: key files, socket set-up and the ZAP handler.

CURVE (RFC 26, CurveZMQ) encrypts and authenticates a ZeroMQ connection with
Curve25519 key pairs: the connecting side must know the binding side's public key
(`CurveClient`), and the binding side learns the connecting side's public key during the
handshake and asks a ZAP handler (RFC 27) whether to accept it (`ZapHandler`).

Key files (version 1), one key per file, written by `concord keys generate`
(concord/cli/keys.py) and read by `read_key_file`:

    line 1   "concord-curve-secret-key 1"   or   "concord-curve-public-key 1"
    line 2   the key, 40 Z85 characters (32 bytes)
    (a final newline; nothing else)

A secret key file must not be readable by group or others (mode 0600, like ssh's).

The ZAP handler is ours, not pyzmq's `zmq.auth` (whose authenticators run a background
thread or an asyncio task and key their allow-list by certificate files in czmq's ZPL
format): each node process has one poll loop and no threads, so the handler is a REP
socket on `inproc://zeromq.zap.01` served from that loop (`ZapHandler.handle`), and it
maps an allowed peer key to the NODE ID that owns it (the ZAP User-Id), so the peer
transport can check that the sender named in a message is the one the key belongs to.

Domains: `peer` (Raft links) accepts only keys in the allow-list; any other domain
(`client`, `events`) accepts every key, with the key's Z85 text as the User-Id (these
endpoints are encrypted; who may do what there is token authentication's job).

Never raises zmq errors past this module: they become ConfigError / ShuttingDownError.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from typing import Protocol

import zmq
from zmq.utils import z85

from concord.errors import ConfigError, ShuttingDownError
from concord.ids import NodeId, is_node_id
from concord.net._zmqutil import Context, Socket, new_socket
from concord.net.ratelog import RateLimitedLog, WarningLogger

__all__ = [
    "KEY_FILE_VERSION",
    "PEER_DOMAIN",
    "ZAP_ENDPOINT",
    "CurveClient",
    "CurveServer",
    "PeerKeys",
    "ZapHandler",
    "HANDSHAKE_EVENTS",
    "HandshakeWatch",
    "generate_key_pair",
    "handshake_reason",
    "public_key_of",
    "read_key_file",
    "write_key_pair",
]

log = logging.getLogger(__name__)

KEY_FILE_VERSION = 1
_MAGIC = {"secret": "concord-curve-secret-key", "public": "concord-curve-public-key"}
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PEER_DOMAIN = "peer"
_Z85_ALPHABET = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq has no CURVE support (zmq.has('curve') is false)")


def _check_z85_key(key: str, what: str) -> str:
    if len(key) != 40 or not set(key) <= _Z85_ALPHABET:
        raise ConfigError(f"{what}: not a CURVE key (40 Z85 characters), got {key[:48]!r}")
    return key


# --------------------------------------------------------------------------- key files


def generate_key_pair() -> tuple[str, str]:
    """A new (public, secret) key pair, each 40 Z85 characters."""
    _require_curve()
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def public_key_of(secret_key: str) -> str:
    """The public key of a Z85 secret key."""
    _require_curve()
    return zmq.curve_public(secret_key.encode("ascii")).decode("ascii")


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """
    Write `<name>.key` (secret, mode 0600) and `<name>.pub` in `directory`.

    Refuses to overwrite either file. Returns (public file, secret file).

    Raises:
        ConfigError: a file exists or cannot be written.
    """
    public, secret = generate_key_pair()
    pub_path, key_path = directory / f"{name}.pub", directory / f"{name}.key"
    for target in (pub_path, key_path):
        if target.exists():
            raise ConfigError(f"{target}: already exists (not overwritten)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{_MAGIC['secret']} {KEY_FILE_VERSION}\n{secret}\n")
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{_MAGIC['public']} {KEY_FILE_VERSION}\n{public}\n")
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot write key files: {exc.strerror or exc}") from exc
    return pub_path, key_path


def read_key_file(file: Path, kind: str) -> str:
    """
    The Z85 key in a key file of `kind` ("secret" or "public").

    Raises:
        ConfigError: unreadable, another kind or version, not a key, or (a secret key)
            readable by group or others.
    """
    try:
        with open(file, encoding="ascii") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read(4096)
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{file}: cannot read {kind} key file: {detail}") from exc
    lines = text.splitlines()
    header = f"{_MAGIC[kind]} {KEY_FILE_VERSION}"
    if len(lines) != 2 or lines[0] != header:
        raise ConfigError(f"{file}: not a {kind} key file (expected the line {header!r} "
                          "then the key; made by `concord keys generate`)")
    if kind == "secret" and stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"{file}: secret key file is readable by group or others "
                          f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return _check_z85_key(lines[1], str(file))


class PeerKeys:
    """
    The peer allow-list: a folder of `<node-id>.pub` public key files, one per member.

    `reload()` re-reads the folder when a file in it changed (size, mtime or name), so
    adding a member's key or rotating one takes effect without a restart.

    Raises:
        ConfigError: (construction) the folder or a key file in it is bad.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self.by_node: dict[NodeId, str] = {}
        self.by_key: dict[str, NodeId] = {}
        if not self.reload():
            raise ConfigError(f"{directory}: no peer key files (<node-id>.pub) in it")

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = [(e.name, e.stat()) for e in os.scandir(self.directory)
                       if e.name.endswith(".pub")]
        except OSError as exc:
            raise ConfigError(f"{self.directory}: cannot read peer key folder: "
                              f"{exc.strerror or exc}") from exc
        return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in entries))

    def reload(self) -> bool:
        """
        Re-read the folder if it changed. Returns True if the keys were (re)loaded.

        Raises:
            ConfigError: a key file is bad (the previous keys stay in force).
        """
        stamp = self._scan()
        if stamp == self._stamp:
            return False
        by_node: dict[NodeId, str] = {}
        by_key: dict[str, NodeId] = {}
        for name, _, _ in stamp:
            node = name[:-len(".pub")]
            if not is_node_id(node):
                raise ConfigError(f"{self.directory / name}: file name is not <node-id>.pub")
            key = read_key_file(self.directory / name, "public")
            if key in by_key:
                raise ConfigError(f"{self.directory / name}: same key as {by_key[key]}.pub")
            by_node[NodeId(node)], by_key[key] = key, NodeId(node)
        self._stamp = stamp
        self.by_node, self.by_key = by_node, by_key
        return bool(stamp)


# --------------------------------------------------------------------------- sockets


class _Settable(Protocol):
    """What `apply` needs of a socket (sync or zmq.asyncio)."""

    def setsockopt(self, option: int, value: int | bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class CurveServer:
    """The binding side of CURVE links: our secret key and the ZAP domain of the socket."""

    secret_key: str
    domain: str

    def apply(self, sock: Socket) -> None:
        """Make `sock` a CURVE server. Call before bind()."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key.encode("ascii"))
        sock.setsockopt(zmq.ZAP_DOMAIN, self.domain.encode("ascii"))


@dataclass(frozen=True, slots=True)
class CurveClient:
    """The connecting side: the server's public key and our key pair (Z85 text)."""

    server_key: str
    public_key: str
    secret_key: str

    @classmethod
    def of(cls, server_key: str | None, key_pair: tuple[str, str] | None = None) -> CurveClient | None:
        """
        A client's CURVE settings: None without `server_key`; `key_pair` (public, secret)
        defaults to a fresh one (encryption without a client identity).

        Raises:
            ConfigError: a key is not 40 Z85 characters.
        """
        if server_key is None:
            if key_pair is not None:
                raise ConfigError("key_pair needs server_key (the node's public key)")
            return None
        public, secret = key_pair if key_pair is not None else generate_key_pair()
        return cls(_check_z85_key(server_key, "server_key"), _check_z85_key(public, "key_pair public"),
                   _check_z85_key(secret, "key_pair secret"))

    def apply(self, sock: _Settable) -> None:
        """Make `sock` a CURVE client of `server_key`. Call before connect()."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key.encode("ascii"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key.encode("ascii"))
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key.encode("ascii"))


# --------------------------------------------------------------------------- handshakes

#: The socket-monitor events of a handshake's outcome (zmq_socket_monitor).
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)


def handshake_reason(event: int, value: int) -> str | None:
    """A short name for a failed handshake's monitor event; None for a success."""
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return None
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "key_not_allowed"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "mechanism_mismatch"  # one side speaks CURVE, the other plaintext
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "cryptographic"  # a wrong server key, or garbage
        return "protocol_error"
    return "no_detail"  # e.g. the server hung up: with CURVE, a wrong server key


class HandshakeWatch:
    """
    A client's view of one endpoint's handshakes: when to stop waiting for a reply that
    cannot come, with a message that names the cause. Pure.

    Args:
        endpoint: the endpoint watched (for messages).
        curve: the client uses CURVE (has a server key).
        no_detail_limit: consecutive unexplained failures (a server that hangs up during
            the handshake) that count as a wrong server key when `curve`.
    """

    def __init__(self, endpoint: str, curve: bool, no_detail_limit: int = 3) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.no_detail_limit = no_detail_limit
        self._no_detail = 0

    def on_event(self, event: int, value: int) -> str | None:
        """The reason to fail the endpoint's requests now, or None to keep waiting."""
        reason = handshake_reason(event, value)
        if reason is None:
            self._no_detail = 0
            return None
        if reason == "mechanism_mismatch":
            if self.curve:
                return (f"the node at {self.endpoint} does not use CURVE on this endpoint: "
                        "connect without server_key")
            return (f"the node at {self.endpoint} requires CURVE on this endpoint: pass "
                    "server_key, the nodes' client public key (docs/encryption.md)")
        if reason == "key_not_allowed":
            return f"the node at {self.endpoint} refused this client's CURVE key"
        if reason == "no_detail":
            self._no_detail += 1
            if not self.curve or self._no_detail < self.no_detail_limit:
                return None
        return (f"the CURVE handshake with {self.endpoint} failed ({reason}): is server_key "
                "that node's client public key?")


# --------------------------------------------------------------------------- ZAP

#: decides a CURVE handshake: (domain, client public key Z85) -> User-Id, or None to refuse
Policy = Callable[[str, str], str | None]


class ZapHandler:
    """
    The ZAP handler of one process's context (RFC 27), served from its poll loop.

    Args:
        ctx: the process's zmq context (one handler per context; bind it before any
            CURVE server socket of that context accepts a connection).
        peer_keys: the allow-list of the `peer` domain (node id <-> public key), read on
            every request, so a reload takes effect at the next handshake.
        logger: where refusals are logged (carries node, term and role), rate-limited.
        on_unknown: called when a `peer` key is not allowed (e.g. to reload the folder).
    """

    def __init__(self, ctx: Context, peer_keys: Callable[[], Mapping[str, NodeId]],
                 logger: WarningLogger, on_unknown: Callable[[], None] | None = None) -> None:
        self._peer_keys = peer_keys
        self._on_unknown = on_unknown
        self._refusals = RateLimitedLog(logger, 10.0)
        self.refused = 0
        self.accepted = 0
        self.socket = new_socket(ctx, zmq.REP, "zap handler")
        try:
            self.socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self.socket.close(0)
            raise ConfigError(f"cannot bind the ZAP handler {ZAP_ENDPOINT}: {exc}") from exc

    def decide(self, domain: str, key: str) -> str | None:
        """The User-Id for `key` in `domain`, or None to refuse it."""
        if domain != PEER_DOMAIN:
            return key
        node = self._peer_keys().get(key)
        if node is None and self._on_unknown is not None:
            self._on_unknown()
            node = self._peer_keys().get(key)
        return node

    def handle(self) -> None:
        """Answer every ZAP request waiting (non-blocking)."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                raise ShuttingDownError(f"zap handler is shutting down: {exc}") from exc
            self.socket.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # Request: version, request id, domain, address, routing id, mechanism, credentials...
        if len(frames) < 6 or frames[0] != b"1.0":
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500",
                    b"malformed ZAP request", b"", b""]
        request_id, domain, address, mechanism = frames[1], frames[2], frames[3], frames[5]
        name = domain.decode("ascii", "replace")
        if mechanism != b"CURVE" or len(frames) != 7 or len(frames[6]) != 32:
            user = None
            key = ""
        else:
            key = z85.encode(frames[6]).decode("ascii")
            user = self.decide(name, key)
        if user is None:
            self.refused += 1
            self._refusals.warning(
                "refused",
                "peer refused: its public key is not in the allow-list domain=%s address=%s "
                "mechanism=%s key=%s refused=%d", name, address.decode("ascii", "replace"),
                mechanism.decode("ascii", "replace"), key or None, self.refused)
            return [b"1.0", request_id, b"400", b"key not allowed", b"", b""]
        self.accepted += 1
        return [b"1.0", request_id, b"200", b"OK", user.encode("utf-8"), b""]

    def close(self) -> None:
        self.socket.close(0)
