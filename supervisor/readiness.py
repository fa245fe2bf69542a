"""
Readiness: the READY frame a child sends its supervisor, and the one-line ready banner.

A child reports READY (plus a small dict of endpoint info) over its own pipe once it serves;
`supervisor.child.notify_ready` writes the frame, the supervisor decodes it here. When every
child has reported, the supervisor prints ONE line to stdout built by the owner with
`format_ready_line` (the node's contract, e.g.
`concord ready node=n1 client=tcp://127.0.0.1:7400 peer=tcp://127.0.0.1:7500 events=...`).

Never does IO itself (the callers own the pipe); imports nothing from `concord`.

READY frame, version 1 (one writer per pipe, child -> supervisor)::

    offset  size  field
    0       1     version   = 1
    1       1     type      = 1 (READY)
    2       4     length N  of the payload, unsigned big-endian
    6       N     payload   UTF-8 JSON object, keys str, values str | int | bool
                            (N <= MAX_PAYLOAD_BYTES, so a frame fits in one atomic
                            pipe write of at most PIPE_BUF = 4096 bytes)

A frame with another version or type, an oversized length or a payload that is not such an
object is a protocol error: the supervisor logs it and stops the child.

Ready line (stdout, one line, UTF-8)::

    <product> ready node=<node> <key>=<value> ...

keys match `[a-z][a-z0-9_]*`, values are non-empty and contain no whitespace; keys keep the
order given. `parse_ready_line` is its exact inverse.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

VERSION = 1
TYPE_READY = 1
_HEADER = struct.Struct(">BBI")
MAX_PAYLOAD_BYTES = 4096 - _HEADER.size

InfoValue = str | int | bool
"""A value in a child's READY info."""

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class ReadinessProtocolError(ValueError):
    """A READY frame or ready line that does not follow the format above."""


@dataclass(frozen=True, slots=True)
class ReadyMessage:
    """One decoded READY frame."""

    info: Mapping[str, InfoValue]


def encode_ready(info: Mapping[str, InfoValue]) -> bytes:
    """
    Encode a READY frame.

    Raises:
        ReadinessProtocolError: a key is not a str, a value not str/int/bool, or the
            payload is larger than MAX_PAYLOAD_BYTES.
    """
    for key, value in info.items():
        if not isinstance(key, str):
            raise ReadinessProtocolError(f"ready info key must be a str, got {key!r}")
        if not isinstance(value, (str, int, bool)):
            raise ReadinessProtocolError(
                f"ready info value for {key!r} must be str, int or bool, got {type(value).__name__}"
            )
    payload = json.dumps(dict(info), separators=(",", ":")).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ReadinessProtocolError(
            f"ready info is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
        )
    return _HEADER.pack(VERSION, TYPE_READY, len(payload)) + payload


class FrameDecoder:
    """
    Incremental decoder of the READY frames read from one pipe.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ReadyMessage]:
        """
        Add bytes read from the pipe; return every frame now complete.

        Raises:
            ReadinessProtocolError: on a bad version, type, length or payload (the
                buffer is dropped: the stream cannot be resynchronised).
        """
        self._buffer += data
        messages: list[ReadyMessage] = []
        while len(self._buffer) >= _HEADER.size:
            version, kind, length = _HEADER.unpack_from(self._buffer)
            if version != VERSION or kind != TYPE_READY or length > MAX_PAYLOAD_BYTES:
                self._buffer.clear()
                raise ReadinessProtocolError(
                    f"bad ready frame header version={version} type={kind} length={length}"
                )
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            messages.append(ReadyMessage(_decode_payload(payload)))
        return messages


def _decode_payload(payload: bytes) -> dict[str, InfoValue]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadinessProtocolError(f"ready payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ReadinessProtocolError(f"ready payload must be an object, got {type(value).__name__}")
    info: dict[str, InfoValue] = {}
    for key, item in value.items():
        if not isinstance(item, (str, int, bool)):
            raise ReadinessProtocolError(
                f"ready info value for {key!r} must be str, int or bool, got {type(item).__name__}"
            )
        info[key] = item
    return info


def format_ready_line(product: str, node: str, endpoints: Mapping[str, InfoValue]) -> str:
    """
    Build the one ready line, e.g. `concord ready node=n1 client=tcp://127.0.0.1:7400`.

    Args:
        product: first word (e.g. "concord").
        node: the node's id.
        endpoints: key -> endpoint, in the order they should appear.

    Raises:
        ReadinessProtocolError: a key does not match `[a-z][a-z0-9_]*`, is "node", or a
            value is empty or contains whitespace.
    """
    if not _KEY.match(product):
        raise ReadinessProtocolError(f"product must match {_KEY.pattern}, got {product!r}")
    parts = [product, "ready", f"node={_check_value('node', node)}"]
    for key, value in endpoints.items():
        if not _KEY.match(key) or key == "node":
            raise ReadinessProtocolError(f"ready line key must match {_KEY.pattern}, got {key!r}")
        parts.append(f"{key}={_check_value(key, value)}")
    return " ".join(parts)


def _check_value(key: str, value: InfoValue) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if not text or any(ch.isspace() for ch in text):
        raise ReadinessProtocolError(f"ready line value for {key} must be non-empty with no spaces")
    return text


def parse_ready_line(line: str) -> tuple[str, dict[str, str]]:
    """
    Parse a ready line back into (product, fields); fields include "node".

    Raises:
        ReadinessProtocolError: the line is not a ready line.
    """
    words = line.split()
    if len(words) < 3 or words[1] != "ready" or not words[2].startswith("node="):
        raise ReadinessProtocolError(f"not a ready line: {line!r}")
    fields: dict[str, str] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if not sep or not _KEY.match(key) or not value or key in fields:
            raise ReadinessProtocolError(f"bad field {word!r} in ready line {line!r}")
        fields[key] = value
    return words[0], fields
