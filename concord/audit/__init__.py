"""
The audit log (docs/observability-audit.md): one JSON-lines log per node of every write
and admin op (and reads when `[audit] log_reads`), written by the node's front door, with
keys as HMACs, a hash chain over the lines, rotation, retention and an fsync policy.

    record.py    what one line holds: fields, key HMACs, the token id, the hash chain
    log.py       the writer (the front door's): buffering, fsync, rotation, retention
    reader.py    reading a log folder back: verify the chain, query, export

Imports nothing of the node: `concord audit ...` (concord/cli/audit.py) reads a log
offline with reader.py alone.
"""
