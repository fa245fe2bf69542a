"""
The deterministic key-value state machine of Concord.

Pure: no IO, no clock, no randomness. `KvStateMachine.apply(index, timestamp_ms, data)`
applies a command built by `encode_command` / `encode_request` on the leader; reads are
evaluated at a caller-given cluster time. The query engine (`concord.kv.query`) works
over any `KeySource`, so the shared-memory store serves queries with the same code.

Modules: commands (command format, encode/decode), machine (apply, snapshot, state
hash), reads (read ops over a KeySource), query (selection and filters), index
(secondary indexes), sessions (exactly-once), values (encoding, paths, comparison),
config (KvConfig), record (frozen: KeyRecord, Change). Formats: docs/formats/kv.md.
"""

from __future__ import annotations

from concord.kv.commands import (
    CLIENT_WRITE_OPS,
    WRITE_OPS,
    decode_command,
    encode_command,
    encode_request,
    expire_command,
)
from concord.kv.config import DEFAULT_CONFIG, KvConfig
from concord.kv.index import IndexDef, IndexSet
from concord.kv.machine import Applied, KvStateMachine
from concord.kv.query import KeySource, QuerySpec, parse_query
from concord.kv.reads import READ_OPS, serve_read, serve_request
from concord.kv.record import Change, ChangeType, KeyRecord, RecordFlags, Space
from concord.kv.values import decode_stored, record_value

__all__ = [
    "Applied",
    "CLIENT_WRITE_OPS",
    "Change",
    "ChangeType",
    "DEFAULT_CONFIG",
    "IndexDef",
    "IndexSet",
    "KeyRecord",
    "KeySource",
    "KvConfig",
    "KvStateMachine",
    "QuerySpec",
    "READ_OPS",
    "RecordFlags",
    "Space",
    "WRITE_OPS",
    "decode_command",
    "decode_stored",
    "encode_command",
    "encode_request",
    "expire_command",
    "parse_query",
    "record_value",
    "serve_read",
    "serve_request",
]
