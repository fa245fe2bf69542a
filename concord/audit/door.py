"""
The audit log's front-door observer (concord.net.observer.DoorObserver): notes every
audited request when it arrives and writes its line when the client's reply is known.

Why the front door writes the log (docs/observability-audit.md): it is the one process
of a node that sees every request it received with the client's address, whatever
backend serves it, and the reply each client got (the result and revision come back in
it; a timeout or a refusal at the door included). The raft worker sees no addresses and
no read-worker traffic; the state machine sees neither, and runs on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from concord.audit.log import AuditLog, AuditOptions
from concord.audit.record import AuditKeys, read_secret, reply_fields, request_fields
from concord.config import NodeConfig
from concord.errors import ConfigError
from concord.net.wire import OPS, OpKind, OpSpec, Request

__all__ = ["DoorAudit", "audited_ops", "door_audit_of"]


def audited_ops(log_reads: bool, registry: Mapping[str, OpSpec] = OPS) -> frozenset[str]:
    """The ops that get a line: writes and admin ops, and reads when `log_reads`."""
    kinds = {OpKind.WRITE, OpKind.ADMIN} | ({OpKind.READ} if log_reads else set())
    return frozenset(name for name, spec in registry.items() if spec.kind in kinds)


@dataclass(slots=True)
class _Note:
    fields: dict[str, object]


class DoorAudit:
    """Writes one line per audited request, once its reply is known."""

    def __init__(self, log: AuditLog, keys: AuditKeys, log_reads: bool = False) -> None:
        self.log = log
        self.keys = keys
        self.ops = audited_ops(log_reads)
        self.hold_replies = log.options.fsync == "always"

    def begin(self, request: Request, payload: bytes, peer: Callable[[], str | None]
              ) -> tuple[object | None, Request, bytes]:
        if request.op not in self.ops:
            return None, request, payload
        fields = request_fields(self.keys, request.op, request.args, request.token, request.ns,
                                request.traceparent)
        fields["client"] = peer()
        return _Note(fields), request, payload

    def end(self, note: object, reply: Mapping[object, object]) -> None:
        assert isinstance(note, _Note)
        result, revision = reply_fields(reply)
        note.fields["result"] = result
        note.fields["revision"] = revision
        self.log.append(note.fields)

    def flush(self) -> None:
        if self.hold_replies:
            self.log.flush(sync=True)
        else:
            self.log.tick()

    def close(self) -> None:
        self.log.close()


def door_audit_of(config: NodeConfig) -> DoorAudit | None:
    """
    The front door's audit observer per `[audit]`, or None when it is off.

    Raises:
        ConfigError: the secret file cannot be read or is empty, or the folder cannot
            be created (naming the key).
    """
    section = config.audit
    if not section.enabled:
        return None
    try:
        keys = AuditKeys(read_secret(section.secret_file), section.loggable_prefixes)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"audit.secret_file: cannot read {section.secret_file}: {exc}") from exc
    options = AuditOptions(
        folder=Path(section.dir), node=config.node.id, max_file_bytes=section.max_file_bytes,
        retention_days=section.retention_days, fsync=section.fsync,
        fsync_interval_ms=section.fsync_interval_ms,
    )
    try:
        log = AuditLog(options, keys)
    except OSError as exc:
        raise ConfigError(f"audit.dir: cannot write the audit log in {section.dir}: {exc}") from exc
    return DoorAudit(log, keys, section.log_reads)
