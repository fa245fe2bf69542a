"""
One audit line: its fields, the key HMAC, the token id and the hash chain (format v1).

Pure: no IO, no clock (the caller passes the time).

Layout (format version 1). A line is one JSON object, UTF-8, no newline inside, ending
with "\n". Every line has:

    v          1 (FORMAT_VERSION)
    seq        event number in this node's log: 1, 2, 3, ... with no gap, across files
    event_id   "<node>:<seq>"
    time       UTC, RFC 3339 with microseconds: "2026-12-07T07:10:00.123456Z"
    node       the node's id
    op         the wire op, or "audit_open" / "audit_retention" (the log's own events)
    prev       `hash` of the line before (across rotated files), "" before the first
    hash       HMAC-SHA256 hex, keyed with the chain key, of (prev + "\n" + the line's
               object without `hash`, serialized as JSON in the order its keys appear
               in the line, separators "," and ":", non-ASCII kept); `hash` is the
               last key of the line

Keys derived from the cluster secret S (domain separation, so neither use leaks the
other): key HMACs use HMAC-SHA256(S, "concord-audit-key-v1"), the chain uses
HMAC-SHA256(S, "concord-audit-chain-v1"). A keyed chain means whoever can edit the files
but does not hold S cannot recompute the hashes after an edit.

and a request line (op from the wire table) also has:

    key        the key in clear if it is under an `[audit] loggable_prefixes` prefix, else nil
    key_hmac   HMAC-SHA256(cluster secret, key UTF-8) hex, first 32 chars; nil: no key
    keys, keys_hmac   the same as lists, for bulk ops (put_many, delete_many, get_many,
               touch_many); absent for other ops
    result     "ok", or the reply's error code (not_leader, timeout, ...)
    revision   the reply's revision (int) or nil
    token_id   the public id of the request's token (identity.token_id), or nil; never
               the secret
    tenant     the request's `ns`, or nil
    client     the client's IP address as the front door saw it, or nil
    trace_id   the W3C trace id (32 hex) of the request's traceparent, or nil

Values, the token secret and any other argument are never written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence

from concord.audit.identity import token_id

FORMAT_VERSION = 1

#: The log's own events (not wire ops).
OPEN = "audit_open"
RETENTION = "audit_retention"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32


def canonical(obj: Mapping[str, object]) -> str:
    """
    The serialization the chain hashes (and the line is written in): key order as
    given (json.loads keeps a line's order, so a reader re-serializes it the same).
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def seal(keys: AuditKeys, obj: dict[str, object], prev: str) -> tuple[str, str]:
    """
    Set `prev` on `obj`, compute its `hash`, and return (line without "\\n", hash).
    """
    obj["prev"] = prev
    body = canonical(obj)
    digest = keys.chain_hash(prev, body)
    return f'{body[:-1]},"hash":"{digest}"}}', digest


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent ("00-<trace id>-<span id>-<flags>"), else None."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.match(traceparent)
    if match is None or match.group(1) == _ZERO_TRACE:
        return None
    return match.group(1)


class AuditKeys:
    """
    The two keys derived from the cluster secret (module docstring), and the loggable
    prefixes. Keys go into the log as an HMAC always (so `audit query --key` finds a
    line whatever the prefixes were), and in clear only under a loggable prefix.
    """

    def __init__(self, secret: bytes, loggable_prefixes: Sequence[str] = ()) -> None:
        if not secret:
            raise ValueError("the audit secret is empty")
        self._key_key = hmac.new(secret, b"concord-audit-key-v1", hashlib.sha256).digest()
        self._chain_key = hmac.new(secret, b"concord-audit-chain-v1", hashlib.sha256).digest()
        self._prefixes = tuple(loggable_prefixes)

    def hmac(self, key: str) -> str:
        """The key's HMAC as logged (32 hex characters)."""
        return hmac.digest(self._key_key, key.encode("utf-8", "surrogatepass"), "sha256")[:16].hex()

    def chain_hash(self, prev: str, body: str) -> str:
        """`hash` of a line whose object without `hash` serializes to `body`."""
        return hmac.digest(self._chain_key, f"{prev}\n{body}".encode("utf-8", "surrogatepass"),
                           "sha256").hex()

    def clear(self, key: str) -> str | None:
        """The key if it may be logged in clear, else None."""
        return key if self._prefixes and key.startswith(self._prefixes) else None


def _bulk_keys(args: Mapping[str, object]) -> list[str] | None:
    keys = args.get("keys")
    if isinstance(keys, list):
        return [k for k in keys if isinstance(k, str)]
    items = args.get("items")
    if isinstance(items, list):
        return [i[0] for i in items if isinstance(i, list) and i and isinstance(i[0], str)]
    return None


def request_fields(
    hasher: AuditKeys,
    op: str,
    args: Mapping[str, object],
    token: str | None,
    ns: str | None,
    traceparent: str | None,
) -> dict[str, object]:
    """The request's part of a line (everything known before the reply)."""
    key = args.get("key")
    fields: dict[str, object] = {
        "op": op,
        "key": None,
        "key_hmac": None,
        "token_id": token_id(token),
        "tenant": ns,
        "trace_id": trace_id_of(traceparent),
    }
    if isinstance(key, str):
        fields["key"] = hasher.clear(key)
        fields["key_hmac"] = hasher.hmac(key)
    bulk = _bulk_keys(args)
    if bulk is not None:
        fields["keys"] = [hasher.clear(k) for k in bulk]
        fields["keys_hmac"] = [hasher.hmac(k) for k in bulk]
    return fields


def reply_fields(reply: Mapping[object, object]) -> tuple[str, int | None]:
    """(result, revision) of a decoded reply map."""
    if reply.get("ok") is True:
        result = "ok"
    else:
        error = reply.get("error")
        result = error if isinstance(error, str) else "invalid_reply"
    revision = reply.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool):
        revision = None
    return result, revision


def read_secret(path: str) -> bytes:
    """
    The cluster secret from its file (surrounding whitespace stripped).

    Raises:
        ValueError: the file is empty.
        OSError: it cannot be read.
    """
    with open(path, "rb") as handle:
        secret = handle.read().strip()
    if not secret:
        raise ValueError(f"audit secret file {path} is empty")
    return secret
